#pragma once
// The coordinator's step from the sites' averaged model to the next global one (Reddi et al.
// 2021, "Adaptive federated optimization"): fedavg takes the average as it is; fedadam and
// fedyogi treat delta = average - global as a pseudo-gradient and move the global model by
// server_lr * m / (sqrt(v) + tau), with m and v the first and second moment estimates (beta1 0.9,
// beta2 0.99, tau 1e-3; Yogi's v moves by sign(v - delta^2) * delta^2). Parameters only; buffers
// (batch-norm running statistics, counters) are taken as averaged. The moments persist with the
// round's state, so a restarted coordinator continues the same trajectory. Not thread-safe.

#include <map>
#include <vector>

#include "fedda/common/protocol.h"
#include "fedda/common/result.h"
#include "fedda/common/tensors.h"

namespace fedda::coordinator {

class ServerOptimizer {
 public:
  ServerOptimizer(protocol::ServerOptimizer kind, double learning_rate);
  // The next global model; error when the layouts differ.
  Result<TensorSet> step(const TensorSet& global, const TensorSet& average);
  // The moments as a tensor set ("m/<name>", "v/<name>"), and back.
  TensorSet state() const;
  Status restore(const TensorSet& state);
  bool adaptive() const { return kind_ != protocol::ServerOptimizer::fedavg; }

 private:
  protocol::ServerOptimizer kind_;
  double learning_rate_;
  std::map<std::string, std::vector<float>> m_, v_;
};

}  // namespace fedda::coordinator
