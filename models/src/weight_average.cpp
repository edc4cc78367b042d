#include "weight_average.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace fedda::models {
namespace {

std::vector<torch::Tensor> tensors(UNet& net) {
  auto all = net->parameters();
  for (const auto& b : net->buffers()) all.push_back(b);
  return all;
}

}  // namespace

WeightAverage::WeightAverage(UNet& net, double decay) : decay_(decay) {
  torch::NoGradGuard no_grad;
  for (const auto& t : tensors(net)) values_.push_back(t.detach().clone());
}

void WeightAverage::update(UNet& net) {
  torch::NoGradGuard no_grad;
  const double d = std::min(decay_, (1.0 + static_cast<double>(steps_)) / (10.0 + static_cast<double>(steps_)));
  ++steps_;
  const auto live = tensors(net);
  for (std::size_t i = 0; i < live.size(); ++i) {
    if (values_[i].is_floating_point()) {
      values_[i].mul_(d).add_(live[i].detach(), 1.0 - d);
    } else {
      values_[i].copy_(live[i]);
    }
  }
}

void WeightAverage::swap(UNet& net) {
  torch::NoGradGuard no_grad;
  const auto live = tensors(net);
  for (std::size_t i = 0; i < live.size(); ++i) {
    auto kept = live[i].detach().clone();
    live[i].detach().copy_(values_[i]);
    values_[i].copy_(kept);
  }
}

void WeightAverage::save(torch::serialize::OutputArchive& archive) const {
  archive.write("steps", c10::IValue(steps_));
  for (std::size_t i = 0; i < values_.size(); ++i) archive.write(std::to_string(i), values_[i], true);
}

void WeightAverage::load(torch::serialize::InputArchive& archive) {
  c10::IValue steps;
  archive.read("steps", steps);
  steps_ = steps.toInt();
  for (std::size_t i = 0; i < values_.size(); ++i) {
    torch::Tensor value;
    archive.read(std::to_string(i), value, true);
    if (value.sizes() != values_[i].sizes()) throw std::runtime_error("averaged tensor " + std::to_string(i) + " has another shape");
    values_[i].copy_(value);
  }
}

}  // namespace fedda::models
