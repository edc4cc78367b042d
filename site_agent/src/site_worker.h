#pragma once
// What a site does with the coordinator's work, on the agent's worker thread: checks a model
// message's signature against the coordinator's key in the kit, prepares a job from its offer
// (the site's subjects split by the job's fold or named subjects; soft labels computed, or read
// back from the sealed cache), trains or evaluates a round from its task, checks each update
// with the egress guard before it may leave, and releases a job's data when it ends. Its answers
// are encoded messages the session sends. One SiteWorker per agent, used by one thread.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fedda/common/kit.h"
#include "fedda/common/protocol.h"
#include "fedda/site_agent/site_config.h"
#include "session.h"

namespace fedda::site_agent {

struct Outgoing {
  protocol::MessageType type;
  std::string job_id;
  int round = 0;
  protocol::Frames frames;
  std::string tensors;  // for the audit log
};

class SiteWorker {
 public:
  SiteWorker(SiteConfig config, std::optional<kit::SiteKit> kit);
  ~SiteWorker();
  // The messages to send in answer to one offer, task or job goodbye (job_ready, round_update,
  // job_failed); a failure of one job never takes the agent down.
  std::vector<Outgoing> handle(const Inbound& work);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedda::site_agent
