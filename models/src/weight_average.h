#pragma once
// The weights averaged over a run's steps (recipe key weight_average). Private; LibTorch inside.
//
// An exponential moving average of every parameter and batch-norm statistic (Polyak averaging),
// its decay warmed up as min(decay, (1 + n) / (10 + n)) at step n so that the first steps do
// not leave the initial weights in it. Integer buffers (batch norm's step count) are copied.
// Training never reads it: the trajectory is the same with and without, and only what is
// scored and saved changes. It travels in the checkpoint, so a resumed run averages exactly as
// an uninterrupted one.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "networks.h"

namespace fedda::models {

class WeightAverage {
 public:
  WeightAverage(UNet& net, double decay);
  // After each optimiser step.
  void update(UNet& net);
  // Exchanges the network's weights and the averaged ones (twice restores them).
  void swap(UNet& net);
  void save(torch::serialize::OutputArchive& archive) const;
  void load(torch::serialize::InputArchive& archive);  // throws, as LibTorch's own loads, on a mismatch

 private:
  double decay_;
  std::int64_t steps_ = 0;
  std::vector<std::pair<std::string, torch::Tensor>> values_;  // state_of(net)'s order (wire.h)
};

}  // namespace fedda::models
