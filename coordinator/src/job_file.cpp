#include "fedda/coordinator/job_file.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <type_traits>
#include "fedda/common/config.h"
#include "fedda/common/kit.h"
#include "fedda/common/secagg.h"
#include "fedda/models_core/model_spec.h"
#include "fedda/models_core/recipe.h"

namespace fedda::coordinator {
namespace fs = std::filesystem;

namespace {

bool safe_job_id(const std::string& id) {
  return !id.empty() && id.size() <= 128 && id.front() != '.' &&
         std::all_of(id.begin(), id.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'; });
}

// dp: {clip_norm, noise_multiplier | target_epsilon, delta, slices_per_subject}.
Status validate_dp(const protocol::JobSpec& j) {
  const auto& dp = j.dp;
  if (!dp.enabled()) {
    if (dp.noise_multiplier != 0 || dp.target_epsilon != 0) {
      return make_error("dp: clip_norm is needed (a positive L2 norm each patient's gradient is clipped to)");
    }
    return Status::success();
  }
  if (!std::isfinite(dp.clip_norm)) return make_error("dp: clip_norm must be a positive number");
  if (j.type == protocol::JobType::evaluate) {
    return make_error("dp: applies to the jobs that train (teacher, kd, ada); an evaluate job sends only scores");
  }
  const bool noise = dp.noise_multiplier != 0, target = dp.target_epsilon != 0;
  if (noise == target) return make_error("dp: give noise_multiplier or target_epsilon (one of them)");
  if (noise && !(dp.noise_multiplier > 0 && std::isfinite(dp.noise_multiplier))) {
    return make_error("dp: noise_multiplier must be a positive number");
  }
  if (target && !(dp.target_epsilon > 0 && std::isfinite(dp.target_epsilon))) {
    return make_error("dp: target_epsilon must be a positive number");
  }
  if (!(dp.delta > 0 && dp.delta < 1)) return make_error("dp: delta must be above 0 and below 1 (1e-5 by default)");
  if (dp.slices_per_subject < 1 || dp.slices_per_subject > j.batch_size) {
    return make_error("dp: slices_per_subject must be between 1 and batch_size (" + std::to_string(j.batch_size) + ")");
  }
  if (j.steps_by_share) return make_error("dp: steps_by_share is not supported (each site's planned steps must be fixed)");
  return Status::success();
}

Status validate_job(protocol::JobSpec& j, const std::string& teacher) {
  using protocol::JobType;
  const std::string type = protocol::job_type_name(j.type);
  if (!safe_job_id(j.id)) return make_error("id must be 1-128 letters, digits, '-', '_' or '.'");
  if (j.sites.empty()) return make_error("sites: at least one site is needed");
  for (const auto& s : j.sites) {
    if (!kit::safe_id(s)) return make_error("sites: '" + s + "' is not a valid site id");
  }
  for (const auto& s : j.evaluation_sites) {
    if (!kit::safe_id(s)) return make_error("evaluation_sites: '" + s + "' is not a valid site id");
  }
  if ((j.type == JobType::ada || j.type == JobType::teacher) && j.source.empty()) {
    return make_error("source: needed for " + type + " jobs");
  }
  if (!j.source.empty() && std::find(j.sites.begin(), j.sites.end(), j.source) == j.sites.end() && j.type != JobType::evaluate) {
    return make_error("source '" + j.source + "' is not among the sites");
  }
  if (j.type != JobType::teacher && teacher.empty()) return make_error("teacher: a model file or job:<id> is needed for " + type + " jobs");
  if (j.fold != 0 && j.fold != 1) return make_error("fold must be 0 or 1");
  if (j.rounds < 1 || j.rounds > 100000) return make_error("rounds must be at least 1");
  if (j.local_steps < 1) return make_error("local_steps must be at least 1");
  if (j.batch_size < 1) return make_error("batch_size must be at least 1");
  if (!(j.learning_rate > 0)) return make_error("learning_rate must be positive");
  if (!(j.temperature > 0)) return make_error("temperature must be positive");
  if (j.min_sites < 1) return make_error("min_sites must be at least 1");
  if (j.type != JobType::evaluate && j.min_sites > static_cast<int>(j.sites.size())) {
    return make_error("min_sites (" + std::to_string(j.min_sites) + ") exceeds the number of sites (" +
                      std::to_string(j.sites.size()) + ")");
  }
  if (!(j.round_deadline_s > 0)) return make_error("round_deadline_s must be positive");
  if (j.sites_per_round < 0) return make_error("sites_per_round must be 0 (every ready site) or more");
  if (j.sites_per_round > 0 && j.sites_per_round < j.min_sites) {
    return make_error("sites_per_round (" + std::to_string(j.sites_per_round) + ") is below min_sites (" +
                      std::to_string(j.min_sites) + ")");
  }
  if (!(j.fraction >= 0 && j.fraction <= 1)) return make_error("fraction must be between 0 (off) and 1");
  if (j.fraction > 0 && j.sites_per_round > 0) return make_error("give sites_per_round or fraction, not both");
  if (!(j.max_update_norm >= 0) || !std::isfinite(j.max_update_norm)) {
    return make_error("max_update_norm must be 0 (no bound) or a positive number");
  }
  if (!(j.max_sample_share >= 0 && j.max_sample_share <= 1)) {
    return make_error("max_sample_share must be 0 (no bound) or a share of the round's samples above 0 and at most 1");
  }
  if (!(j.temperature <= 100)) return make_error("temperature must be at most 100");
  if (!(j.kd_hard_weight >= 0)) return make_error("kd_hard_weight must not be negative");
  if (!(j.kd_confidence >= 0.5 && j.kd_confidence <= 1)) return make_error("kd_confidence must be between 0.5 and 1");
  if (!(j.server_lr > 0)) return make_error("server_lr must be positive");
  if (j.evaluate_every < 0) return make_error("evaluate_every must be 0 (only at the end) or more");
  if (!(j.lesion_slice_fraction >= 0 && j.lesion_slice_fraction <= 1)) return make_error("lesion_slice_fraction must be between 0 and 1");
  if (j.secagg_threshold < 0) return make_error("secagg_threshold must be 0 (a majority of each neighbourhood) or more");
  if (!(j.secagg_timeout_s > 0 && j.secagg_timeout_s <= 86400)) return make_error("secagg_timeout_s must be positive and at most 86400 (a day)");
  if (j.secure_aggregation) {
    if (j.type == JobType::evaluate) return make_error("secure_aggregation applies to training jobs, not evaluate");
    // The sum of one site's update is that update; two sites each learn the other's from the average.
    if (j.min_sites < 2) return make_error("secure_aggregation needs min_sites of at least 2 (a round of one site would reveal its update)");
    if (j.max_update_norm > 0) {
      return make_error("max_update_norm cannot be checked under secure_aggregation: the coordinator never sees one site's update");
    }
    // Rounds open with at least minimum_sum sites whatever min_sites says (job_run.h).
    if (const int least = secagg::minimum_sum(j.sites.size()); j.sites_per_round > 0 && j.sites_per_round < least) {
      return make_error("sites_per_round (" + std::to_string(j.sites_per_round) + ") under secure_aggregation: a job of " +
                        std::to_string(j.sites.size()) + " sites opens sums of at least " + std::to_string(least) +
                        " (a sum of two shows each of them the other's update)");
    }
  }
  if (auto st = validate_dp(j); !st) return st;
  if (j.evaluation_sites.empty()) {
    for (const auto& s : j.sites) {
      if (s != j.source) j.evaluation_sites.push_back(s);
    }
  }
  return Status::success();
}

}  // namespace

namespace {

Result<JobDefinition> read_mapping(config::Mapping& mapping, const fs::path& path) {
  auto* m = &mapping;
  const auto fail = [&](const std::string& message) { return make_error(path.string() + ": " + message); };
  JobDefinition d;
  d.file = path;
  auto& j = d.spec;
  std::string type;
  std::optional<Error> setting_fault;  // the first setting with an unknown name
  protocol::for_each_job_setting(j, [&](const protocol::JobSetting& s, auto& field) {
    using T = std::decay_t<decltype(field)>;
    if (!s.in_job_file) return;
    if constexpr (std::is_same_v<T, protocol::DpSpec>) {
      auto dp = m->mapping(s.name);
      protocol::for_each_dp_setting(field, [&](const protocol::JobSetting& d, auto& value) { dp.get(d.name, value); });
    } else if constexpr (std::is_same_v<T, protocol::JobType>) {
      m->get(s.name, type);  // required: parsed below, once every key has been read
    } else if constexpr (protocol::is_setting_v<T>) {
      std::string name;
      m->get(s.name, name);
      if (name.empty()) return;
      auto parsed = protocol::parse_setting<T>(name, s.name);
      if (parsed) field = *parsed;
      else if (!setting_fault) setting_fault = parsed.error();
    } else {
      m->get(s.name, field);
    }
  });
  m->get("method", d.method);
  m->get("teacher", d.teacher);
  models::ModelSpec model;
  std::size_t grid_size = model.grid.in_plane_size[0];
  double grid_spacing = model.grid.in_plane_spacing[0];
  auto architecture = m->mapping("model");
  architecture.get("width", model.unet.width);
  architecture.get("depth", model.unet.depth);
  architecture.get("norm", model.unet.norm);
  architecture.get("upsample", model.unet.upsample);
  architecture.get("grid_size", grid_size);
  architecture.get("grid_spacing", grid_spacing);
  model.grid.in_plane_size = {grid_size, grid_size};
  model.grid.in_plane_spacing = {grid_spacing, grid_spacing};
  // recipe: {preset: nnunet, patch_size: 64, ...}: a preset and any of models::recipe_keys().
  auto recipe_settings = m->mapping("recipe");
  std::string preset;
  recipe_settings.get("preset", preset);
  auto recipe = models::recipe_preset(preset.empty() ? "classic" : preset);
  if (!recipe) return fail("recipe: " + recipe.error().message);
  recipe_settings.get("optimizer", recipe->optimizer);
  recipe_settings.get("schedule", recipe->schedule);
  for (const auto& key : models::recipe_keys()) recipe_settings.get(key.name, (*recipe).*key.field);
  if (auto st = m->finish(); !st) return st.error();
  if (setting_fault) return fail(setting_fault->message);
  if (auto st = models::validate(*recipe); !st) return fail("recipe: " + st.error().message);
  if (auto st = models::validate_federated(*recipe); !st) return fail("recipe: " + st.error().message);
  // The classic recipe travels as nothing, so that such a job is what it was before recipes.
  if (models::to_json(*recipe) != models::to_json(models::Recipe{})) j.recipe = models::to_json(*recipe);
  if (type.empty()) return fail("type is required (teacher, kd, ada or evaluate)");
  auto parsed = protocol::parse_job_type(type);
  if (!parsed) return fail(parsed.error().message);
  j.type = *parsed;
  if (auto st = validate_job(j, d.teacher); !st) return fail(st.error().message);
  if (j.type == protocol::JobType::teacher) {
    model.role = "teacher";
    if (auto st = models::validate(model); !st) return fail("model: " + st.error().message);
    if (auto st = models::validate(*recipe, static_cast<int>(grid_size), model.unet.depth); !st) {
      return fail("recipe: " + st.error().message);
    }
    j.model_spec_json = models::to_json(model);
  }
  if (d.method.empty()) d.method = j.type == protocol::JobType::teacher ? "lbound" : type;
  if (!d.method.empty() && d.method.find_first_of(",\"\r\n") != std::string::npos) {
    return fail("method '" + d.method + "' may not hold commas, quotes or line breaks");
  }
  return d;
}

}  // namespace

Result<JobDefinition> read_job_file(const fs::path& path) {
  auto m = config::Mapping::load(path);
  if (!m) return m.error();
  auto d = read_mapping(*m, path);
  if (!d) return d;
  // A relative model path is relative to the job file.
  if (!d->teacher.empty() && d->teacher.rfind("job:", 0) != 0 && fs::path(d->teacher).is_relative()) {
    d->teacher = (path.parent_path() / d->teacher).lexically_normal().string();
  }
  return d;
}

Result<JobDefinition> parse_job_file(const std::string& text, const std::string& name) {
  auto m = config::Mapping::parse(text, name);
  if (!m) return m.error();
  return read_mapping(*m, name);
}

}  // namespace fedda::coordinator
