#include "networks.h"

#include "torch_compat.h"

namespace fedda::models {
namespace nn = torch::nn;

namespace {

// LibTorch's autocast to bfloat16 for one forward pass on this thread (its state is per
// thread), restored afterwards; the cast weights are cached for the pass and dropped after it.
class BFloat16Autocast {
 public:
  explicit BFloat16Autocast(const torch::Device& device)
      : device_(device.is_cuda() ? c10::DeviceType::CUDA : c10::DeviceType::CPU) {
    enabled_ = compat::autocast_enabled(device_);
    dtype_ = compat::autocast_dtype(device_);
    compat::set_autocast_enabled(device_, true);
    compat::set_autocast_dtype(device_, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~BFloat16Autocast() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    compat::set_autocast_enabled(device_, enabled_);
    compat::set_autocast_dtype(device_, dtype_);
  }
  BFloat16Autocast(const BFloat16Autocast&) = delete;
  BFloat16Autocast& operator=(const BFloat16Autocast&) = delete;

 private:
  c10::DeviceType device_;
  bool enabled_ = false;
  at::ScalarType dtype_ = at::kBFloat16;
};

}  // namespace

ConvBlockImpl::ConvBlockImpl(int in, int out, const std::string& norm) {
  layers_ = nn::Sequential();
  for (int i = 0; i < 2; ++i) {
    layers_->push_back(nn::Conv2d(nn::Conv2dOptions(i == 0 ? in : out, out, 3).padding(1).bias(norm == "none")));
    if (norm == "batch") layers_->push_back(nn::BatchNorm2d(out));
    if (norm == "instance") layers_->push_back(nn::InstanceNorm2d(nn::InstanceNorm2dOptions(out).affine(true)));
    layers_->push_back(nn::ReLU(nn::ReLUOptions().inplace(true)));
  }
  register_module("layers", layers_);
}

torch::Tensor ConvBlockImpl::forward(torch::Tensor x) { return layers_->forward(x); }

UNetImpl::UNetImpl(const UNetSpec& spec) : spec_(spec) {
  down_ = nn::ModuleList();
  up_ = nn::ModuleList();
  decode_ = nn::ModuleList();
  int channels = spec.in_channels;
  for (int level = 0; level <= spec.depth; ++level) {
    const int out = spec.width << level;
    down_->push_back(ConvBlock(channels, out, spec.norm));
    channels = out;
  }
  for (int level = spec.depth - 1; level >= 0; --level) {
    const int out = spec.width << level;
    if (spec.upsample == "transposed") {
      up_->push_back(nn::ConvTranspose2d(nn::ConvTranspose2dOptions(channels, out, 2).stride(2)));
    } else {
      up_->push_back(nn::Sequential(
          nn::Upsample(nn::UpsampleOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest)),
          nn::Conv2d(nn::Conv2dOptions(channels, out, 1))));
    }
    decode_->push_back(ConvBlock(2 * out, out, spec.norm));
    channels = out;
  }
  head_ = nn::Conv2d(nn::Conv2dOptions(channels, spec.classes, 1));
  register_module("down", down_);
  register_module("up", up_);
  register_module("decode", decode_);
  register_module("head", head_);
}

void UNetImpl::set_precision(const PrecisionChoice& precision) {
  precision_ = precision;
  torch::NoGradGuard no_grad;
  const auto format = precision.channels_last ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous;
  for (auto& p : parameters()) {
    if (p.dim() == 4) p.set_data(p.contiguous(format));
  }
}

torch::Tensor UNetImpl::forward(torch::Tensor x) {
  if (precision_.channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  if (!precision_.bfloat16) return forward_layers(x);
  BFloat16Autocast autocast(x.device());
  return forward_layers(x).to(torch::kFloat);
}

torch::Tensor UNetImpl::forward_layers(torch::Tensor x) {
  std::vector<torch::Tensor> skips;
  for (int level = 0; level <= spec_.depth; ++level) {
    x = down_[level]->as<ConvBlock>()->forward(x);
    if (level < spec_.depth) {
      skips.push_back(x);
      x = torch::max_pool2d(x, 2);
    }
  }
  for (int k = 0; k < spec_.depth; ++k) {
    if (spec_.upsample == "transposed") {
      x = up_[k]->as<nn::ConvTranspose2d>()->forward(x);
    } else {
      x = up_[k]->as<nn::Sequential>()->forward(x);
    }
    x = torch::cat({skips[spec_.depth - 1 - k], x}, 1);
    x = decode_[k]->as<ConvBlock>()->forward(x);
  }
  return head_->forward(x);
}

DiscriminatorImpl::DiscriminatorImpl(int classes) {
  features_ = nn::Sequential();
  int in = classes;
  for (int filters : {8, 16, 32, 64}) {
    features_->push_back(nn::Conv2d(nn::Conv2dOptions(in, filters, 4).stride(2).padding(1)));
    features_->push_back(nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(0.2)));
    in = filters;
  }
  features_->push_back(nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(1)));
  features_->push_back(nn::Flatten());
  classifier_ = nn::Sequential(nn::Linear(64, 64), nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(0.2)),
                               nn::Linear(64, 128), nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(0.2)),
                               nn::Linear(128, 2));
  register_module("features", features_);
  register_module("classifier", classifier_);
}

torch::Tensor DiscriminatorImpl::forward(torch::Tensor x) { return classifier_->forward(features_->forward(x)); }

}  // namespace fedda::models
