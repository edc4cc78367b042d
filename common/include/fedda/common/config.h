#pragma once
// Strict YAML configuration files (site configs, job files): every key must be known and every
// value of the right type, and each error names the file and the key. yaml-cpp stays inside.
//
//   auto m = config::Mapping::load(path);
//   if (!m) return m.error();
//   m->get("rounds", job.rounds);          // left unchanged when the key is absent
//   auto model = m->mapping("model");      // a nested mapping (empty when absent)
//   model.get("width", spec.width);
//   if (auto st = m->finish(); !st) ...    // the first wrong value, else the first unknown key
//
// A Mapping and the mappings taken from it share one error state; not thread-safe.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "fedda/common/result.h"

namespace fedda::config {

class Mapping {
 public:
  // Error when the file cannot be read, is not YAML, or is not a mapping at the top.
  static Result<Mapping> load(const std::filesystem::path& path);
  // The same from text already in memory; `name` stands in for the file in messages.
  static Result<Mapping> parse(const std::string& text, const std::filesystem::path& name);

  void get(const std::string& key, std::string& value);
  void get(const std::string& key, int& value);
  void get(const std::string& key, double& value);
  void get(const std::string& key, bool& value);
  void get(const std::string& key, std::uint64_t& value);  // also std::size_t on 64-bit Linux
  void get(const std::string& key, std::vector<std::string>& value);
  Mapping mapping(const std::string& key);

  // The first value of the wrong type, else the first key nobody asked for (in this mapping or
  // any taken from it), as "FILE: [PARENT: ]key 'x': ...".
  Status finish() const;

 private:
  struct State;
  struct Node;
  Mapping(std::shared_ptr<State> state, std::shared_ptr<Node> node);
  template <typename T>
  void read(const std::string& key, T& value, const char* expected);
  std::shared_ptr<State> state_;
  std::shared_ptr<Node> node_;
};

// A YAML mapping of `settings`, each "key=value"; a dotted key is a nested mapping
// ("dp.target_epsilon=3" is dp: {target_epsilon: 3}) and a value is read as YAML ("[a, b]" is a
// list). Error names the setting that is not key=value.
Result<std::string> yaml_of_settings(const std::vector<std::string>& settings);

// The mapping `base` (YAML text) with the mapping `changes` laid over it: a key of `changes`
// replaces the same key of `base`, and where both hold a mapping the two are laid key by key.
// Written back as YAML (comments are not kept). Error names `name` when either is not a mapping.
Result<std::string> overlay_yaml(const std::string& base, const std::string& changes, const std::string& name);

}  // namespace fedda::config
