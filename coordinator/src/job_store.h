#pragma once
// The coordinator's persistent job queue: one folder per job under STATE/jobs/<id>/, whose
// state.json is the job's whole record (definition, state, rounds so far, who submitted it).
// Every change is written (temporary file, fsync, rename, fsync of the folder) before the
// service acts on it, so a restart replays from disk instead of guessing: queued jobs stay
// queued, a running job resumes from its last finished round, finished ones are not rerun.
//
//   STATE/jobs/<id>/state.json     the record (format 2)
//   STATE/jobs/<id>/rounds.jsonl   one line per finished round (the same rounds, for readers)
//   STATE/jobs/<id>/job.yaml       the job file as submitted
//   STATE/jobs/<id>/round-NNNN.*   the last finished round's weights (sealed with a kit)
//   STATE/jobs/<id>/model.pt, results.csv, summary.json   a finished job's outputs
//   STATE/teachers/<sha256>.pt     teacher models submitters sent (once per model)
//
// Owned by the service's one thread; not thread-safe.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "fedda/common/result.h"
#include "fedda/coordinator/job_file.h"

namespace fedda::coordinator {

enum class JobState { queued, running, finished, failed, aborted };
const char* job_state_name(JobState state);
Result<JobState> parse_job_state(const std::string& name);
inline bool terminal(JobState s) { return s == JobState::finished || s == JobState::failed || s == JobState::aborted; }

struct SiteRecord {
  std::string site;
  std::int64_t samples = 0;
  int steps = 0;
  double loss = 0;
  double seconds = 0;           // training at the site
  std::int64_t bytes_up = 0;    // its update's body on the wire
  double overhead_seconds = 0;  // the site's verify, decode and encode
  std::string precision;        // what the site computed in and why ("bfloat16 (auto: ...)")
  double epsilon = -1;          // dp: what the site has spent on the job so far; -1 without dp
  double noise_multiplier = 0;  // dp: the noise it trains with
};

// Where a round's time went, from encoding its task to its state on disk ("span"): the sites'
// training (the slowest site's) and the federation's share, split where fedda can time it.
struct RoundCost {
  double encode_s = 0;     // serialize (+ float16) and sign the task
  double aggregate_s = 0;  // decode the updates and average them
  double persist_s = 0;    // seal and write the round's weights
  double span_s = 0;
  std::int64_t task_bytes = 0;  // the task's body, sent to every site
};

struct RoundRecord {
  int round = 0;
  double seconds = 0;
  double learning_rate = 0;
  std::vector<SiteRecord> sites;
  std::vector<std::string> missing;  // asked but not counted, each "site (why)"
  std::vector<std::pair<std::string, std::string>> refused;  // updates refused: site, why
  std::map<std::string, double> test_dsc;  // evaluate_every: mean Dice per evaluation site after the round
  double move_scale = 1;  // steps_by_share: how far the average's move from the global was stretched (aggregation.h)
  RoundCost cost;
};

// One step of a job's life, as `status` shows it: submitted, started, continued after a restart,
// aborted, resumed, finished or failed; by whom where an operator did it.
struct JobEvent {
  std::int64_t ms = 0;  // wall clock
  std::string what, by;
};

struct JobRecord {
  JobDefinition definition;
  JobState state = JobState::queued;
  std::uint64_t order = 0;          // submission order: the queue's order
  std::string submitted_by;
  std::int64_t submitted_ms = 0, started_ms = 0, ended_ms = 0;
  std::string error;                // failed: why; aborted: by whom
  int finished_round = 0;
  std::vector<RoundRecord> rounds;
  std::vector<JobEvent> history;    // oldest first; persisted with the state
  bool abort_requested = false;     // stop after the current round (not persisted: the state is)

  const std::string& id() const { return definition.spec.id; }
};

// The history as state.json keeps it and `status` shows it: [{ms, what, by?}, ...].
nlohmann::json history_json(const JobRecord& record);

class JobStore {
 public:
  // Reads every job's record; error names a record that cannot be read (the service refuses to
  // start rather than lose or rerun a job).
  static Result<std::unique_ptr<JobStore>> open(const std::filesystem::path& state_dir);

  const std::filesystem::path& root() const { return root_; }
  std::filesystem::path dir(const std::string& id) const { return root_ / "jobs" / id; }

  // A new job, queued and on disk before this returns. `teacher_file`, when not empty, is the
  // teacher model the submitter sent (kept under STATE/teachers/). Error names what is
  // wrong: an id in use, a teacher job that is not known.
  Result<JobRecord*> add(JobDefinition definition, const std::string& submitted_by, const std::string& yaml,
                         const std::string& teacher_file = {});
  JobRecord* find(const std::string& id);
  // Takes a finished, failed or aborted job out of the queue: its folder moves to
  // STATE/deleted/<id>-<ms>/ (nothing is destroyed; the id can be used again) and the record
  // is forgotten. Refused, naming why, for a queued or running job and for one that a job not
  // yet ended distils (teacher: job:<id>). Returns where the folder went.
  Result<std::filesystem::path> archive(const std::string& id);
  // Every job in queue order.
  std::vector<JobRecord*> ordered();

  // Writes the record (rounds.jsonl first, then state.json, each durably).
  Status save(const JobRecord& record);
  // Sets the state (and error, end time), adds the step to the job's history (`by`: the operator
  // who asked, if one did), then saves.
  Status set_state(JobRecord& record, JobState state, const std::string& error = {}, const std::string& by = {});

  // The model file a teacher reference names: job:<id> is that job's model.pt, sha256:<digest> a
  // model a submitter sent; a relative path is relative to the referring job's folder.
  std::filesystem::path teacher_path(const JobRecord& record) const;

 private:
  std::filesystem::path root_;
  std::vector<std::unique_ptr<JobRecord>> jobs_;
  std::uint64_t next_order_ = 1;
};

// rounds.jsonl's "federation": the split of a round's span (see RoundCost) into the slowest
// site's training and the rest.
struct FederationSplit {
  double span_s = 0, training_s = 0, overhead_s = 0, overhead_share = 0, encode_s = 0, site_s = 0, transport_s = 0,
         aggregate_s = 0, persist_s = 0;
  std::int64_t task_bytes = 0;
};
FederationSplit federation_split(const RoundRecord& round);

}  // namespace fedda::coordinator
