#pragma once
// Model weights as the coordinator handles them, free of LibTorch and of the imaging stack
// (library fedda::models_core: fedda-coordinator links neither ITK nor the training engine):
// fresh weights of an architecture, fedda model files read and written as TensorSets (what
// crosses the network), and the ADA discriminator's optimiser at the coordinator, which applies
// the sites' averaged gradients. Weights are averaged with fedda::RunningAverage (tensors.h).
// DiscriminatorOptimizer is not thread-safe; use one per thread.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/common/tensors.h"
#include "fedda/models_core/model_spec.h"

namespace fedda::models {

// Fresh weights of the spec's U-Net / of the ADA discriminator (seeded).
Result<TensorSet> new_model_weights(const ModelSpec& spec, std::uint64_t seed);
Result<TensorSet> new_discriminator_weights(const ModelSpec& spec, std::uint64_t seed);

// Names of the spec's batch-norm tensors (weights, biases, running statistics, counters) in a
// TensorSet of its U-Net: what stays at each site under bn_statistics: local (FedBN).
std::vector<std::string> batch_norm_tensors(const ModelSpec& spec);

struct StoredModel {
  ModelSpec spec;
  TensorSet weights;
  std::string quality;  // the quality estimator's JSON the file carries (quality.h); empty when none
};
Result<StoredModel> read_model_weights(const std::filesystem::path& model);
// Writes a regular fedda model file (usable by `fedda-agent segment`); error when the weights
// do not fit the spec's architecture.
// `quality`: an estimator's JSON to carry (quality.h).
Status write_model_weights(const std::filesystem::path& path, const ModelSpec& spec, const TensorSet& weights,
                           const std::string& quality = {});

// Adam on the discriminator at the coordinator, fed the sites' sample-weighted mean gradients.
class DiscriminatorOptimizer {
 public:
  static Result<std::unique_ptr<DiscriminatorOptimizer>> create(const ModelSpec& spec, const TensorSet& weights,
                                                                double learning_rate);
  ~DiscriminatorOptimizer();
  // Applies `mean_grads` (one per parameter, in parameter order) and returns the new weights.
  Result<TensorSet> step(const TensorSet& mean_grads, double learning_rate);
  Result<TensorSet> weights() const;
  // Optimiser state (moments, step counts) with the weights, for a coordinator restart; with a
  // `storage_key` the file is sealed with AES-256-GCM (`context` bound as associated data, see
  // crypto::write_sealed) and a tampered or swapped one is refused.
  Status save(const std::filesystem::path& path, const std::string& storage_key = {}, const std::string& context = {}) const;
  Status load(const std::filesystem::path& path, const std::string& storage_key = {}, const std::string& context = {});

 private:
  struct Impl;
  explicit DiscriminatorOptimizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedda::models
