#pragma once
// The training engine's federated face, free of LibTorch: model state as TensorSets (what
// crosses the network), the site's local trainer, and the coordinator's discriminator step.
//
// Site side: SiteTrainer holds one job's scans (and soft labels) in memory and trains rounds
// from the weights it is given; its optimiser state persists across rounds. Coordinator side:
// weights are averaged with fedda::RunningAverage; DiscriminatorOptimizer applies averaged
// discriminator gradients (ADA). Neither class is thread-safe; use one per thread.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/common/tensors.h"
#include "fedda/imaging/dataset.h"
#include "fedda/models/engine.h"
#include "fedda/models/model_spec.h"

namespace fedda::models {

// Fresh weights of the spec's U-Net / of the ADA discriminator (seeded).
Result<TensorSet> new_model_weights(const ModelSpec& spec, std::uint64_t seed);
Result<TensorSet> new_discriminator_weights(const ModelSpec& spec, std::uint64_t seed);

struct StoredModel {
  ModelSpec spec;
  TensorSet weights;
};
Result<StoredModel> read_model_weights(const std::filesystem::path& model);
// Writes a regular fedda model file (usable by `fedda-agent segment`); error when the weights
// do not fit the spec's architecture.
Status write_model_weights(const std::filesystem::path& path, const ModelSpec& spec, const TensorSet& weights);

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
  // `storage_key` the file is sealed with AES-256-GCM and a tampered one is refused.
  Status save(const std::filesystem::path& path, const std::string& storage_key = {}) const;
  Status load(const std::filesystem::path& path, const std::string& storage_key = {});

 private:
  struct Impl;
  explicit DiscriminatorOptimizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct SiteJobOptions {
  std::string type;  // teacher | kd | ada | evaluate
  ModelSpec spec;
  std::vector<imaging::SubjectFiles> train;       // scans the site trains on
  std::vector<imaging::SubjectFiles> evaluation;  // labelled scans scored in evaluation rounds
  bool labelled = false;  // train scans' labels drive the loss (teacher; ada at the source)
  int domain = 0;         // ada: 0 = source, 1 = target
  int batch_size = 8;
  double lesion_slice_fraction = 0.5;
  bool augment = true;
  double dice_weight = 1.0;
  double temperature = 2.0;
  std::uint64_t seed = 1;
  std::string device = "cpu";
  int threads = 0;
  std::filesystem::path cache_dir;  // soft labels are kept here between restarts; empty: none
  std::string storage_key;          // 32 bytes: cache files are sealed with AES-256-GCM; empty: plain
};

struct SkippedScan {
  std::string subject;  // clinic/subject id
  std::string reason;   // local detail; stays in the site's log
};

struct LocalUpdate {
  TensorSet model;
  TensorSet discriminator_grads;  // ada: mean over the round's steps
  std::int64_t samples = 0;       // training slices at the site
  int steps = 0;
  double loss = 0;                // mean over the round's steps
  double seconds = 0;
};

class SiteTrainer {
 public:
  // Loads and validates every scan; one that fails is skipped and listed, not fatal (error
  // only when no usable training scan is left for a training job). For kd, computes the
  // teacher's soft labels (or reads them from the cache when the same teacher made them).
  static Result<std::unique_ptr<SiteTrainer>> open(const SiteJobOptions& options, const TensorSet& teacher);
  ~SiteTrainer();

  const std::vector<SkippedScan>& skipped() const;
  std::int64_t samples() const;
  int training_subjects() const;
  int evaluation_subjects() const;

  // `steps` optimiser steps from `model` (ada: with `discriminator` fixed, whose gradient on
  // this site's outputs is returned). Randomness is seeded by (seed, round).
  Result<LocalUpdate> train(int round, const TensorSet& model, const TensorSet& discriminator, int steps,
                            double learning_rate, double adversarial_weight);
  Result<std::vector<SubjectScore>> evaluate(const TensorSet& model);

 private:
  struct Impl;
  explicit SiteTrainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedda::models
