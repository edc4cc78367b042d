#include "fedda/coordinator/job_file.h"

#include <algorithm>
#include <set>

#include <yaml-cpp/yaml.h>

#include "fedda/models/model_spec.h"

namespace fedda::coordinator {
namespace fs = std::filesystem;

namespace {

template <typename T>
void take(const YAML::Node& node, const char* key, T& value, std::set<std::string>& used) {
  used.insert(key);
  if (node[key]) value = node[key].as<T>();
}

bool safe_id(const std::string& id) {
  return !id.empty() && id.size() <= 128 && id.front() != '.' &&
         std::all_of(id.begin(), id.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'; });
}

Status validate_job(protocol::JobSpec& j, const std::string& teacher) {
  static const std::vector<std::string> types = {"teacher", "kd", "ada", "evaluate"};
  if (!safe_id(j.id)) return make_error("id must be 1-128 letters, digits, '-', '_' or '.'");
  if (std::find(types.begin(), types.end(), j.type) == types.end()) {
    return make_error("type '" + j.type + "' is not one of teacher, kd, ada, evaluate");
  }
  if (j.sites.empty()) return make_error("sites: at least one site is needed");
  for (const auto& s : j.sites) {
    if (!safe_id(s)) return make_error("site id '" + s + "' is not a valid id");
  }
  if ((j.type == "ada" || j.type == "teacher") && j.source.empty()) return make_error("source: needed for " + j.type + " jobs");
  if (!j.source.empty() && std::find(j.sites.begin(), j.sites.end(), j.source) == j.sites.end() && j.type != "evaluate") {
    return make_error("source '" + j.source + "' is not among the sites");
  }
  if (j.type != "teacher" && teacher.empty()) return make_error("teacher: a model file or job:<id> is needed for " + j.type + " jobs");
  if (j.fold != 0 && j.fold != 1) return make_error("fold must be 0 or 1");
  if (j.rounds < 1 || j.rounds > 100000) return make_error("rounds must be at least 1");
  if (j.local_steps < 1) return make_error("local_steps must be at least 1");
  if (j.batch_size < 1) return make_error("batch_size must be at least 1");
  if (!(j.learning_rate > 0)) return make_error("learning_rate must be positive");
  if (!(j.temperature > 0)) return make_error("temperature must be positive");
  if (j.min_sites < 1) return make_error("min_sites must be at least 1");
  if (j.type != "evaluate" && j.min_sites > static_cast<int>(j.sites.size())) {
    return make_error("min_sites (" + std::to_string(j.min_sites) + ") exceeds the number of sites (" +
                      std::to_string(j.sites.size()) + ")");
  }
  if (!(j.round_deadline_s > 0)) return make_error("round_deadline_s must be positive");
  if (j.evaluation_sites.empty()) {
    for (const auto& s : j.sites) {
      if (s != j.source) j.evaluation_sites.push_back(s);
    }
  }
  return Status::success();
}

}  // namespace

Result<JobDefinition> read_job_file(const fs::path& path) {
  const auto fail = [&](const std::string& message) { return make_error(path.string() + ": " + message); };
  YAML::Node root;
  try {
    root = YAML::LoadFile(path.string());
  } catch (const YAML::BadFile&) {
    return fail("cannot read the job file");
  } catch (const std::exception& e) {
    return fail(std::string("not valid YAML: ") + e.what());
  }
  if (!root.IsMap()) return fail("a job file is a YAML mapping (key: value)");
  JobDefinition d;
  d.file = path;
  auto& j = d.spec;
  std::set<std::string> used;
  models::ModelSpec model;
  try {
    take(root, "id", j.id, used);
    take(root, "type", j.type, used);
    take(root, "sites", j.sites, used);
    take(root, "source", j.source, used);
    take(root, "fold", j.fold, used);
    take(root, "rounds", j.rounds, used);
    take(root, "local_steps", j.local_steps, used);
    take(root, "steps_by_share", j.steps_by_share, used);
    take(root, "batch_size", j.batch_size, used);
    take(root, "learning_rate", j.learning_rate, used);
    take(root, "decay_round", j.decay_round, used);
    take(root, "dice_weight", j.dice_weight, used);
    take(root, "lesion_slice_fraction", j.lesion_slice_fraction, used);
    take(root, "augment", j.augment, used);
    take(root, "temperature", j.temperature, used);
    take(root, "ada_weight", j.ada_weight, used);
    take(root, "ada_warmup_rounds", j.ada_warmup_rounds, used);
    take(root, "seed", j.seed, used);
    take(root, "min_sites", j.min_sites, used);
    take(root, "round_deadline_s", j.round_deadline_s, used);
    take(root, "evaluate", j.evaluate, used);
    take(root, "evaluation_sites", j.evaluation_sites, used);
    take(root, "subjects", j.subjects, used);
    take(root, "method", d.method, used);
    take(root, "teacher", d.teacher, used);
    used.insert("model");
    if (const auto m = root["model"]) {
      if (!m.IsMap()) return fail("model: a mapping of width, depth, norm, upsample, grid_size, grid_spacing");
      std::set<std::string> model_keys;
      std::size_t grid_size = model.grid.in_plane_size[0];
      double grid_spacing = model.grid.in_plane_spacing[0];
      take(m, "width", model.unet.width, model_keys);
      take(m, "depth", model.unet.depth, model_keys);
      take(m, "norm", model.unet.norm, model_keys);
      take(m, "upsample", model.unet.upsample, model_keys);
      take(m, "grid_size", grid_size, model_keys);
      take(m, "grid_spacing", grid_spacing, model_keys);
      for (const auto& kv : m) {
        const auto key = kv.first.as<std::string>();
        if (!model_keys.count(key)) return fail("model: unknown key '" + key + "'");
      }
      model.grid.in_plane_size = {grid_size, grid_size};
      model.grid.in_plane_spacing = {grid_spacing, grid_spacing};
    }
  } catch (const std::exception& e) {
    return fail(std::string("a value has the wrong type: ") + e.what());
  }
  for (const auto& kv : root) {
    const auto key = kv.first.as<std::string>();
    if (!used.count(key)) return fail("unknown key '" + key + "'");
  }
  if (auto st = validate_job(j, d.teacher); !st) return fail(st.error().message);
  if (j.type == "teacher") {
    model.role = "teacher";
    if (auto st = models::validate(model); !st) return fail("model: " + st.error().message);
    j.model_spec_json = models::to_json(model);
  }
  if (d.method.empty()) d.method = j.type == "teacher" ? "lbound" : j.type;
  // A relative model path is relative to the job file.
  if (!d.teacher.empty() && d.teacher.rfind("job:", 0) != 0 && fs::path(d.teacher).is_relative()) {
    d.teacher = (path.parent_path() / d.teacher).lexically_normal().string();
  }
  return d;
}

}  // namespace fedda::coordinator
