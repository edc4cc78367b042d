#include "fedda/site_agent/approvals.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "fedda/common/crypto.h"
#include "fedda/common/files.h"

namespace fedda::site_agent {
namespace fs = std::filesystem;

namespace {
fs::path folder(const fs::path& cache_dir) { return cache_dir / "pending"; }
}  // namespace

std::string offer_digest(const protocol::JobOffer& offer) {
  std::string text = "job " + crypto::sha256_hex(protocol::to_json(offer.job)) + "\n";
  for (const auto& t : offer.teacher.tensors) {
    text += "teacher " + t.name + " " + std::to_string(static_cast<int>(t.dtype));
    for (const auto d : t.shape) text += " " + std::to_string(d);
    text += " " + crypto::sha256_hex(std::string_view(reinterpret_cast<const char*>(t.data.data()), t.data.size())) + "\n";
  }
  text += "quality " + crypto::sha256_hex(offer.quality_estimator) + "\n";
  return crypto::sha256_hex(text);
}

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
  const auto names = [&](const char* ext) {
    auto text = files::read_all(folder(cache_dir) / (job + ext));
    return text && text->substr(0, text->find('\n')) == digest;
  };
  if (names(".refused")) return false;
  if (names(".approved")) return true;
  return std::nullopt;
}

void settle_pending(const fs::path& cache_dir, const std::string& job) {
  std::error_code ec;
  fs::remove(folder(cache_dir) / (job + ".json"), ec);
}

void clear_pending(const fs::path& cache_dir, const std::string& job) {
  std::error_code ec;
  for (const char* ext : {".json", ".approved", ".refused"}) fs::remove(folder(cache_dir) / (job + ext), ec);
}

}  // namespace fedda::site_agent
