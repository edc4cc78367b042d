// Inference cropped to the brain (training.h: brain_crop, predict with a brain mask).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "training.h"

namespace fedda::models {
namespace {

// A scan-like stack: air at the z-scored background value around an elliptic head whose
// intensities vary, on `size` x `size` slices; the first and last two slices hold no head.
struct SyntheticScan {
  torch::Tensor images, brain;
};
SyntheticScan synthetic_scan(std::int64_t slices, std::int64_t size, double radius_y, double radius_x) {
  torch::manual_seed(3);
  const auto y = torch::arange(size, torch::kFloat32).view({size, 1}) - size / 2.0;
  const auto x = torch::arange(size, torch::kFloat32).view({1, size}) - size / 2.0 + 3;
  const auto inside = (y * y / (radius_y * radius_y) + x * x / (radius_x * radius_x)) <= 1.0;
  auto brain = inside.unsqueeze(0).repeat({slices, 1, 1});
  brain.slice(0, 0, 2).fill_(false);
  brain.slice(0, slices - 2, slices).fill_(false);
  auto images = torch::full({slices, 2, size, size}, -2.3f);
  const auto texture = torch::randn({slices, 2, size, size}) * 0.8 + torch::sin(x / 3.0) * torch::cos(y / 4.0);
  images = torch::where(brain.unsqueeze(1), texture, images);
  return {images, brain};
}

UNet small_unet(int depth) {
  UNetSpec spec;
  spec.width = 8;
  spec.depth = depth;
  torch::manual_seed(11);
  UNet net(spec);
  net->eval();
  return net;
}

TEST(BrainCrop, BoxHoldsTheBrainAndTheMarginOnTheStridesGridAndSkipsEmptySlices) {
  const auto scan = synthetic_scan(10, 128, 30, 24);
  const auto crop = brain_crop(scan.brain, 8, 16);
  EXPECT_EQ(crop.slices, (std::vector<std::int64_t>{2, 3, 4, 5, 6, 7}));
  const auto rows = torch::nonzero(scan.brain.any(0).any(1)).flatten();
  const auto cols = torch::nonzero(scan.brain.any(0).any(0)).flatten();
  const auto ymin = rows[0].item<std::int64_t>(), ymax = rows[-1].item<std::int64_t>();
  const auto xmin = cols[0].item<std::int64_t>(), xmax = cols[-1].item<std::int64_t>();
  for (const auto v : {crop.y0, crop.y1, crop.x0, crop.x1}) EXPECT_EQ(v % 8, 0) << v;
  EXPECT_LE(crop.y0, ymin - 16);
  EXPECT_GE(crop.y1, ymax + 1 + 16);
  EXPECT_LE(crop.x0, xmin - 16);
  EXPECT_GE(crop.x1, xmax + 1 + 16);
  EXPECT_GT(crop.y0, ymin - 16 - 8);  // no more than one stride beyond the margin
  EXPECT_LT(crop.y1, ymax + 1 + 16 + 8);
  const double share = crop.pixel_share(scan.brain);
  EXPECT_NEAR(share, 6.0 * (crop.y1 - crop.y0) * (crop.x1 - crop.x0) / (10.0 * 128 * 128), 1e-12);
  EXPECT_LT(share, 0.5);

  // A grid side not on the stride is kept whole; a scan without brain has nothing to run.
  const auto odd = brain_crop(synthetic_scan(6, 60, 12, 12).brain, 8, 4);
  EXPECT_EQ(odd.y0, 0);
  EXPECT_EQ(odd.y1, 60);
  EXPECT_TRUE(brain_crop(torch::zeros({3, 16, 16}, torch::kBool), 8, 4).slices.empty());
}

// The network's context reaches past any margin (a depth-3 U-Net sees about 90 pixels), so a crop
// changes p(WMH) a little near the box's edge; this measures how much inside the brain at the
// margin inference uses, and that the change dies off with the margin.
TEST(BrainCrop, PredictionInsideTheBrainIsUnchangedWithinTolerance) {
  const auto scan = synthetic_scan(8, 128, 30, 24);
  auto net = small_unet(3);
  const auto whole = predict(net, scan.images, torch::kCPU);
  const auto change = [&](std::int64_t margin) {
    const auto cropped = predict(net, scan.images, torch::kCPU, 1.0, scan.brain, margin);
    EXPECT_EQ(cropped.sizes(), whole.sizes());
    const auto crop = brain_crop(scan.brain, 8, margin);
    auto box = torch::zeros_like(scan.brain);
    for (const auto z : crop.slices) box[z].slice(0, crop.y0, crop.y1).slice(1, crop.x0, crop.x1).fill_(true);
    EXPECT_EQ(cropped.masked_select(box.logical_not()).abs().max().item<float>(), 0.0f)
        << "p is 0 outside the box and on slices without brain";
    EXPECT_GT(cropped.masked_select(box).min().item<float>(), 0.0f) << "the network ran on the whole box";
    return (cropped - whole).masked_select(scan.brain).abs().max().item<double>();
  };
  const double at_zero = change(0), at_default = change(kBrainCropMargin), at_wide = change(48);
  std::printf("max |dp| inside the brain: margin 0 %.3g, %lld %.3g, 48 %.3g\n", at_zero,
              static_cast<long long>(kBrainCropMargin), at_default, at_wide);
  EXPECT_GT(at_zero, at_default) << "a wider margin brings the prediction closer to the whole grid's";
  EXPECT_LT(at_default, 1e-3);
  EXPECT_LT(at_wide, 1e-4);
  // Labels (p > 0.5) inside the brain: none flips at the default margin.
  const auto cropped = predict(net, scan.images, torch::kCPU, 1.0, scan.brain, kBrainCropMargin);
  EXPECT_TRUE(torch::equal((cropped > 0.5).masked_select(scan.brain), (whole > 0.5).masked_select(scan.brain)));
}

// Test-time mirroring: p is the mean over the slice and its mirror image, so mirroring the input
// mirrors the output exactly, which a network alone does not do.
TEST(TestTimeMirroring, MakesThePredictionMirrorEquivariant) {
  const auto scan = synthetic_scan(4, 64, 16, 12);
  auto net = small_unet(3);
  const auto mirrored = scan.images.flip({3});
  const auto plain = predict(net, scan.images, torch::kCPU);
  EXPECT_GT((predict(net, mirrored, torch::kCPU).flip({2}) - plain).abs().max().item<float>(), 1e-4f)
      << "an untrained network is not mirror-symmetric by itself";
  const auto p = predict(net, scan.images, torch::kCPU, 1.0, {}, kBrainCropMargin, true);
  const auto q = predict(net, mirrored, torch::kCPU, 1.0, {}, kBrainCropMargin, true);
  EXPECT_LT((q.flip({2}) - p).abs().max().item<float>(), 1e-6f);
  EXPECT_EQ(p.sizes(), plain.sizes());
  EXPECT_GE(p.min().item<float>(), 0.0f);
  EXPECT_LE(p.max().item<float>(), 1.0f);
}

}  // namespace
}  // namespace fedda::models
