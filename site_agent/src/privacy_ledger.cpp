#include "privacy_ledger.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "fedda/common/files.h"

namespace fedda::site_agent {
namespace {

std::filesystem::path ledger_file(const std::filesystem::path& cache_dir, const std::string& job) {
  return cache_dir / "privacy" / (job + ".json");
}

bool same(double a, double b) { return std::abs(a - b) <= 1e-12 * std::max(std::abs(a), std::abs(b)); }

}  // namespace

Result<long long> read_privacy_ledger(const std::filesystem::path& cache_dir, const std::string& job,
                                      const models::DpGuarantee& dp) {
  const auto file = ledger_file(cache_dir, job);
  if (!std::filesystem::exists(file)) return 0LL;
  auto text = files::read_all(file);
  if (!text) return text.error();
  const auto j = nlohmann::json::parse(*text, nullptr, false);
  if (!j.is_object() || !j.contains("steps") || !j["steps"].is_number_integer()) {
    return make_error(file.string() + ": not a privacy ledger; the steps it counted are unknown, so nothing more is "
                                      "trained on this job here");
  }
  if (!same(j.value("noise_multiplier", 0.0), dp.noise_multiplier) || !same(j.value("sample_rate", 0.0), dp.sample_rate) ||
      !same(j.value("delta", 0.0), dp.delta)) {
    return make_error(file.string() + ": the job's steps so far ran with another noise, sample rate or delta than now "
                                      "(the site's data changed?); one epsilon cannot be added up over both");
  }
  return j["steps"].get<long long>();
}

Status write_privacy_ledger(const std::filesystem::path& cache_dir, const std::string& job,
                            const models::DpGuarantee& dp, long long steps, double epsilon) {
  const auto file = ledger_file(cache_dir, job);
  std::error_code ec;
  std::filesystem::create_directories(file.parent_path(), ec);
  const nlohmann::json j = {{"job", job},           {"steps", steps},          {"epsilon", epsilon},
                            {"delta", dp.delta},    {"noise_multiplier", dp.noise_multiplier},
                            {"sample_rate", dp.sample_rate}, {"clip_norm", dp.clip_norm}};
  return files::write_atomically(file, j.dump(2) + "\n");
}

}  // namespace fedda::site_agent
