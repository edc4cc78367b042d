#include "shared_logs.h"

#include <algorithm>
#include <deque>
#include <set>

#include "site_worker.h"

namespace fedda::site_agent {
namespace {

bool word_character(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
}

bool is_problem(const log::RecentLine& line) {
  return line.level == "warning" || line.level == "error" || line.level == "critical";
}

// Whether `job` appears in `text` as a whole word.
bool names(const std::string& text, const std::string& job) {
  for (auto at = text.find(job); at != std::string::npos; at = text.find(job, at + 1)) {
    const bool starts = at == 0 || !word_character(text[at - 1]);
    const bool ends = at + job.size() == text.size() || !word_character(text[at + job.size()]);
    if (starts && ends) return true;
  }
  return false;
}

}  // namespace

std::string without_subject_words(const std::string& text, const std::vector<std::string>& subjects) {
  const std::set<std::string> ids(subjects.begin(), subjects.end());
  std::string out;
  std::size_t i = 0;
  while (i < text.size()) {
    if (!word_character(text[i])) {
      out += text[i++];
      continue;
    }
    std::size_t end = i;
    while (end < text.size() && word_character(text[end])) ++end;
    const std::string word = text.substr(i, end - i);
    // A word ending in '.' (the end of a sentence) is matched without it too.
    const std::string bare = !word.empty() && word.back() == '.' ? word.substr(0, word.size() - 1) : word;
    if (ids.count(word)) {
      out += "<subject>";
    } else if (ids.count(bare)) {
      out += "<subject>.";
    } else {
      out += word;
    }
    i = end;
  }
  return out;
}

protocol::LogsReply shared_log_lines(const protocol::LogsRequest& request, const std::string& policy,
                                     const std::vector<log::RecentLine>& lines, const std::vector<std::string>& subjects,
                                     const std::string& data_dir) {
  protocol::LogsReply reply;
  reply.request = request.request;
  reply.policy = policy;
  if (policy != "errors" && policy != "job") {
    reply.refused = "this site shares no log lines (its policy share_logs: " + policy + ")";
    return reply;
  }
  const auto tail = static_cast<std::size_t>(std::clamp(request.tail, 1, kMaxSharedLogLines));
  std::deque<std::string> kept;
  for (const auto& line : lines) {
    const bool about_job = !request.job.empty() && names(line.message, request.job);
    if (!request.job.empty() && !about_job) continue;
    if (!is_problem(line) && !(policy == "job" && about_job)) continue;
    kept.push_back(without_subject_words(redact(line.text(), subjects, data_dir), subjects));
    if (kept.size() > tail) kept.pop_front();
  }
  reply.lines.assign(kept.begin(), kept.end());
  return reply;
}

}  // namespace fedda::site_agent
