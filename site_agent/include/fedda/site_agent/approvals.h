#pragma once
// Offers a site holds for its administrator (policy `approval: manual`), as files in the site's
// cache, so the running agent and `fedda-agent pending / approve / refuse` can share them:
//
//   CACHE/pending/<job>.json      the offer: what the job is, and exactly what it will send
//   CACHE/pending/<job>.approved  the administrator's yes, naming the offer's digest
//   CACHE/pending/<job>.refused   the administrator's no, naming it likewise
//
// A decision holds the SHA-256 of the job as it was offered (offer_digest: its settings and the
// models the offer carries): a coordinator that changes the job under the same id, or sends
// another teacher with the same settings, gets no decision for the new one (it is asked for
// again), and the same job
// offered again (a coordinator or an agent that restarted) gets the decision already made, for
// as long as the job runs. Files are written atomically; pure functions of the folder; safe for
// the agent and the CLI at once.

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "fedda/common/protocol.h"
#include "fedda/common/result.h"

namespace fedda::site_agent {

struct PendingOffer {
  std::string job;
  std::string digest;        // offer_digest of the offer
  std::string description;   // JSON: the job and what it will send
};

// What an approval binds, as hex SHA-256: the job's settings (its JSON), every tensor of the kd
// teacher the offer carries (name, dtype, shape and bytes) and its quality estimator. The same
// offer sent again gives the same digest.
std::string offer_digest(const protocol::JobOffer& offer);

Status write_pending(const std::filesystem::path& cache_dir, const PendingOffer& offer);
// Every offer waiting for a decision, by job id.
std::vector<PendingOffer> list_pending(const std::filesystem::path& cache_dir);
// Error when no such offer waits.
Status decide(const std::filesystem::path& cache_dir, const std::string& job, bool approve);
// true: approved, false: refused (either for this digest), nothing: no decision for it yet.
std::optional<bool> decision(const std::filesystem::path& cache_dir, const std::string& job, const std::string& digest);
// The offer no longer waits (it was decided); the decision stays.
void settle_pending(const std::filesystem::path& cache_dir, const std::string& job);
// Removes the offer and its decision (the job ended).
void clear_pending(const std::filesystem::path& cache_dir, const std::string& job);

}  // namespace fedda::site_agent
