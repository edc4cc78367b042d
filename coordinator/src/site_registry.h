#pragma once
// The sites the coordinator knows: who is connected (routing id, liveness), what each agent
// said of itself in its hello, and what each site did with each job it was offered. Owned by the
// service's one thread; not thread-safe.
//
// A site's session begins with a hello: its sequence numbers count from that hello's (so a
// restarted agent, or one whose clock stepped back, is never locked out), and its state in every
// job it was offered is reset (a new session must be offered the job again and cannot answer a
// task the old one was given).

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "fedda/common/protocol.h"

namespace fedda::coordinator {

using Clock = std::chrono::steady_clock;

// One site in one job.
struct Participation {
  bool offered = false;        // offered on the current session
  bool ready = false;          // prepared (job_ready) on the current session
  bool pending = false;        // waiting for the site administrator's approval
  bool failed = false;         // could not prepare or run it, or refused it (until offered again)
  std::string failure;         // why, as the site said (through its egress guard)
  protocol::FailureCode failure_code = protocol::FailureCode::unspecified;
  std::string failure_rule;    // policy: the rule
  int refused_updates = 0;     // updates the coordinator refused (non-finite, forged count, norm)
  std::int64_t samples = 0;    // training slices (the FedAvg weight)
  int subjects = 0;
  int evaluation_subjects = 0;
};

struct SiteInfo {
  std::string id;
  std::string routing;         // ZeroMQ routing id of the current session
  bool alive = false;
  Clock::time_point last_seen{};
  std::int64_t last_seen_ms = 0;  // wall clock, for operators
  std::int64_t connected_ms = 0;
  std::string agent_version, device;
  int threads = 0;
  std::string address;  // the peer's address at its hello ("" where unknown)
  std::uint64_t instance = 0;  // the agent process's (protocol::Hello::instance); 0 from old agents
  protocol::SiteResources resources;  // as its last hello said (all unknown from old agents)
  std::uint64_t last_sequence = 0;  // of the current session
  std::map<std::string, Participation> jobs;
};

// The sites of a job's open round (or evaluation): those that answered and those it waits for.
struct RoundSites {
  int round = 0;
  bool evaluation = false;
  std::vector<std::string> answered, waiting;
};

class SiteRegistry {
 public:
  // A hello on `routing`: starts (or replaces) the site's session. Returns the site.
  SiteInfo& begin_session(const std::string& id, const std::string& routing, std::uint64_t sequence,
                          const std::string& agent_version, const std::string& device, int threads);
  // Ends the site's session (lost, left or revoked); false when it had none.
  bool end_session(const std::string& id);

  SiteInfo* find(const std::string& id);
  const SiteInfo* find(const std::string& id) const;
  SiteInfo* by_routing(const std::string& routing);
  // Records a message on the site's session; false (and nothing recorded) when its sequence
  // does not move forward.
  bool accept(SiteInfo& site, std::uint64_t sequence);

  Participation& in(const std::string& site, const std::string& job) { return sites_[site].jobs[job]; }
  const std::map<std::string, SiteInfo>& all() const { return sites_; }
  std::map<std::string, SiteInfo>& all() { return sites_; }
  // Sites whose session has been silent for longer than `silence`.
  std::vector<std::string> silent_since(Clock::time_point now, Clock::duration silence) const;

 private:
  std::map<std::string, SiteInfo> sites_;
  std::map<std::string, std::string> site_of_routing_;
};

std::int64_t wall_ms();

}  // namespace fedda::coordinator
