#pragma once
// Conversions between LibTorch modules and TensorSets (what crosses the network and the disk),
// private to the models libraries.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "fedda/common/result.h"
#include "fedda/common/tensors.h"

namespace fedda::models {

// A well-mixed 64-bit hash of two values (seeds per epoch, round or site).
std::uint64_t mix(std::uint64_t a, std::uint64_t b);

// Parameters then buffers, in registration order: the order of a model's TensorSet.
std::vector<std::pair<std::string, torch::Tensor>> state_of(torch::nn::Module& module);
WireTensor to_wire(const std::string& name, const torch::Tensor& tensor, DType dtype);
Result<TensorSet> to_wire(torch::nn::Module& module);
// Copies `set` into the module's parameters and buffers; error names the first mismatch.
Status from_wire(torch::nn::Module& module, const TensorSet& set);

}  // namespace fedda::models
