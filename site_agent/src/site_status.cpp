#include "fedda/site_agent/site_status.h"

#include <ctime>
#include <fstream>

#include <nlohmann/json.hpp>

namespace fedda::site_agent {

std::vector<SentSummary> summarize_audit(const std::filesystem::path& audit_file) {
  std::map<std::pair<std::string, std::string>, SentSummary> by_key;
  std::ifstream in(audit_file);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("time_ms")) continue;
    const std::time_t t = static_cast<std::time_t>(j["time_ms"].get<std::int64_t>() / 1000);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char day[16];
    std::strftime(day, sizeof day, "%Y-%m-%d", &tm);
    const std::string type = j.value("type", "");
    const std::string job = j.value("job", "");
    auto& s = by_key[{job, day}];
    s.job = job;
    s.day = day;
    const long count = type == "heartbeats" ? j.value("count", 0L) : 1L;
    s.messages += count;
    s.by_type[type == "heartbeats" ? "heartbeat" : type] += count;
    s.bytes += j.value("bytes", std::int64_t{0});
    if (!j.value("tensors", std::string()).empty()) ++s.updates_with_tensors;
  }
  std::vector<SentSummary> out;
  for (auto& [key, s] : by_key) out.push_back(std::move(s));
  return out;
}

}  // namespace fedda::site_agent
