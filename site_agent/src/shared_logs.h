#pragma once
// What of the agent's recent log lines leaves the site when an operator asks (`fedda-admin logs
// SITE [--job J] [--tail N]`), under the site's policy share_logs:
//   none    nothing (the default): the coordinator is told the policy, no line leaves
//   errors  warning, error and critical lines
//   job     those, and with a job asked for, every line (info and above) that names it
// With a job asked for, only lines that name it leave. Each line is redacted as a failure's text
// is (local paths and the data folder, subject ids in paths) and every whole word that is one of
// the site's subject ids is taken out too; at most `tail` lines (1 to 1000), the latest. The
// site's audit log records the answer as it records every message sent.

#include <string>
#include <vector>

#include "fedda/common/protocol.h"
#include "fedda/common/recent_log.h"

namespace fedda::site_agent {

inline constexpr int kMaxSharedLogLines = 1000;

// The answer to `request` from `lines` (oldest first) under `policy`; pure.
protocol::LogsReply shared_log_lines(const protocol::LogsRequest& request, const std::string& policy,
                                     const std::vector<log::RecentLine>& lines, const std::vector<std::string>& subjects,
                                     const std::string& data_dir);

// `text` with every whole word (bounded by characters other than letters, digits, '_', '.', '-')
// that is one of `subjects` replaced by "<subject>".
std::string without_subject_words(const std::string& text, const std::vector<std::string>& subjects);

}  // namespace fedda::site_agent
