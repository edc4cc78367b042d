#pragma once
// Two agents started with one site's kit, told apart from one agent that restarted.
//
// A hello with a site's key while the site has a live session replaces that session: an agent
// killed and started again must not wait for its old session to time out. The replaced
// connection is remembered. If it is still speaking a margin (a heartbeat) after it was
// replaced, two agents hold the key: the first keeps the site and the later connection is
// refused, for good (its agent stops; see RejectCode::duplicate_session). What a dead
// connection had queued arrives within the margin and is dropped, so a restart is never taken
// for a second agent. Owned by the service's one thread; not thread-safe. Bounded: at most
// kMaxRemembered connections of each kind, the oldest forgotten first.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace fedda::coordinator {

class DuplicateSessions {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::size_t kMaxRemembered = 1024;

  // What the replaced session's hello said, to restore it if it turns out to be the first agent.
  struct Earlier {
    std::string site, address, agent_version, device;
    int threads = 0;
    std::int64_t connected_ms = 0;  // wall clock, when that session began
    Clock::time_point replaced{};
  };

  // A hello on another connection replaced `earlier.site`'s live session on `routing`.
  void replaced(const std::string& routing, Earlier earlier);

  enum class Verdict {
    unknown,       // not a connection this class remembers: handle as any other
    stale,         // a replaced connection within the margin: drop its message quietly
    second_agent,  // a replaced connection still speaking: two agents hold the key
    refused,       // a connection refused as the later of two: refuse it again
  };
  // A message from `routing`, which is no site's current session, at `now`; `margin` is the
  // heartbeat. For second_agent, `earlier` is what its session was, and the connection is no
  // longer remembered as replaced.
  Verdict judge(const std::string& routing, Clock::time_point now, Clock::duration margin, Earlier* earlier = nullptr);

  // `routing` was refused as the later of two agents.
  void refuse(const std::string& routing);

 private:
  std::map<std::string, Earlier> replaced_;  // routing -> its session before it was replaced
  std::map<std::string, Clock::time_point> refused_;
};

}  // namespace fedda::coordinator
