#include "augment.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

namespace fedda::models {
namespace F = torch::nn::functional;

namespace {

constexpr double kPi = 3.14159265358979323846;

class Draw {
 public:
  explicit Draw(std::mt19937_64& rng) : rng_(rng) {}
  bool chance(double p) { return p > 0 && uniform_(rng_) < p; }
  double between(double lo, double hi) { return lo + (hi - lo) * uniform_(rng_); }
  std::int64_t index(std::int64_t n) { return std::min<std::int64_t>(n - 1, static_cast<std::int64_t>(uniform_(rng_) * n)); }
  // A LibTorch generator of its own for noise tensors, seeded from the stream.
  at::Generator generator() { return at::detail::createCPUGenerator(rng_()); }

 private:
  std::mt19937_64& rng_;
  std::uniform_real_distribution<double> uniform_{0.0, 1.0};
};

// The 2x3 matrix that samples the output at normalised (x, y) from the input, for a rotation
// by `angle` and a zoom by `scale` about the centre, on an H x W slice (pixels stay square).
torch::Tensor affine(double angle, double scale, std::int64_t h, std::int64_t w) {
  const double c = std::cos(angle) / scale, s = std::sin(angle) / scale;
  const double hw = static_cast<double>(h) / static_cast<double>(w);
  return torch::tensor({c, -s * hw, 0.0, s / hw, c, 0.0}, torch::kFloat32).reshape({2, 3});
}

void spatial(SliceBatch& b, const Recipe& r, Draw& draw) {
  const auto n = b.images.size(0), h = b.images.size(2), w = b.images.size(3);
  std::vector<std::int64_t> moved;
  std::vector<torch::Tensor> thetas, warps;
  for (std::int64_t i = 0; i < n; ++i) {
    if (draw.chance(r.mirror_probability)) {
      b.images[i] = b.images[i].flip({2});
      if (b.labels.defined()) b.labels[i] = b.labels[i].flip({1});
      if (b.p.defined()) b.p[i] = b.p[i].flip({1});
    }
    const bool rotate = draw.chance(r.rotation_probability);
    const double angle = rotate ? draw.between(-r.rotation_degrees, r.rotation_degrees) * kPi / 180 : 0.0;
    const bool zoom = draw.chance(r.scale_probability);
    const double scale = zoom ? draw.between(r.scale_min, r.scale_max) : 1.0;
    const bool elastic = draw.chance(r.elastic_probability);
    if (!rotate && !zoom && !elastic) continue;
    moved.push_back(i);
    thetas.push_back(affine(angle, scale, h, w));
    torch::Tensor warp = torch::zeros({2, 4, 4});
    if (elastic) {
      auto gen = draw.generator();
      warp = torch::randn({2, 4, 4}, gen) * (2.0 * r.elastic_magnitude);
    }
    warps.push_back(warp);
  }
  if (moved.empty()) return;
  const auto index = torch::tensor(moved, torch::kInt64);
  const auto m = static_cast<std::int64_t>(moved.size());
  auto grid = F::affine_grid(torch::stack(thetas), {m, 1, h, w}, false);  // [m, H, W, 2]
  const auto displacement = F::interpolate(torch::stack(warps), F::InterpolateFuncOptions()
                                                                    .size(std::vector<std::int64_t>{h, w})
                                                                    .mode(torch::kBicubic)
                                                                    .align_corners(true));
  grid = grid + displacement.permute({0, 2, 3, 1});
  const auto sample = [&](const torch::Tensor& x, bool nearest) {
    auto options = F::GridSampleFuncOptions().padding_mode(torch::kZeros).align_corners(false);
    if (nearest) {
      options.mode(torch::kNearest);
    } else {
      options.mode(torch::kBilinear);
    }
    return F::grid_sample(x, grid, options);
  };
  // Outside the slice: each channel's darkest value, as the preprocessing pads the air.
  auto images = b.images.index_select(0, index);
  const auto darkest = images.amin({2, 3}, true);
  b.images.index_copy_(0, index, sample(images - darkest, false) + darkest);
  if (b.labels.defined()) {
    const auto labels = b.labels.index_select(0, index).unsqueeze(1).to(torch::kFloat32);
    b.labels.index_copy_(0, index, sample(labels, true).squeeze(1).round().to(torch::kInt64));
  }
  if (b.p.defined()) {
    const auto p = b.p.index_select(0, index).unsqueeze(1);
    b.p.index_copy_(0, index, sample(p, false).squeeze(1).clamp(0.0, 1.0));
  }
}

torch::Tensor gaussian_blur(const torch::Tensor& x, double sigma) {  // x: [H, W]
  const auto radius = static_cast<std::int64_t>(std::ceil(3 * sigma));
  auto k = torch::arange(-radius, radius + 1, torch::kFloat32);
  k = torch::exp(-(k * k) / (2 * sigma * sigma));
  k = k / k.sum();
  auto y = x.unsqueeze(0).unsqueeze(0);
  const auto pad = std::min<std::int64_t>(radius, std::min(x.size(0), x.size(1)) - 1);
  y = F::pad(y, F::PadFuncOptions({pad, pad, pad, pad}).mode(torch::kReflect));
  y = F::conv2d(y, k.view({1, 1, 1, -1}), F::Conv2dFuncOptions().padding({0, radius - pad}));
  y = F::conv2d(y, k.view({1, 1, -1, 1}), F::Conv2dFuncOptions().padding({radius - pad, 0}));
  return y.squeeze(0).squeeze(0);
}

torch::Tensor low_resolution(const torch::Tensor& x, double zoom) {  // x: [H, W]
  const auto h = x.size(0), w = x.size(1);
  const auto small = std::vector<std::int64_t>{std::max<std::int64_t>(1, std::lround(h * zoom)),
                                               std::max<std::int64_t>(1, std::lround(w * zoom))};
  auto y = F::interpolate(x.unsqueeze(0).unsqueeze(0), F::InterpolateFuncOptions().size(small).mode(torch::kNearest));
  y = F::interpolate(y, F::InterpolateFuncOptions()
                            .size(std::vector<std::int64_t>{h, w})
                            .mode(torch::kBicubic)
                            .align_corners(false));
  return y.squeeze(0).squeeze(0);
}

// Gamma on the slice rescaled to [0, 1], then its mean and SD restored (nnU-Net's retain_stats).
torch::Tensor gamma(const torch::Tensor& x, double g, bool invert) {
  auto y = invert ? -x : x;
  const auto mean = y.mean(), sd = y.std();
  const auto lo = y.min(), span = y.max() - lo + 1e-7;
  y = torch::pow((y - lo) / span, g) * span + lo;
  y = (y - y.mean()) / (y.std() + 1e-8) * sd + mean;
  return invert ? -y : y;
}

// A smooth multiplicative field, exp(strength * a 3x3 Gaussian field up-sampled bicubically),
// applied above the slice's darkest value so that the air stays air.
torch::Tensor bias_field(const torch::Tensor& x, double strength, at::Generator& gen) {
  const auto h = x.size(0), w = x.size(1);
  auto field = torch::randn({1, 1, 3, 3}, gen) * strength;
  field = F::interpolate(field, F::InterpolateFuncOptions()
                                    .size(std::vector<std::int64_t>{h, w})
                                    .mode(torch::kBicubic)
                                    .align_corners(true));
  const auto lo = x.min();
  return (x - lo) * torch::exp(field.squeeze(0).squeeze(0)) + lo;
}

void intensity(SliceBatch& b, const Recipe& r, Draw& draw) {
  const auto n = b.images.size(0), channels = b.images.size(1);
  for (std::int64_t i = 0; i < n; ++i) {
    auto gen = draw.generator();
    const auto each_channel = [&](double probability, const std::function<torch::Tensor(const torch::Tensor&)>& f) {
      if (!draw.chance(probability)) return;
      for (std::int64_t c = 0; c < channels; ++c) {
        if (channels > 1 && !draw.chance(r.channel_probability)) continue;
        b.images[i][c] = f(b.images[i][c]);
      }
    };
    each_channel(r.noise_probability, [&](const torch::Tensor& x) {
      const double variance = draw.between(0, r.noise_variance);
      return x + torch::randn(x.sizes(), gen) * std::sqrt(variance);
    });
    each_channel(r.blur_probability, [&](const torch::Tensor& x) {
      return gaussian_blur(x, draw.between(r.blur_sigma_min, r.blur_sigma_max));
    });
    each_channel(r.brightness_probability, [&](const torch::Tensor& x) {
      return x * draw.between(r.brightness_min, r.brightness_max);
    });
    each_channel(r.contrast_probability, [&](const torch::Tensor& x) {
      const auto mean = x.mean();
      return ((x - mean) * draw.between(r.contrast_min, r.contrast_max) + mean).clamp(x.min(), x.max());
    });
    each_channel(r.low_resolution_probability, [&](const torch::Tensor& x) {
      return low_resolution(x, draw.between(r.low_resolution_min, r.low_resolution_max));
    });
    each_channel(r.gamma_invert_probability, [&](const torch::Tensor& x) {
      return gamma(x, draw.between(r.gamma_min, r.gamma_max), true);
    });
    each_channel(r.gamma_probability, [&](const torch::Tensor& x) {
      return gamma(x, draw.between(r.gamma_min, r.gamma_max), false);
    });
    each_channel(r.bias_field_probability, [&](const torch::Tensor& x) { return bias_field(x, r.bias_field_strength, gen); });
  }
}

}  // namespace

bool classic_augmentation(const Recipe& r) {
  for (double p : {r.rotation_probability, r.scale_probability, r.elastic_probability, r.noise_probability,
                   r.blur_probability, r.brightness_probability, r.contrast_probability, r.low_resolution_probability,
                   r.gamma_probability, r.gamma_invert_probability, r.bias_field_probability, r.patch_size}) {
    if (p > 0) return false;
  }
  return true;
}

void augment_slices(SliceBatch& b, const Recipe& r, std::mt19937_64& rng) {
  torch::NoGradGuard no_grad;
  Draw draw(rng);
  spatial(b, r, draw);
  if (r.jitter_sd > 0) {
    std::normal_distribution<double> normal(0.0, 1.0);
    for (std::int64_t i = 0; i < b.images.size(0); ++i) {
      for (std::int64_t c = 0; c < b.images.size(1); ++c) {
        const double scale = 1.0 + r.jitter_sd * normal(rng);
        b.images[i][c].mul_(scale).add_(r.jitter_sd * normal(rng));
      }
    }
  }
  intensity(b, r, draw);
}

void scanner_change(torch::Tensor& slices, const Recipe& r, std::uint64_t seed) {
  torch::NoGradGuard no_grad;
  for (std::int64_t i = 0; i < slices.size(0); ++i) {
    std::mt19937_64 rng(seed);  // the same stream for every slice: one change of the scan
    Draw draw(rng);
    SliceBatch one;
    one.images = slices.slice(0, i, i + 1);
    intensity(one, r, draw);
  }
}

void crop_patches(SliceBatch& b, int patch_size, double foreground_fraction, std::mt19937_64& rng) {
  const auto n = b.images.size(0), h = b.images.size(2), w = b.images.size(3);
  const std::int64_t size = patch_size;
  if (size <= 0 || (size >= h && size >= w)) return;
  Draw draw(rng);
  std::vector<torch::Tensor> images, labels, p;
  for (std::int64_t i = 0; i < n; ++i) {
    std::int64_t y0 = draw.index(h - size + 1), x0 = draw.index(w - size + 1);
    if (draw.chance(foreground_fraction)) {
      const auto lesion = b.labels.defined() ? b.labels[i].eq(1) : b.p.defined() ? b.p[i].gt(0.5) : torch::Tensor();
      if (lesion.defined()) {
        const auto at = torch::nonzero(lesion);  // [K, 2]
        if (at.size(0) > 0) {
          const auto k = draw.index(at.size(0));
          const auto y = at[k][0].item<std::int64_t>(), x = at[k][1].item<std::int64_t>();
          y0 = std::clamp<std::int64_t>(y - size / 2, 0, h - size);
          x0 = std::clamp<std::int64_t>(x - size / 2, 0, w - size);
        }
      }
    }
    images.push_back(b.images[i].slice(1, y0, y0 + size).slice(2, x0, x0 + size));
    if (b.labels.defined()) labels.push_back(b.labels[i].slice(0, y0, y0 + size).slice(1, x0, x0 + size));
    if (b.p.defined()) p.push_back(b.p[i].slice(0, y0, y0 + size).slice(1, x0, x0 + size));
  }
  b.images = torch::stack(images).contiguous();
  if (b.labels.defined()) b.labels = torch::stack(labels).contiguous();
  if (b.p.defined()) b.p = torch::stack(p).contiguous();
}

}  // namespace fedda::models
