#pragma once
// The networks (private to fedda::models; LibTorch inside).
//
// UNet: 2-D U-Net on axial slices, input [N, in_channels, H, W], output logits
// [N, classes, H, W]. Levels double the width; each level is two 3x3 conv + norm + ReLU;
// up-sampling by 2x2 stride-2 transposed convolution or nearest-neighbour + 1x1 convolution.
// Discriminator: the seed paper's, on the segmenter's final-layer output [N, classes, H, W]:
// 4 conv layers (8, 16, 32, 64 filters, 4x4 stride 2), global average pooling, then fully
// connected layers of 64, 128 and 2 (source vs target logits).

#include <torch/torch.h>

#include "fedda/models_core/model_spec.h"
#include "fedda/models_core/precision.h"

namespace fedda::models {

class ConvBlockImpl : public torch::nn::Module {
 public:
  ConvBlockImpl(int in, int out, const std::string& norm);
  torch::Tensor forward(torch::Tensor x);

 private:
  torch::nn::Sequential layers_{nullptr};
};
TORCH_MODULE(ConvBlock);

class UNetImpl : public torch::nn::Module {
 public:
  explicit UNetImpl(const UNetSpec& spec);
  // Logits in float32 whatever the precision.
  torch::Tensor forward(torch::Tensor x);
  const UNetSpec& spec() const { return spec_; }
  // bfloat16: the forward pass runs under autocast (on the calling thread, whichever it is);
  // channels_last: the convolutions' weights and every input are NHWC. Weights stay float32.
  void set_precision(const PrecisionChoice& precision);
  const PrecisionChoice& precision() const { return precision_; }

 private:
  torch::Tensor forward_layers(torch::Tensor x);

  UNetSpec spec_;
  PrecisionChoice precision_;
  torch::nn::ModuleList down_{nullptr};    // ConvBlocks, one per level incl. the bottleneck
  torch::nn::ModuleList up_{nullptr};      // up-sampling layers
  torch::nn::ModuleList decode_{nullptr};  // ConvBlocks after each concatenation
  torch::nn::Conv2d head_{nullptr};
};
TORCH_MODULE(UNet);

class DiscriminatorImpl : public torch::nn::Module {
 public:
  explicit DiscriminatorImpl(int classes);
  torch::Tensor forward(torch::Tensor segmenter_output);

 private:
  torch::nn::Sequential features_{nullptr};
  torch::nn::Sequential classifier_{nullptr};
};
TORCH_MODULE(Discriminator);

}  // namespace fedda::models
