#include "fedda/models_core/recipe.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fedda/common/text.h"

namespace fedda::models {
namespace {

using json = nlohmann::json;

struct ChoiceKey {
  const char* name;
  std::string Recipe::*field;
  std::vector<std::string> allowed;
};

const std::vector<ChoiceKey>& choice_keys() {
  static const std::vector<ChoiceKey> keys{
      {"optimizer", &Recipe::optimizer, {"adam", "sgd"}},
      {"schedule", &Recipe::schedule, {"step", "poly"}},
  };
  return keys;
}

std::string joined(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : ", ") + w;
  return out;
}

using text::number;

// Pairs whose first must not exceed the second.
struct RangePair {
  double Recipe::*low;
  double Recipe::*high;
  const char* low_name;
  const char* high_name;
};
const std::vector<RangePair>& range_pairs() {
  static const std::vector<RangePair> pairs{
      {&Recipe::scale_min, &Recipe::scale_max, "scale_min", "scale_max"},
      {&Recipe::blur_sigma_min, &Recipe::blur_sigma_max, "blur_sigma_min", "blur_sigma_max"},
      {&Recipe::brightness_min, &Recipe::brightness_max, "brightness_min", "brightness_max"},
      {&Recipe::contrast_min, &Recipe::contrast_max, "contrast_min", "contrast_max"},
      {&Recipe::low_resolution_min, &Recipe::low_resolution_max, "low_resolution_min", "low_resolution_max"},
      {&Recipe::gamma_min, &Recipe::gamma_max, "gamma_min", "gamma_max"},
  };
  return pairs;
}

Recipe nnunet() {
  Recipe r;
  r.preset = "nnunet";
  r.optimizer = "sgd";
  r.schedule = "poly";
  r.foreground_fraction = 0.33;
  r.mirror_probability = 0.5;
  r.rotation_probability = 0.2;
  r.scale_probability = 0.2;
  r.jitter_sd = 0;
  r.noise_probability = 0.1;
  r.blur_probability = 0.2;
  r.brightness_probability = 0.15;
  r.contrast_probability = 0.15;
  r.low_resolution_probability = 0.25;
  r.gamma_probability = 0.3;
  r.gamma_invert_probability = 0.1;
  // nnU-Net blurs and down-samples each channel with probability 0.5; here every intensity
  // transform picks its channels so (README "Training recipe": as measured).
  r.channel_probability = 0.5;
  return r;
}

Recipe heavy() {
  Recipe r = nnunet();
  r.preset = "heavy";
  r.elastic_probability = 0.2;
  r.noise_probability = 0.3;
  r.noise_variance = 0.15;
  r.blur_probability = 0.3;
  r.blur_sigma_max = 1.5;
  r.brightness_probability = 0.5;
  r.brightness_min = 0.6;
  r.brightness_max = 1.5;
  r.contrast_probability = 0.5;
  r.contrast_min = 0.6;
  r.contrast_max = 1.6;
  r.low_resolution_probability = 0.4;
  r.low_resolution_min = 0.4;
  r.gamma_probability = 0.5;
  r.gamma_min = 0.5;
  r.gamma_max = 2.0;
  r.gamma_invert_probability = 0.15;
  r.bias_field_probability = 0.5;
  r.bias_field_strength = 0.4;
  r.channel_probability = 0.75;  // channels shift independently, as two sequences of one scanner do
  return r;
}

}  // namespace

bool Recipe::augments() const {
  for (double p : {mirror_probability, rotation_probability, scale_probability, elastic_probability, noise_probability,
                   blur_probability, brightness_probability, contrast_probability, low_resolution_probability,
                   gamma_probability, gamma_invert_probability, bias_field_probability, jitter_sd}) {
    if (p > 0) return true;
  }
  return false;
}

Recipe without_augmentation(Recipe r) {
  for (double* p : {&r.mirror_probability, &r.rotation_probability, &r.scale_probability, &r.elastic_probability,
                    &r.noise_probability, &r.blur_probability, &r.brightness_probability, &r.contrast_probability,
                    &r.low_resolution_probability, &r.gamma_probability, &r.gamma_invert_probability,
                    &r.bias_field_probability, &r.jitter_sd}) {
    *p = 0;
  }
  return r;
}

Recipe with_augmentation_of(Recipe r, const Recipe& augmentation) {
  for (const auto& k : recipe_keys()) {
    if (k.augmentation) r.*k.field = augmentation.*k.field;
  }
  return r;
}

const std::vector<RecipeKey>& recipe_keys() {
  static const std::vector<RecipeKey> keys{
      {"momentum", &Recipe::momentum, 0, 0.999, "sgd: Nesterov momentum", false},
      {"weight_decay", &Recipe::weight_decay, 0, 0.1, "sgd: L2 weight decay", false},
      {"gradient_clip", &Recipe::gradient_clip, 0, 1e6, "sgd: clip the gradients' global L2 norm (0: off)", false},
      {"poly_exponent", &Recipe::poly_exponent, 0.1, 10, "poly: lr = lr0 (1 - epoch / epochs)^exponent", false},
      {"patch_size", &Recipe::patch_size, 0, 1024, "train on patch_size^2 windows (0: whole slices)", false},
      {"foreground_fraction", &Recipe::foreground_fraction, 0, 1, "share of patches centred on a lesion voxel", false},
      {"prefetch", &Recipe::prefetch, 0, 16, "batches prepared ahead on a background thread (0: none)", false},
      {"weight_average", &Recipe::weight_average, 0, 0.9999,
       "save the weights' moving average of this decay per step (0: as trained; centralized only)", false},
      {"mirror_probability", &Recipe::mirror_probability, 0, 1, "left-right mirroring", true},
      {"rotation_probability", &Recipe::rotation_probability, 0, 1, "in-plane rotation", true},
      {"rotation_degrees", &Recipe::rotation_degrees, 0, 180, "rotation angle drawn from [-r, r] degrees", true},
      {"scale_probability", &Recipe::scale_probability, 0, 1, "zoom", true},
      {"scale_min", &Recipe::scale_min, 0.25, 4, "smallest zoom (> 1 zooms in)", true},
      {"scale_max", &Recipe::scale_max, 0.25, 4, "largest zoom", true},
      {"elastic_probability", &Recipe::elastic_probability, 0, 1, "smooth elastic warp", true},
      {"elastic_magnitude", &Recipe::elastic_magnitude, 0, 0.2, "elastic displacement, fraction of the slice", true},
      {"jitter_sd", &Recipe::jitter_sd, 0, 1, "classic: per-channel intensity scale and shift SD, every slice", true},
      {"noise_probability", &Recipe::noise_probability, 0, 1, "additive Gaussian noise", true},
      {"noise_variance", &Recipe::noise_variance, 0, 1, "noise variance drawn from [0, v]", true},
      {"blur_probability", &Recipe::blur_probability, 0, 1, "Gaussian blur", true},
      {"blur_sigma_min", &Recipe::blur_sigma_min, 0.1, 5, "smallest blur sigma (pixels)", true},
      {"blur_sigma_max", &Recipe::blur_sigma_max, 0.1, 5, "largest blur sigma (pixels)", true},
      {"brightness_probability", &Recipe::brightness_probability, 0, 1, "multiplicative brightness", true},
      {"brightness_min", &Recipe::brightness_min, 0.1, 10, "smallest brightness factor", true},
      {"brightness_max", &Recipe::brightness_max, 0.1, 10, "largest brightness factor", true},
      {"contrast_probability", &Recipe::contrast_probability, 0, 1, "contrast around the mean", true},
      {"contrast_min", &Recipe::contrast_min, 0.1, 10, "smallest contrast factor", true},
      {"contrast_max", &Recipe::contrast_max, 0.1, 10, "largest contrast factor", true},
      {"low_resolution_probability", &Recipe::low_resolution_probability, 0, 1, "simulated low resolution", true},
      {"low_resolution_min", &Recipe::low_resolution_min, 0.1, 1, "smallest down-sampling factor", true},
      {"low_resolution_max", &Recipe::low_resolution_max, 0.1, 1, "largest down-sampling factor", true},
      {"gamma_probability", &Recipe::gamma_probability, 0, 1, "gamma curve (statistics kept)", true},
      {"gamma_min", &Recipe::gamma_min, 0.1, 10, "smallest gamma", true},
      {"gamma_max", &Recipe::gamma_max, 0.1, 10, "largest gamma", true},
      {"gamma_invert_probability", &Recipe::gamma_invert_probability, 0, 1, "gamma of the inverted image", true},
      {"bias_field_probability", &Recipe::bias_field_probability, 0, 1, "smooth multiplicative bias field", true},
      {"bias_field_strength", &Recipe::bias_field_strength, 0, 2, "the bias field's log-amplitude", true},
      {"channel_probability", &Recipe::channel_probability, 0, 1, "each channel's chance in an intensity transform", true},
  };
  return keys;
}

const std::vector<std::string>& recipe_presets() {
  static const std::vector<std::string> names{"classic", "nnunet", "heavy"};
  return names;
}

Result<Recipe> recipe_preset(const std::string& name) {
  if (name == "classic") return Recipe{};
  if (name == "nnunet") return nnunet();
  if (name == "heavy") return heavy();
  return make_error("unknown recipe preset '" + name + "' (choose " + joined(recipe_presets()) + ")");
}

Status validate_federated(const Recipe& r) {
  if (r.weight_average > 0) {
    return make_error("weight_average: averaging the weights over the steps is for centralized training "
                      "(fedda-sim centralized, the grid's centralized cells); a federated job's model is "
                      "already the sites' average every round");
  }
  return Status::success();
}

Status validate(const Recipe& r, int grid, int depth) {
  for (const auto& k : recipe_keys()) {
    const double v = r.*k.field;
    if (!std::isfinite(v) || v < k.min || v > k.max) {
      return make_error(std::string(k.name) + " is " + number(v) + ", outside [" + number(k.min) + ", " +
                        number(k.max) + "]");
    }
  }
  for (const auto& c : choice_keys()) {
    if (std::find(c.allowed.begin(), c.allowed.end(), r.*c.field) == c.allowed.end()) {
      return make_error(std::string(c.name) + " is '" + r.*c.field + "' (choose " + joined(c.allowed) + ")");
    }
  }
  for (const auto& p : range_pairs()) {
    if (r.*p.low > r.*p.high) {
      return make_error(std::string(p.low_name) + " (" + number(r.*p.low) + ") is above " + p.high_name + " (" +
                        number(r.*p.high) + ")");
    }
  }
  if (r.patch_size != std::floor(r.patch_size) || r.prefetch != std::floor(r.prefetch)) {
    return make_error("patch_size and prefetch must be whole numbers");
  }
  if (r.patch_size > 0 && grid > 0) {
    if (r.patch_size > grid) {
      return make_error("patch_size " + number(r.patch_size) + " is larger than the model grid (" +
                        std::to_string(grid) + ")");
    }
    const int stride = 1 << std::max(0, depth);
    if (r.patch_size < 16) {  // the discriminator's four stride-2 4 x 4 convolutions need 16 pixels
      return make_error("patch_size " + number(r.patch_size) + " is below 16 (0 trains on whole slices)");
    }
    if (static_cast<int>(r.patch_size) % stride != 0) {
      return make_error("patch_size " + number(r.patch_size) + " is not a multiple of the U-Net's stride " +
                        std::to_string(stride) + " (2^depth)");
    }
  }
  return Status::success();
}

std::string to_json(const Recipe& r) {
  json o = {{"preset", r.preset}};
  for (const auto& c : choice_keys()) o[c.name] = r.*c.field;
  for (const auto& k : recipe_keys()) o[k.name] = r.*k.field;
  return o.dump();
}

namespace {

Status apply(Recipe& r, const std::string& key, const json& value) {
  for (const auto& k : recipe_keys()) {
    if (key != k.name) continue;
    if (!value.is_number()) return make_error(key + ": must be a number");
    r.*k.field = value.get<double>();
    return Status::success();
  }
  for (const auto& c : choice_keys()) {
    if (key != c.name) continue;
    if (!value.is_string()) return make_error(key + ": must be one of " + joined(c.allowed));
    r.*c.field = value.get<std::string>();
    return Status::success();
  }
  return make_error("unknown recipe key '" + key + "'");
}

}  // namespace

Result<Recipe> recipe_from_json(const std::string& text) {
  json o;
  try {
    o = json::parse(text);
  } catch (const std::exception& e) {
    return make_error(std::string("recipe is not JSON: ") + e.what());
  }
  if (o.is_string()) return recipe_preset(o.get<std::string>());
  if (!o.is_object()) return make_error("recipe must be a preset's name or an object of settings");
  Recipe r;
  if (o.contains("preset")) {
    if (!o["preset"].is_string()) return make_error("preset: must be one of " + joined(recipe_presets()));
    auto base = recipe_preset(o["preset"].get<std::string>());
    if (!base) return base.error();
    r = *base;
  }
  for (const auto& [key, value] : o.items()) {
    if (key == "preset") continue;
    if (auto st = apply(r, key, value); !st) return st.error();
  }
  if (auto st = validate(r); !st) return st.error();
  return r;
}

Status set_recipe_value(Recipe& r, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos) return make_error("'" + assignment + "' is not key=value");
  const std::string key = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  if (key == "preset") {
    auto base = recipe_preset(value);
    if (!base) return base.error();
    r = *base;
    return Status::success();
  }
  json parsed;
  try {
    std::size_t used = 0;
    parsed = std::stod(value, &used);
    if (used != value.size()) parsed = value;
  } catch (const std::exception&) {
    parsed = value;
  }
  return apply(r, key, parsed);
}

}  // namespace fedda::models
