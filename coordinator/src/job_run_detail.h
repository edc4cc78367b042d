#pragma once
// JobRun's private parts, shared by job_run.cpp (offers, rounds, evaluation, the record) and
// job_run_secure.cpp (a secure round's key, share and unmasking stages): the model's handles, a
// secure round's state and the time helpers. Part of the coordinator library; not installed.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "fedda/common/aggregation.h"
#include "fedda/common/secagg.h"
#include "fedda/models_core/weights.h"
#include "job_run.h"
#include "server_optimizer.h"

namespace fedda::coordinator {

struct JobRun::Secure {
  enum class Stage { keys, shares, collecting, unmasking } stage = Stage::keys;
  TensorSet grad_layout;  // ada: the discriminator's parameters (what its gradients are averaged over)
  std::unique_ptr<secagg::Aggregator> aggregator;
  Clock::time_point stage_deadline{};  // on the host's clock
};

struct JobRun::Model {
  models::ModelSpec spec;
  TensorSet global;
  std::unique_ptr<models::DiscriminatorOptimizer> discriminator;
  std::unique_ptr<RunningAverage> model_average, grad_average;
  std::vector<std::string> local_norm;  // FedBN: tensors not averaged (each site keeps its own)
  std::unique_ptr<ServerOptimizer> server;
};

namespace job_run_detail {

// A job's time setting in seconds (round_deadline_s, secagg_timeout_s) as a duration.
inline std::chrono::milliseconds duration_of(double s) { return std::chrono::milliseconds(static_cast<long>(s * 1000)); }

// The work a round's costs count (encoding, averaging, persisting: RoundCost) is timed on the
// steady clock, whatever clock the host schedules the job's deadlines on.
class Stopwatch {
 public:
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace job_run_detail
}  // namespace fedda::coordinator
