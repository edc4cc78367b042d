#include "fedda/common/config.h"

#include <algorithm>
#include <set>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "fedda/common/files.h"

namespace fedda::config {

struct Mapping::Node {
  YAML::Node yaml;
  std::string prefix;  // "model: " for a nested mapping
  std::set<std::string> known;
};

struct Mapping::State {
  std::filesystem::path file;
  std::string first_error;
  std::vector<std::shared_ptr<Node>> nodes;
};

Mapping::Mapping(std::shared_ptr<State> state, std::shared_ptr<Node> node)
    : state_(std::move(state)), node_(std::move(node)) {}

Result<Mapping> Mapping::load(const std::filesystem::path& path) {
  auto text = files::read_all(path);
  if (!text) return make_error(path.string() + ": cannot read the file");
  return parse(*text, path);
}

Result<Mapping> Mapping::parse(const std::string& text, const std::filesystem::path& name) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const std::exception& e) {
    return make_error(name.string() + ": not valid YAML: " + e.what());
  }
  if (!root.IsMap()) return make_error(name.string() + ": expected a YAML mapping (key: value lines)");
  auto state = std::make_shared<State>();
  state->file = name;
  auto node = std::make_shared<Node>();
  node->yaml = root;
  state->nodes.push_back(node);
  return Mapping(state, node);
}

template <typename T>
void Mapping::read(const std::string& key, T& value, const char* expected) {
  node_->known.insert(key);
  const auto v = node_->yaml[key];
  if (!v) return;
  try {
    value = v.as<T>();
  } catch (const std::exception&) {
    if (state_->first_error.empty()) state_->first_error = node_->prefix + "key '" + key + "': expected " + expected;
  }
}

void Mapping::get(const std::string& key, std::string& value) { read(key, value, "text"); }
void Mapping::get(const std::string& key, int& value) { read(key, value, "an integer"); }
void Mapping::get(const std::string& key, double& value) { read(key, value, "a number"); }
void Mapping::get(const std::string& key, bool& value) { read(key, value, "true or false"); }
void Mapping::get(const std::string& key, std::uint64_t& value) { read(key, value, "a non-negative integer"); }
void Mapping::get(const std::string& key, std::vector<std::string>& value) { read(key, value, "a list, e.g. [a, b]"); }

Mapping Mapping::mapping(const std::string& key) {
  node_->known.insert(key);
  auto child = std::make_shared<Node>();
  child->prefix = node_->prefix + key + ": ";
  const auto v = node_->yaml[key];
  if (v && !v.IsMap()) {
    if (state_->first_error.empty()) state_->first_error = node_->prefix + "key '" + key + "': expected a mapping";
  } else if (v) {
    child->yaml = v;
  }
  state_->nodes.push_back(child);
  return Mapping(state_, child);
}

namespace {

// Edits (insert, delete, replace) from a to b: Levenshtein's distance, for the nearest key.
std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// "; did you mean 'local_steps'?" for the known key nearest to `key`, when one is near enough
// (a third of its letters, at least two) to be a slip of the keyboard rather than another word.
std::string nearest_known(const std::string& key, const std::set<std::string>& known) {
  std::string best;
  std::size_t best_distance = std::max<std::size_t>(2, key.size() / 3) + 1;
  for (const auto& k : known) {
    const auto d = edit_distance(key, k);
    if (d < best_distance) {
      best = k;
      best_distance = d;
    }
  }
  return best.empty() ? std::string() : "; did you mean '" + best + "'?";
}

}  // namespace

Status Mapping::finish() const {
  const auto fail = [&](const std::string& m) { return make_error(state_->file.string() + ": " + m); };
  if (!state_->first_error.empty()) return fail(state_->first_error);
  for (const auto& node : state_->nodes) {
    if (!node->yaml || !node->yaml.IsMap()) continue;
    std::set<std::string> seen;
    for (const auto& kv : node->yaml) {
      // A key may be a list or a mapping in YAML (`? [a, b]: x`); none of fedda's is.
      if (!kv.first.IsScalar()) return fail(node->prefix + "a key that is not plain text");
      const auto key = kv.first.Scalar();
      if (!node->known.count(key)) {
        // Where, as an editor takes it (FILE:LINE:COLUMN, from yaml-cpp's 0-based mark).
        const auto mark = kv.first.Mark();
        const auto what = node->prefix + "unknown key '" + key + "'";
        const auto hint = nearest_known(key, node->known);
        if (mark.is_null()) return fail(what + hint);
        return make_error(what + " at " + state_->file.string() + ":" + std::to_string(mark.line + 1) + ":" +
                          std::to_string(mark.column + 1) + hint);
      }
      // yaml-cpp keeps the first of two equal keys; an administrator editing the second would
      // see no effect.
      if (!seen.insert(key).second) return fail(node->prefix + "key '" + key + "' is given twice");
    }
  }
  return Status::success();
}

namespace {

// `changes` laid over `base`, mapping by mapping.
void overlay(YAML::Node base, const YAML::Node& changes) {
  for (const auto& kv : changes) {
    const auto key = kv.first.as<std::string>();
    YAML::Node at = base[key];
    if (at.IsMap() && kv.second.IsMap()) {
      overlay(at, kv.second);
    } else {
      base[key] = kv.second;
    }
  }
}

}  // namespace

Result<std::string> yaml_of_settings(const std::vector<std::string>& settings) {
  YAML::Node root(YAML::NodeType::Map);
  for (const auto& setting : settings) {
    const auto eq = setting.find('=');
    if (eq == std::string::npos || eq == 0) return make_error("'" + setting + "' is not key=value");
    const std::string key = setting.substr(0, eq), value = setting.substr(eq + 1);
    YAML::Node parsed;
    try {
      parsed = YAML::Load(value);
    } catch (const YAML::Exception& e) {
      return make_error("'" + setting + "': the value is not YAML: " + e.msg);
    }
    std::vector<std::string> path;
    for (std::size_t from = 0;;) {
      const auto dot = key.find('.', from);
      path.push_back(key.substr(from, dot - from));
      if (path.back().empty()) return make_error("'" + setting + "': an empty key");
      if (dot == std::string::npos) break;
      from = dot + 1;
    }
    // Built from the inside out; reset() rebinds a node (assigning one would overwrite it).
    YAML::Node change;
    change.reset(parsed);
    for (auto it = path.rbegin(); it != path.rend(); ++it) {
      YAML::Node level(YAML::NodeType::Map);
      level[*it] = change;
      change.reset(level);
    }
    overlay(root, change);
  }
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

Result<std::string> overlay_yaml(const std::string& base, const std::string& changes, const std::string& name) {
  YAML::Node b, c;
  try {
    b = YAML::Load(base);
    c = YAML::Load(changes);
  } catch (const YAML::Exception& e) {
    return make_error(name + ": not valid YAML: " + e.msg);
  }
  if (!b.IsMap()) return make_error(name + ": the job file is not a mapping");
  if (!c.IsMap() && !c.IsNull()) return make_error(name + ": the changes are not a mapping");
  if (c.IsMap()) overlay(b, c);
  YAML::Emitter out;
  out << b;
  return std::string(out.c_str()) + "\n";
}

}  // namespace fedda::config
