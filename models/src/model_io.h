#pragma once
// Model and checkpoint files (private; LibTorch inside). Writes go through a temporary name.

#include <filesystem>
#include <string>

#include <torch/torch.h>

#include "fedda/common/result.h"
#include "fedda/models_core/model_spec.h"
#include "networks.h"

namespace fedda::models {

struct LoadedModel {
  ModelSpec spec;
  UNet net{nullptr};
  std::string quality;  // the label-free quality estimator's JSON (quality.h), empty when none
};

// `quality`: an estimator's JSON to carry (quality.h); a model saved after training has none,
// since an estimator belongs to the weights it was fitted for.
Status save_model(const std::filesystem::path& path, const ModelSpec& spec, UNet& net, const std::string& quality = {});
Result<LoadedModel> load_model(const std::filesystem::path& path, const torch::Device& device);

class WeightAverage;

// Training state: model, optimizer and the number of finished epochs (plus a discriminator
// and its optimizer for ADA, and the averaged weights when the recipe averages them).
struct Checkpoint {
  int finished_epochs = 0;
};
Status save_checkpoint(const std::filesystem::path& path, const ModelSpec& spec, UNet& net,
                       torch::optim::Optimizer& optimizer, int finished_epochs, Discriminator* discriminator = nullptr,
                       torch::optim::Optimizer* discriminator_optimizer = nullptr, const WeightAverage* average = nullptr);
Result<Checkpoint> load_checkpoint(const std::filesystem::path& path, UNet& net, torch::optim::Optimizer& optimizer,
                                   Discriminator* discriminator = nullptr,
                                   torch::optim::Optimizer* discriminator_optimizer = nullptr,
                                   WeightAverage* average = nullptr);

// The device a workload runs on: cpu, cuda or cuda:N. Every LibTorch workload of fedda starts
// here, so this is also where the process's allocator is set up for it (reuse_freed_tensor_memory).
Result<torch::Device> parse_device(const std::string& device);

// Tensors of up to 32 MB come from glibc's heap and freed heap memory is kept for the next step,
// instead of each large activation being a fresh mmap whose pages the kernel faults in and zeroes
// again on every step (12% of a training step's time here; with this setting the step is 21%
// faster, docs/performance.md). Resident memory stays at the working set's peak. Once per
// process; does nothing without glibc.
void reuse_freed_tensor_memory();

}  // namespace fedda::models
