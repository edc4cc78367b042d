#pragma once
// Pieces shared by the centralized trainers (engine.cpp) and the federated site trainer
// (site_trainer.cpp). Private; LibTorch inside.

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "data.h"
#include "model_io.h"
#include "fedda/models/engine.h"
#include "networks.h"
#include "wire.h"

namespace fedda::models {

// A model file loaded for inference on `device_name` in `precision` (precision.h).
struct InferenceModel {
  LoadedModel model;
  torch::Device device{torch::kCPU};
};
Result<InferenceModel> load_for_inference(const std::filesystem::path& model, const std::string& device_name,
                                          const std::string& precision);

// Where a scan's slices hold brain, as the network is run on them: `slices` the slices with any
// brain, [y0, y1) x [x0, x1) the brain's in-plane bounding box over all of them grown by `margin`
// pixels on each side, its corners on multiples of `stride` (the U-Net's 2^depth, so pooling
// sees the same windows as on the whole grid), inside the grid. A side whose size is not a
// multiple of `stride` is kept whole.
struct BrainCrop {
  std::vector<std::int64_t> slices;
  std::int64_t y0 = 0, y1 = 0, x0 = 0, x1 = 0;
  // Pixels the network sees over the pixels of the whole grid (every slice).
  double pixel_share(const torch::Tensor& brain) const;
};
BrainCrop brain_crop(const torch::Tensor& brain, std::int64_t stride, std::int64_t margin);

// The margin inference uses around the brain (pixels): benchmarks/fedda_bench.cpp --crop-data
// measures what it changes inside the brain (docs/performance.md, "Crop to the brain").
constexpr std::int64_t kBrainCropMargin = 16;

// Probability of WMH for every slice of a scan, on the model grid (inference mode). With the
// scan's `brain` mask [S, H, W], the network runs on brain_crop's box of the slices with brain
// only (margin `margin`), and p is 0 elsewhere; without it, on every pixel. `mirror`: the mean of
// p on the slices and on their left-right mirror images, mirrored back (test-time mirroring).
torch::Tensor predict(UNet& net, const torch::Tensor& images, const torch::Device& device, double temperature = 1.0,
                      const torch::Tensor& brain = {}, std::int64_t margin = kBrainCropMargin, bool mirror = false);

// Stores a teacher's p(WMH) [S, H, W] as the scan's soft labels (half precision), takes the
// slices it calls lesion (p > 0.5 anywhere) as the scan's lesion slices, and drops its labels.
void set_soft_labels(ScanSlices& scan, const torch::Tensor& p);

// Teacher's tempered p(WMH) per slice (half precision) and the slices it calls lesion.
void attach_soft_labels(UNet& teacher, std::vector<ScanSlices>& scans, double temperature, const torch::Device& device);

// Batch-norm running statistics of `net` recomputed as the cumulative average over every slice
// of `scans` (AdaBN), with the weights as they are; `net` ends in eval mode.
void recompute_batch_norm(UNet& net, const std::vector<ScanSlices>& scans, const torch::Device& device);

// The segmenter's optimiser as `recipe` says: Adam, or SGD with Nesterov momentum and weight decay.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& parameters,
                                                        const Recipe& recipe, double learning_rate);
// The clipping norm descend() is given under `recipe` (0: none; only SGD clips).
double gradient_clip(const Recipe& recipe);
// The recipe batches are drawn with: `recipe`, or its augmentation off when `augment` is false.
Recipe sampling_recipe(const Recipe& recipe, bool augment);
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

// One optimiser update on `loss`, its gradients' global L2 norm clipped to `clip` when positive;
// returns the loss's value.
double descend(torch::optim::Optimizer& optimizer, const torch::Tensor& loss, double clip = 0);

// Segments each labelled subject with `net` and scores it in its own geometry; `dice_only`
// computes the DSC alone (the other metrics NaN), for learning curves; `mirror` as predict's.
Result<std::vector<SubjectScore>> score_subjects(UNet& net, const ModelSpec& spec,
                                                 const std::vector<imaging::SubjectFiles>& subjects,
                                                 const torch::Device& device, bool dice_only = false, bool mirror = false);

}  // namespace fedda::models
