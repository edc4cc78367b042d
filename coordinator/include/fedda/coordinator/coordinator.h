#pragma once
// The coordinator: one per consortium. Binds a ZeroMQ ROUTER that site agents connect to
// (outbound from the hospitals), keeps a registry of connected sites with heartbeats, and runs
// jobs in rounds: it sends the global model, collects each site's update through credit-based
// uploads, averages them sample-weighted as they arrive (FedAvg, one running sum whatever the
// number of sites), and for ADA steps the discriminator with the averaged gradients. It never
// sees an image, a label or a soft label.
//
// After every round the job's state (global weights, discriminator and its optimiser, per-round
// records) is written atomically under `out/<job id>/`, the weights and discriminator sealed
// with AES-256-GCM when the consortium has kits; running the same job again resumes
// from the last finished round, and a finished job is not run twice.
//
// Single-threaded: one thread calls start() and run(); stop() may be called from a signal
// handler (it only sets a flag).

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "fedda/common/protocol.h"
#include "fedda/common/result.h"
#include "fedda/coordinator/job_file.h"

namespace fedda::coordinator {

struct CoordinatorOptions {
  std::string bind = "tcp://127.0.0.1:5570";   // ZeroMQ endpoint; port 0 picks a free one
  std::filesystem::path out = "fedda-jobs";    // one folder per job
  std::filesystem::path endpoint_file;         // if set: the bound endpoint is written here
  std::vector<std::string> allowed_sites;      // registry; empty admits any site id
  std::chrono::milliseconds heartbeat{protocol::kDefaultHeartbeatMs};
  int liveness = protocol::kDefaultLiveness;
  std::size_t max_message_bytes = protocol::kDefaultMaxMessageBytes;
  std::chrono::seconds start_timeout{900};     // waiting for min_sites before a round
  int max_concurrent_uploads = 2;
  // Consortium kit (fedda-admin provision): when set, the socket is CurveZMQ with a ZAP handler
  // that admits only provisioned site keys (running before the socket binds), a site's
  // identity is its key's, and every model sent is signed with the coordinator's key.
  std::filesystem::path kit;
};

struct EvaluationRow {
  std::string site;
  protocol::SubjectMetrics metrics;
};

struct JobOutcome {
  std::string id;
  int rounds = 0;
  std::filesystem::path model;       // final global model (a fedda model file)
  std::filesystem::path results_csv; // empty when not evaluated
  std::vector<EvaluationRow> evaluation;
  double seconds = 0;
  bool resumed = false;
};

class Coordinator {
 public:
  // Binds; error names the endpoint.
  static Result<std::unique_ptr<Coordinator>> start(const CoordinatorOptions& options);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  std::string endpoint() const;
  // Runs (or resumes, or reports an already finished) job to its end.
  Result<JobOutcome> run(const JobDefinition& job);
  // Tells connected sites the coordinator is leaving.
  void say_goodbye(const std::string& reason);
  // Asks run() to stop after the current step (async-signal-safe).
  void stop();

 private:
  struct Impl;
  explicit Coordinator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedda::coordinator
