#pragma once
// One job's life at the coordinator, as a state machine the service's loop drives (tick) and
// feeds (the job's messages): offer the job to its sites (a signed offer, encoded once), wait
// until enough are ready, open a round (a signed task, encoded once and shared by every site's
// send), collect the updates through the service's upload credits and average them as they
// arrive (FedAvg: one running sum whatever the number of sites), step the ADA discriminator with
// the averaged gradients, persist the round crash-consistently, and after the last round score
// the model at the evaluation sites (evaluation.h writes results.csv and summary.json).
//
// The job's record in the JobStore is the truth: a JobRun started on a record that has finished
// rounds resumes after the last one. It never sees an image, a label or a soft label.
//
// Stopping: abort() stops after the current round and marks the job aborted (resume queues it
// again); drain() does the same but leaves it running on disk, for a service that is shutting
// down. Owned by the service's one thread; not thread-safe.
//
// Time: every deadline (round_deadline_s, secagg_timeout_s, the host's start_timeout) is kept on
// the host's clock (JobHost::now), so a test drives a job through its deadlines with a manual
// clock; a round's costs (RoundCost) are work timed on the steady clock.
//
// In three files: job_run.cpp (the job's phases, its rounds, their record on disk),
// job_run_messages.cpp (what its sites send: readiness, failures, updates, evaluations) and
// job_run_secure.cpp (a secure round's stages).

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "evaluation.h"
#include "fedda/common/kit.h"
#include "fedda/common/log.h"
#include "fedda/common/protocol.h"
#include "fedda/common/tensors.h"
#include "job_store.h"
#include "site_registry.h"

namespace fedda::coordinator {

// A message body encoded once and sent to many sites by reference.
struct Broadcast {
  std::shared_ptr<const std::string> body;
  std::uint32_t crc = 0;
  std::string signature;  // over protocol::model_signed_text; empty without a kit
};

// What a job's driver needs from the service around it.
class JobHost {
 public:
  virtual ~JobHost() = default;
  virtual SiteRegistry& sites() = 0;
  virtual JobStore& store() = 0;
  virtual const kit::CoordinatorKit* kit() const = 0;
  // How long a job waits for enough sites to be ready (and a round past its deadline).
  virtual Clock::duration start_timeout() const = 0;
  // The time the job's deadlines are kept on: the service's steady clock, a test's manual one.
  virtual Clock::time_point now() const = 0;
  virtual void send(const SiteInfo& site, protocol::MessageType type, const std::string& job, int round,
                    const Broadcast& body) = 0;
  // Puts the site in the queue for upload credit (update_ready answered by `upload`).
  virtual void queue_upload(const std::string& site, const std::string& job, int round) = 0;
  // The lines each peer may still write to the log (warnings about what it sent).
  virtual log::Budget& log_budget() = 0;
};

// What a budgeted log line says of the lines held back before it (log::Budget::take): nothing
// for none, else " (N more lines held back)".
inline std::string held_back(int lines) {
  return lines ? " (" + std::to_string(lines) + " more lines held back)" : std::string();
}

// An encoded body, signed with the coordinator's key when there is a kit.
Result<Broadcast> make_broadcast(const kit::CoordinatorKit* kit, protocol::Frames frames, const std::string& job, int round);

class JobRun {
 public:
  JobRun(JobRecord& record, JobHost& host);
  ~JobRun();

  // Prepares the model the job trains (its teacher, fresh weights, or the last finished round on
  // disk) and offers the job to its connected sites. Error: it cannot start (a teacher file that
  // is missing or of another architecture, unreadable round state); the caller fails the job.
  Status start();

  void site_joined(SiteInfo& site);  // a new session: offered again
  void site_lost(const std::string& site, const std::string& why);
  // job_ready, job_failed, update_ready and round_update of this job.
  void handle(SiteInfo& site, const protocol::Header& header, const std::string& body);
  // Whether `site` may upload its update for `round` now (its credit is still good).
  bool wants_upload(const std::string& site, int round) const;

  // Moves the job on: opens, closes and persists rounds, evaluates, finishes or fails it.
  void tick();
  void abort(const std::string& by);
  void drain();

  bool done() const { return phase_ == Phase::done; }
  bool uses(const std::string& site) const;
  const std::string& id() const { return record_.id(); }
  // What it is doing, for operators: "waiting for sites (1 of 2 ready)", "round 3 of 8", ...
  std::string activity() const;
  // The open round's sites, answered or awaited; nothing while no round is open.
  std::optional<RoundSites> round_sites() const;

 private:
  enum class Phase { waiting, collecting, waiting_for_evaluation, evaluating, done };

  // One move of the phase machine; tick() repeats it while the phase changes.
  void step();
  void step_waiting(Clock::time_point now);            // for enough ready sites, then round 1 (or the next)
  void step_before_evaluation(Clock::time_point now);  // for the evaluation sites
  void step_collecting(Clock::time_point now);         // a round's (or evaluation's) answers, to its deadline
  std::vector<std::string> ready_sites(bool training) const;
  // What `site` did with this job on its current session; null when it was never offered it.
  const Participation* participation_of(const std::string& site) const;
  // `site` cannot run the job (it said so, or what it declared is refused): not ready, not
  // waited for, and out of the open round, named in its missing; a new offer clears it.
  void cannot_run(const std::string& site, Participation& p, protocol::FailureCode code, const std::string& rule,
                  const std::string& reason);
  // Why `site` is not in a training (or evaluation) round now; nothing when it can be.
  std::optional<std::string> why_not_in(const std::string& site, bool training) const;
  bool trains(const std::string& site) const;
  // The fewest sites a training round opens with: min_sites, and under secure aggregation at
  // least secagg::minimum_sum of the job's sites (a job of three or more never sums two).
  int sites_needed() const;
  std::string needed_text() const;  // "min_sites 2", or "the 3 secure aggregation needs"
  // Each training site of the job that is not ready, and why (offline, awaiting approval at the
  // site, preparing, cannot run it, has no training samples); and the same as one line
  // ("amsterdam awaiting approval at the site, singapore offline"), empty when all are ready.
  std::vector<std::pair<std::string, std::string>> sitting_out() const;
  std::string not_ready() const;
  // `sites` less those whose declared samples exceed the job's max_sample_share of their total
  // (each named in the round as refused, with its share).
  std::vector<std::string> within_sample_share(std::vector<std::string> sites);
  bool evaluates(const std::string& site) const;
  void offer(SiteInfo& site);
  void open_round();
  void open_evaluation(bool interim);
  // Sends `body` to `site` if it is connected; false when it is not.
  bool send_to(const std::string& site, protocol::MessageType type, const Broadcast& body);
  void ask(const std::string& site);
  // steps_by_share: the local steps `site` was asked for this round; its weight in the round's
  // average (aggregation.h); and the averaged model's parameters moved `move_scale` times as far
  // from the global model (recorded in the round).
  int steps_asked(const std::string& site) const;
  double weight_of(const std::string& site, std::int64_t samples) const;
  void stretch_moves(TensorSet& averaged);
  void close_round();
  // Steps the global model with the round's averages, persists the round and moves on.
  void commit_round(TensorSet averaged, std::optional<TensorSet> grads);
  void close_evaluation();
  // Secure aggregation (secure_aggregation: true; job_run_secure.cpp): the round's key and share
  // stages, then, once the masked updates are in, the unmasking (secagg.h); the coordinator only
  // relays. open_secure asks `sites` for their keys (false: the job failed); secure_stages moves
  // the stages on while the round collects (true when that was the step: a stage moved, or the
  // round failed because too few sites are left for its sum).
  bool open_secure(const protocol::RoundTask& task, const std::vector<std::string>& sites);
  bool secure_stages(Clock::time_point now);
  void secure_step(Clock::time_point now);
  void secure_unmask();
  void handle_secagg(SiteInfo& site, const protocol::Header& h, const std::string& body);
  void handle_update(SiteInfo& site, const std::string& body);
  void handle_ready(SiteInfo& site, Participation& p, const std::string& body);
  std::string secure_activity() const;  // "secure aggregation: 2 of 3 sites' keys in", ...
  void finish();
  void fail(const std::string& why);
  void stop_after_round();
  void say_goodbye(const std::string& reason);
  // The round's sites: every ready one, or a sample of them (sites_per_round / fraction).
  std::vector<std::string> sample(std::vector<std::string> ready) const;

  struct Secure;  // a secure round's aggregator and stage
  std::unique_ptr<Secure> secure_;
  struct Model;  // LibTorch-free handles of the model, discriminator and averages
  JobRecord& record_;
  JobHost& host_;
  std::unique_ptr<Model> model_;
  Phase phase_ = Phase::waiting;
  Clock::time_point phase_start_{}, deadline_{}, give_up_{};
  Broadcast offer_;
  Broadcast task_;
  int round_ = 0;           // the round open (rounds + 1 for the evaluation)
  int needed_ = 1;
  std::set<std::string> expected_, answered_;
  std::map<std::string, int> steps_asked_;  // steps_by_share: the round's steps per site
  RoundRecord current_;
  std::vector<EvaluationRow> evaluation_;
  std::map<std::string, protocol::QualitySummary> quality_;  // the sites' label-free quality reports, by site
  std::vector<std::string> evaluation_missing_;  // the final evaluation's sites that sat it out, and why
  std::string stop_by_;     // abort: who asked
  bool abort_ = false, drain_ = false, resumed_ = false;
  bool interim_ = false;    // the evaluation open is one of evaluate_every's, not the final one
  std::shared_ptr<spdlog::logger> log_;
};

}  // namespace fedda::coordinator
