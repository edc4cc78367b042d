#pragma once
// The training engine every site agent runs, and the centralized reference, behind a
// LibTorch-free interface: callers pass subjects, a configuration and file paths; models and
// checkpoints are files. Scenarios of the seed paper:
//   train_supervised  teacher / L-bound (source labels), U-bound (source + target labels)
//   train_kd          student distilled from a teacher's soft labels at temperature T on the
//                     union of source and (unlabelled) target scans (eq. 3 of the paper)
//   train_ada         adversarial adaptation: discriminator on the segmenter's output,
//                     source vs target, segmenter penalised by its success (weight warm-up)
// "KD from an ADA teacher" is train_kd with an ADA model as teacher; "on the fly" is
// train_kd / train_ada with a single target subject and the teacher fixed.
// Functions are not re-entrant with respect to LibTorch's global thread setting; run one
// training per process at a time.

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/common/settings.h"
#include "fedda/imaging/dataset.h"
#include "fedda/imaging/metrics.h"
#include "fedda/models_core/model_spec.h"
#include "fedda/models_core/recipe.h"

namespace fedda::models {

// How a model learns, where a job (protocol::JobSpec, by the same names) and the centralized
// harness (TrainConfig) say the same thing. A site reads them from its job (learning_settings,
// federated.h); the experiment writes its federated cells' from their centralized twin's
// (set_learning_settings), so the two modes of a cell cannot drift apart.
struct LearningSettings {
  int batch_size = 8;
  double dice_weight = 1.0;      // supervised loss = cross-entropy + dice_weight * soft Dice
  double lesion_slice_fraction = 0.5;  // share of sampled slices that contain (predicted) lesion
  bool augment = true;           // false: the recipe's augmentation off (patches, optimiser, schedule kept)
  double temperature = 2.0;      // KD
  protocol::KdLoss kd_loss = protocol::KdLoss::hinton;  // hinton: T^2 KL(softmax(t/T) || softmax(s/T)); paper: eq. 3 as written,
                                    // cross-entropy of softmax(t/T) and the student's softmax at T = 1
  double kd_hard_weight = 0;        // + this x (cross-entropy + soft Dice) on the teacher's confident voxels
  double kd_confidence = 0.5;       // confident: teacher p(WMH) >= c or <= 1 - c; 0.5: every voxel
  // kd / ada: shared, or local: each site's own batch-norm statistics. At a site (FedBN) its
  // batch-norm tensors stay its own across rounds (the model it is sent brings the rest) and
  // score its evaluation; in the centralized harness (AdaBN) the running statistics are
  // recomputed on the target's scans after training.
  protocol::BnStatistics bn_statistics = protocol::BnStatistics::shared;
  // Scoring (curves, the harness's final score, evaluation sites): p(WMH) the mean of the model's
  // on the slices and on their left-right mirror images, mirrored back (nnU-Net's test-time mirroring).
  bool test_time_mirroring = false;

  bool local_batch_norm() const { return bn_statistics == protocol::BnStatistics::local; }
};

struct TrainConfig : LearningSettings {
  UNetSpec unet;                 // architecture of a new model
  GridSpec grid;        // preprocessing grid of a new model
  int epochs = 20;
  int steps_per_epoch = 32;      // batches per epoch
  double learning_rate = 1e-3;   // the optimiser's initial step size (recipe.optimizer: Adam or SGD)
  int decay_epoch = -1;          // step schedule: lr *= decay_factor from this epoch on; -1: 3/8 of epochs (paper: 150 of 400)
  double decay_factor = 0.1;
  Recipe recipe;                 // augmentation, patches, optimiser, schedule, prefetch (recipe.h; classic by default)
  protocol::StudentInit kd_init = protocol::StudentInit::teacher;  // student starts from: teacher | scratch
  std::vector<imaging::SubjectFiles> curve_subjects;  // if set: scored every curve_every epochs (learning curve)
  int curve_every = 0;
  std::filesystem::path init_model; // supervised: fine-tune this model (its architecture and grid) instead of a new one
  double ada_weight = 0.1;       // ADA: adversarial weight after warm-up
  int ada_warmup_epochs = 5;
  std::uint64_t seed = 1;
  std::string device = "cpu";    // cpu | cuda
  std::string precision = "auto";  // auto | float32 | bfloat16 (precision.h)
  int threads = 0;               // intra-op threads; 0 = LibTorch's default
  std::filesystem::path checkpoint;  // if set: saved after every epoch, resumed from when present
};

struct EpochReport {
  int epoch = 0;        // 1-based
  double loss = 0;      // mean training loss of the epoch
  double seconds = 0;
  double slices_per_second = 0;
  double curve_dsc = NAN;  // mean Dice on curve_subjects after this epoch, when it was scored
  // With the recipe's weight_average: the same for the weights as trained (not averaged), at the
  // last epoch's score only.
  double curve_dsc_unaveraged = NAN;
  double learning_rate = 0;
  // Share of the epoch's training time the training thread spent preparing batches (without
  // prefetch) or waiting for the thread that prepares them (with it).
  double data_wait_share = 0;
};

struct TrainReport {
  std::vector<EpochReport> epochs;
  double seconds = 0;
  int resumed_from_epoch = 0;  // 0 when training started fresh
  std::string precision, precision_reason;  // what it computed in, and why (precision.h)
};

using ProgressFn = std::function<void(const EpochReport&)>;

// Supervised training on labelled subjects (all must have labels). `role` is recorded in the
// model file (teacher, lbound, ubound).
Result<TrainReport> train_supervised(const std::vector<imaging::SubjectFiles>& labelled, const TrainConfig& config,
                                     const std::filesystem::path& model_out, const std::string& role = "teacher",
                                     const ProgressFn& progress = {});

// Distillation: soft labels of `teacher` on every slice of `source` and `target` (their labels,
// if any, are not used), student of the teacher's architecture.
Result<TrainReport> train_kd(const std::filesystem::path& teacher, const std::vector<imaging::SubjectFiles>& source,
                             const std::vector<imaging::SubjectFiles>& target, const TrainConfig& config,
                             const std::filesystem::path& model_out, const ProgressFn& progress = {});

// Adversarial adaptation from `initial` (a trained segmenter, or empty for a new one) with
// labelled `source` and unlabelled `target`.
Result<TrainReport> train_ada(const std::optional<std::filesystem::path>& initial,
                              const std::vector<imaging::SubjectFiles>& source,
                              const std::vector<imaging::SubjectFiles>& target, const TrainConfig& config,
                              const std::filesystem::path& model_out, const ProgressFn& progress = {});

struct SubjectScore {
  std::string clinic;
  std::string subject;
  imaging::CaseMetrics metrics;
};

// Mean Dice of `scores` over the subjects where it is defined (no WMH in truth or prediction
// leaves it undefined); NaN when it is nowhere. `counted`, if given, receives how many counted.
double mean_dice(const std::vector<SubjectScore>& scores, int* counted = nullptr);

// Segments each labelled subject and scores it in its own geometry; `mirror`: test-time mirroring
// (TrainConfig::test_time_mirroring).
Result<std::vector<SubjectScore>> evaluate_model(const std::filesystem::path& model,
                                                 const std::vector<imaging::SubjectFiles>& subjects,
                                                 const std::string& device = "cpu", const std::string& precision = "auto",
                                                 bool mirror = false);

// Segments one scan; the output has the FLAIR's exact geometry (0 background, 1 WMH).
Status segment_scan(const std::filesystem::path& model, const std::filesystem::path& flair,
                    const std::filesystem::path& t1, const std::filesystem::path& out,
                    const std::string& device = "cpu", const std::string& precision = "auto");

// Reads only a model file's spec; error names the file.
Result<ModelSpec> read_model_spec(const std::filesystem::path& model);

// Whether this LibTorch can run on `device` ("cpu", "cuda"); error says why not.
Status check_device(const std::string& device);

}  // namespace fedda::models
