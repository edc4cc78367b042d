#pragma once
// What a site does with the coordinator's work, on the agent's worker thread: checks a model
// message's signature against the coordinator's key in the kit, checks an offer against the
// site's policy (job types, trusted sources, smallest batch and step count, evaluation
// frequency), holds it for the site administrator's approval when the policy says so, prepares
// the job (the site's subjects split by the job's fold or named by their pseudonyms; soft labels
// computed, or read back from the sealed cache), trains or evaluates a round from its task,
// checks each update with the egress guard before it may leave, and releases a job's data when
// it ends.
//
// Subject ids never leave: what is sent names subjects by keyed pseudonyms (site_config.h), and
// a failure's text is sent with local paths and subject ids redacted (the full text goes to the
// audit log only). Its answers are encoded messages the session sends. One SiteWorker per agent,
// used by one thread.

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
  std::string detail;   // for the audit log only: a failure's full text
  bool secure = false;  // a round_update of a secure-aggregation job: masked before it leaves (secure_rounds.h)
  std::vector<std::string> training_sites;  // with a job_ready: the job's sites (SecureRounds::prepared)
  bool steps_by_share = false;              // with a job_ready: the job's, for its updates' weight (aggregation.h)
  bool evaluation = false;  // a round_update that carries an evaluation's scores, not a trained model
};

// `body` from `site` as an encoded message for the session.
template <typename Body>
Outgoing make_outgoing(const std::string& site, protocol::MessageType type, const std::string& job_id, int round, const Body& body,
                       std::string tensors = {}, std::string detail = {}) {
  protocol::Header h;
  h.type = type;
  h.sender = site;
  h.job_id = job_id;
  h.round = round;
  Outgoing o;
  o.type = type;
  o.job_id = job_id;
  o.round = round;
  o.frames = protocol::encode(h, body);
  o.tensors = std::move(tensors);
  o.detail = std::move(detail);
  return o;
}

class SiteWorker {
 public:
  // Error when the pseudonym key cannot be had (kit unreadable, cache not writable).
  static Result<std::unique_ptr<SiteWorker>> create(SiteConfig config, std::optional<kit::SiteKit> kit);
  ~SiteWorker();
  // The messages to send in answer to one offer, task or job goodbye (job_ready, job_pending,
  // round_update, job_failed); a failure of one job never takes the agent down.
  std::vector<Outgoing> handle(const Inbound& work);
  // Offers held for approval that the administrator approved or refused since the last call
  // (fedda-agent approve / refuse): their answers.
  std::vector<Outgoing> check_approvals();

 private:
  struct Impl;
  explicit SiteWorker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Text with local paths and subject ids taken out: what may leave the site of a local error.
std::string redact(const std::string& text, const std::vector<std::string>& subjects, const std::string& data_dir);

}  // namespace fedda::site_agent
