// libFuzzer target: the strict YAML reader behind job files and site configs, fed arbitrary
// text, read the way a job file is.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fedda/common/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto m = fedda::config::Mapping::parse(text, "fuzz.yaml");
  if (!m) return 0;
  std::string s;
  int i = 0;
  double d = 0;
  bool b = false;
  std::uint64_t u = 0;
  std::vector<std::string> list;
  m->get("id", s);
  m->get("rounds", i);
  m->get("learning_rate", d);
  m->get("augment", b);
  m->get("seed", u);
  m->get("sites", list);
  auto nested = m->mapping("model");
  nested.get("width", i);
  (void)m->finish();
  return 0;
}
