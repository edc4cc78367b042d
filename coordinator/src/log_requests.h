#pragma once
// Operators' `logs SITE` requests waiting for the site's answer: the coordinator relays each to
// the site's agent (logs_request) and answers the operator when the site's logs_reply comes, or
// says the site did not answer by the deadline. At most kMaxWaiting wait at once. Owned by the
// service's one thread; not thread-safe.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "fedda/common/protocol.h"

namespace fedda::coordinator {

class LogRequests {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::size_t kMaxWaiting = 64;

  struct Waiting {
    std::string routing;          // the operator's connection on the admin endpoint
    std::uint64_t sequence = 0;   // of its request (the answer names it)
    std::string who;              // the operator
    protocol::AdminRequest request;
    std::string site;
    Clock::time_point deadline;
  };

  // Its id for the site to echo; empty when kMaxWaiting already wait.
  std::string add(Waiting waiting) {
    if (waiting_.size() >= kMaxWaiting) return "";
    const std::string id = "logs-" + std::to_string(++next_);
    waiting_.emplace(id, std::move(waiting));
    return id;
  }
  // The request `id` answered by `site`, taken out; nothing when no such request waits for that site.
  std::optional<Waiting> take(const std::string& id, const std::string& site) {
    const auto it = waiting_.find(id);
    if (it == waiting_.end() || it->second.site != site) return std::nullopt;
    Waiting w = std::move(it->second);
    waiting_.erase(it);
    return w;
  }
  // The requests past their deadline, taken out.
  std::vector<Waiting> expired(Clock::time_point now) {
    std::vector<Waiting> out;
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      if (it->second.deadline <= now) {
        out.push_back(std::move(it->second));
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
    return out;
  }
  bool empty() const { return waiting_.empty(); }

 private:
  std::map<std::string, Waiting> waiting_;
  std::uint64_t next_ = 0;
};

}  // namespace fedda::coordinator
