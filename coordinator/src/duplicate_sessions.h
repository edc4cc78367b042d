#pragma once
// Two agents started with one site's kit, told apart from one agent that restarted or
// reconnected, by the instance every agent process draws at random and puts in each hello
// (protocol::Hello::instance).
//
// A hello with a site's key while the site has a live session takes the site over: a restarted
// agent (a new instance) must not wait for its old session to time out, and an agent that
// reconnected (the same instance, a new connection) simply goes on. The session a new instance
// replaced is remembered. When a hello comes with that replaced instance while the new one's
// session lives, two agents hold the key: the first (back on its old connection or a new one)
// keeps the site, and the later instance is refused, then and whenever it says hello again
// (RejectCode::duplicate_session). A process that has died never says hello again, so timing
// plays no part. Agents before instances (0) are never judged. Owned by the service's one
// thread; not thread-safe. Bounded: at most kMaxRemembered refused instances, oldest first out.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <utility>

namespace fedda::coordinator {

class DuplicateSessions {
 public:
  static constexpr std::size_t kMaxRemembered = 1024;

  // A session as the log names it.
  struct Session {
    std::uint64_t instance = 0;
    std::string address;
    std::int64_t connected_ms = 0;  // wall clock
  };

  enum class Verdict {
    take_over,     // a restart, a reconnect or a first hello: the hello's session replaces the current one
    second_agent,  // the hello is the first agent's: the current session is the later of two, to be refused
    refused,       // the hello's instance was refused as the later of two: refuse it again
  };

  // A hello of `site` from `instance`, while the site's live session is `current` (none: nullptr).
  // On second_agent, `first` is the replaced session the hello proves alive.
  Verdict hello(const std::string& site, std::uint64_t instance, const Session* current, Session* first = nullptr);

  // `instance` of `site` was refused as the later of two agents.
  void refuse(const std::string& site, std::uint64_t instance);

 private:
  std::map<std::string, Session> replaced_;  // site -> the session its current one replaced
  std::set<std::pair<std::string, std::uint64_t>> refused_;
  std::deque<std::pair<std::string, std::uint64_t>> refused_order_;
};

}  // namespace fedda::coordinator
