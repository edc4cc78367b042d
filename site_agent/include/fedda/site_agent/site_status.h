#pragma once
// What a site has sent, from its audit log, as `fedda-agent status` shows it: per job and day
// (UTC), the messages, bytes and tensor-carrying updates, by message type. Pure; thread-safe.

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace fedda::site_agent {

struct SentSummary {
  std::string job;   // "" for messages of no job (hello, heartbeats, goodbye)
  std::string day;   // YYYY-MM-DD, UTC
  long messages = 0;
  std::int64_t bytes = 0;
  long updates_with_tensors = 0;
  std::map<std::string, long> by_type;
};

// Lines that do not parse are skipped (a line cut by a crash).
std::vector<SentSummary> summarize_audit(const std::filesystem::path& audit_file);

}  // namespace fedda::site_agent
