#pragma once
// The training engine's federated face, free of LibTorch: the site's local trainer. SiteTrainer
// holds one job's scans (and soft labels) in memory and trains rounds from the weights it is
// given (TensorSets, what crosses the network); its optimiser state persists across rounds.
// The coordinator's side (weights files, the discriminator step) is in weights.h, a library
// without the imaging stack. Not thread-safe; use one per thread.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/common/tensors.h"
#include "fedda/imaging/dataset.h"
#include "fedda/models/engine.h"
#include "fedda/models_core/model_spec.h"
#include "fedda/models_core/weights.h"
#include "fedda/common/protocol.h"
#include "fedda/models_core/precision.h"
#include "fedda/models_core/recipe.h"

namespace fedda::models {

// A job's learning settings (the fields of LearningSettings, by their names in JobSpec), and the
// same written into a job.
LearningSettings learning_settings(const protocol::JobSpec& job);
void set_learning_settings(protocol::JobSpec& job, const LearningSettings& settings);

// What a site's trainer runs: the job's learning settings (learning_settings) and the rest.
struct SiteJobOptions : LearningSettings {
  protocol::JobType type = protocol::JobType::teacher;
  ModelSpec spec;
  std::vector<imaging::SubjectFiles> train;       // scans the site trains on
  std::vector<imaging::SubjectFiles> evaluation;  // labelled scans scored in evaluation rounds
  bool labelled = false;  // train scans' labels drive the loss (teacher; ada at the source)
  int domain = 0;         // ada: 0 = source, 1 = target
  Recipe recipe;                    // augmentation, patches, optimiser (recipe.h); the schedule is the coordinator's
  std::uint64_t seed = 1;
  std::string device = "cpu";
  std::string precision = "auto";   // auto | float32 | bfloat16 (precision.h); updates are float32 either way
  int threads = 0;
  std::filesystem::path cache_dir;  // soft labels are kept here between restarts; empty: none
  std::string storage_key;          // 32 bytes: cache files are sealed with AES-256-GCM; empty: plain
  // Differential privacy (teacher, kd and ada): DP-SGD with the patient as the unit (dp_sgd.h); off
  // when dp.clip_norm is 0. `planned_steps` (the job's rounds x local_steps) is what a target
  // epsilon is spread over.
  protocol::DpSpec dp;
  long long planned_steps = 0;
};

// What a DP job gives this site's patients, as the trainer resolved it.
struct DpGuarantee {
  bool on = false;
  double noise_multiplier = 0, sample_rate = 0, clip_norm = 0, delta = 0;
  double planned_epsilon = 0;  // after the job's planned steps
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
  const PrecisionChoice& precision() const;  // what it computes in, and why
  int training_subjects() const;
  int evaluation_subjects() const;
  const DpGuarantee& dp() const;

  // `steps` optimiser steps from `model` (ada: with `discriminator` fixed, whose gradient on
  // this site's outputs is returned). Randomness is seeded by (seed, round).
  Result<LocalUpdate> train(int round, const TensorSet& model, const TensorSet& discriminator, int steps,
                            double learning_rate, double adversarial_weight);
  Result<std::vector<SubjectScore>> evaluate(const TensorSet& model);
  // `model` as this site evaluates it: under FedBN with the site's own batch-norm tensors.
  Result<TensorSet> as_evaluated(const TensorSet& model);

 private:
  struct Impl;
  explicit SiteTrainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedda::models
