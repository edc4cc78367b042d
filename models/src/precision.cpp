#include "fedda/models_core/precision.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "fedda/common/settings.h"

namespace fedda::models {
namespace {

// "cuda", "cuda:N" (the devices precision.h names); anything else here is a CPU.
bool is_cuda(const std::string& device) { return device.rfind("cuda", 0) == 0; }

std::set<std::string> split_words(const std::string& text) {
  std::set<std::string> out;
  std::istringstream in(text);
  for (std::string w; in >> w;) out.insert(w);
  return out;
}

// The first "key : value" line of /proc/cpuinfo with this key.
std::string cpuinfo_field(const std::string& key) {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key, 0) != 0) continue;
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const auto rest = line.substr(colon + 1);
    const auto first = rest.find_first_not_of(' ');
    return first == std::string::npos ? std::string() : rest.substr(first);
  }
  return {};
}

}  // namespace

const std::vector<std::string>& precision_names() {
  static const std::vector<std::string> names = protocol::setting_names<protocol::Precision>();
  return names;
}

bool is_precision_name(const std::string& name) {
  const auto& names = precision_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::set<std::string> cpu_flags() {
  if (const char* forced = std::getenv("FEDDA_CPU_FLAGS")) return split_words(forced);
  return split_words(cpuinfo_field("flags"));
}

Result<PrecisionChoice> choose_precision(const std::string& requested, const std::string& device,
                                         const std::set<std::string>& flags) {
  if (!is_precision_name(requested)) {
    return make_error("precision '" + requested + "' is not one of auto, float32, bfloat16");
  }
  const bool cuda = is_cuda(device);
  const bool units = flags.count("avx512_bf16") || flags.count("amx_bf16");
  const bool avx512 = flags.count("avx512f") > 0;
  PrecisionChoice c;
  if (requested == "float32") {
    c.reason = "asked for float32";
  } else if (requested == "bfloat16") {
    c.bfloat16 = true;
    c.reason = cuda || units ? "asked for bfloat16" : "asked for bfloat16 (emulated: this processor has no bfloat16 units)";
  } else if (cuda) {
    c.bfloat16 = true;
    c.reason = "auto: CUDA";
  } else if (units) {
    c.bfloat16 = true;
    c.reason = std::string("auto: the processor has ") + (flags.count("amx_bf16") ? "amx_bf16" : "avx512_bf16");
  } else {
    c.reason = "auto: the processor has no bfloat16 units (no avx512_bf16 or amx_bf16)";
  }
  c.channels_last = !cuda && (c.bfloat16 || avx512);
  return c;
}

PrecisionChoice for_inference(PrecisionChoice trained, const std::string& device) {
  if (!is_cuda(device)) trained.channels_last = true;
  return trained;
}

Result<PrecisionChoice> choose_precision(const std::string& requested, const std::string& device) {
  return choose_precision(requested, device, cpu_flags());
}

std::string precision_request(const std::string& job, const std::string& site) {
  if (!job.empty() && job != "auto") return job;
  if (!site.empty()) return site;
  return "auto";
}

std::string cpu_description() {
  std::string isa;
  const auto flags = cpu_flags();
  for (const char* f : {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}) {
    if (flags.count(f)) isa += (isa.empty() ? "" : " ") + std::string(f);
  }
  auto model = cpuinfo_field("model name");
  if (model.empty()) model = "unknown processor";
  return model + " | " + (isa.empty() ? "no AVX2" : isa) + (std::getenv("FEDDA_CPU_FLAGS") ? " (FEDDA_CPU_FLAGS)" : "");
}

}  // namespace fedda::models
