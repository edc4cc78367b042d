#include "weight_average.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "wire.h"

namespace fedda::models {

WeightAverage::WeightAverage(UNet& net, double decay) : decay_(decay) {
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : state_of(*net)) values_.emplace_back(name, t.detach().clone());
}

void WeightAverage::update(UNet& net) {
  torch::NoGradGuard no_grad;
  const double d = std::min(decay_, (1.0 + static_cast<double>(steps_)) / (10.0 + static_cast<double>(steps_)));
  ++steps_;
  const auto live = state_of(*net);
  for (std::size_t i = 0; i < live.size(); ++i) {
    auto& value = values_[i].second;
    if (value.is_floating_point()) {
      value.mul_(d).add_(live[i].second.detach(), 1.0 - d);
    } else {
      value.copy_(live[i].second);
    }
  }
}

void WeightAverage::swap(UNet& net) {
  torch::NoGradGuard no_grad;
  const auto live = state_of(*net);
  for (std::size_t i = 0; i < live.size(); ++i) {
    auto kept = live[i].second.detach().clone();
    live[i].second.detach().copy_(values_[i].second);
    values_[i].second.copy_(kept);
  }
}

void WeightAverage::save(torch::serialize::OutputArchive& archive) const {
  archive.write("steps", c10::IValue(steps_));
  // By position: LibTorch's archives take no dots in a key, and the tensors' names have them.
  for (std::size_t i = 0; i < values_.size(); ++i) archive.write(std::to_string(i), values_[i].second, true);
}

void WeightAverage::load(torch::serialize::InputArchive& archive) {
  c10::IValue steps;
  archive.read("steps", steps);
  steps_ = steps.toInt();
  for (std::size_t i = 0; i < values_.size(); ++i) {
    torch::Tensor value;
    archive.read(std::to_string(i), value, true);
    if (value.sizes() != values_[i].second.sizes()) {
      throw std::runtime_error("the averaged '" + values_[i].first + "' has another shape");
    }
    values_[i].second.copy_(value);
  }
}

}  // namespace fedda::models
