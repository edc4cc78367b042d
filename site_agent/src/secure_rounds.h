#pragma once
// The site's side of secure aggregation (fedda/common/secagg.h), on the agent's network thread:
// its stages arrive while the worker trains. One secagg::Client per round: round keys signed
// with the kit's Ed25519 identity, every other site's keys checked against its root-signed
// manifest before anything is shared with it, and the round's update masked before it is
// offered for upload. An update of a secure job never leaves unmasked: without this round's
// key exchange it is held back, not sent in the clear.
//
// Failures (a relayed key that is not its site's, a coordinator that asks for too much) answer
// job_failed with code secure_aggregation; the full text stays in the site's log.

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fedda/common/kit.h"
#include "fedda/common/secagg.h"
#include "session.h"
#include "site_worker.h"

namespace fedda::site_agent {

class SecureRounds {
 public:
  SecureRounds(std::string site, std::optional<kit::SiteKit> kit);
  ~SecureRounds();

  // A secagg_* message from the coordinator: what to send back.
  std::vector<Outgoing> handle(const Inbound& in);
  // A secure round's update from the worker (its plain round_update, through the egress guard):
  // the masked update when the round's shares are relayed, nothing while they are not (it is
  // released by the relay's arrival), or a refusal.
  std::vector<Outgoing> update(Outgoing plain);
  // The worker prepared `job` (its job_ready is going out): the job's training sites, which
  // every roster of its secure rounds must be drawn from (secagg::Client), and whether its
  // steps are shared out by sample count (an update's weight, aggregation.h).
  void prepared(const std::string& job, std::vector<std::string> training_sites, bool steps_by_share);
  // The job ended: its rounds' secrets and its sites are dropped.
  void forget(const std::string& job);

 private:
  struct Round {
    std::unique_ptr<secagg::Client> client;
    std::optional<secagg::ShareRelay> relay;
    std::optional<Outgoing> held;
  };
  std::vector<Outgoing> release(const std::string& job, int round, Round& r);
  void drop_rounds(const std::string& job);
  Outgoing failure(const std::string& job, const std::string& reason) const;

  std::string site_;
  std::optional<kit::SiteKit> kit_;
  std::map<std::pair<std::string, int>, Round> rounds_;
  std::map<std::string, std::vector<std::string>> job_sites_;  // jobs prepared here: their training sites
  std::set<std::string> by_share_;                             // those of them with steps_by_share
};

}  // namespace fedda::site_agent
