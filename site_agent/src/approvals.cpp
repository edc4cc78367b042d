#include "fedda/site_agent/approvals.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "fedda/common/files.h"

namespace fedda::site_agent {
namespace fs = std::filesystem;

namespace {
fs::path folder(const fs::path& cache_dir) { return cache_dir / "pending"; }
}  // namespace

Status write_pending(const fs::path& cache_dir, const PendingOffer& offer) {
  const nlohmann::json record = {{"job", offer.job}, {"digest", offer.digest},
                                 {"offer", nlohmann::json::parse(offer.description)}};
  return files::write_atomically(folder(cache_dir) / (offer.job + ".json"), record.dump(2) + "\n");
}

std::vector<PendingOffer> list_pending(const fs::path& cache_dir) {
  std::vector<PendingOffer> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(folder(cache_dir), ec)) {
    if (entry.path().extension() != ".json") continue;
    auto text = files::read_all(entry.path());
    if (!text) continue;
    const auto j = nlohmann::json::parse(*text, nullptr, false);
    if (!j.is_object()) continue;
    out.push_back({j.value("job", ""), j.value("digest", ""), j.value("offer", nlohmann::json::object()).dump(2)});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.job < b.job; });
  return out;
}

Status decide(const fs::path& cache_dir, const std::string& job, bool approve) {
  for (const auto& offer : list_pending(cache_dir)) {
    if (offer.job != job) continue;
    std::error_code ec;
    fs::remove(folder(cache_dir) / (job + (approve ? ".refused" : ".approved")), ec);  // the last word counts
    return files::write_atomically(folder(cache_dir) / (job + (approve ? ".approved" : ".refused")), offer.digest + "\n");
  }
  return make_error("no offer of job '" + job + "' waits for approval in " + folder(cache_dir).string() +
                    " (see fedda-agent pending)");
}

std::optional<bool> decision(const fs::path& cache_dir, const std::string& job, const std::string& digest) {
  if (fs::exists(folder(cache_dir) / (job + ".refused"))) return false;
  auto approved = files::read_all(folder(cache_dir) / (job + ".approved"));
  if (approved && approved->substr(0, approved->find('\n')) == digest) return true;
  return std::nullopt;
}

void clear_pending(const fs::path& cache_dir, const std::string& job) {
  std::error_code ec;
  for (const char* ext : {".json", ".approved", ".refused"}) fs::remove(folder(cache_dir) / (job + ext), ec);
}

}  // namespace fedda::site_agent
