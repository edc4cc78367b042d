#include "fedda/imaging/preprocess.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include <gtest/gtest.h>

#include "fedda/imaging/metrics.h"
#include "support/test_support.h"

namespace fedda::imaging {
namespace {

// A synthetic head: a bright ellipsoidal "brain" with a dark core (ventricles), a dark gap
// (skull), a bright shell (scalp), and air outside.
Image synthetic_head(const Geometry& g, LabelMap* brain_truth = nullptr) {
  Image im(g);
  if (brain_truth) *brain_truth = LabelMap(g);
  const auto centre = g.to_physical((g.size[0] - 1) / 2.0, (g.size[1] - 1) / 2.0, (g.size[2] - 1) / 2.0);
  for (std::size_t z = 0; z < g.size[2]; ++z)
    for (std::size_t y = 0; y < g.size[1]; ++y)
      for (std::size_t x = 0; x < g.size[0]; ++x) {
        const auto p = g.to_physical(x, y, z);
        const double dx = (p[0] - centre[0]) / 60.0, dy = (p[1] - centre[1]) / 75.0,
                     dz = (p[2] - centre[2]) / 55.0;
        const double r = std::sqrt(dx * dx + dy * dy + dz * dz);
        float v = 2.0f;  // air
        if (r < 0.15) v = 30.0f;            // ventricles
        else if (r < 1.0) v = 100.0f + 10.0f * static_cast<float>((x * 7 + y * 3 + z) % 5);
        else if (r < 1.12) v = 5.0f;        // skull
        else if (r < 1.25) v = 90.0f;       // scalp
        im.at(x, y, z) = v;
        if (brain_truth) brain_truth->at(x, y, z) = r < 1.0;
      }
  return im;
}

double dice(const LabelMap& a, const LabelMap& b) {
  std::size_t na = 0, nb = 0, both = 0;
  for (std::size_t i = 0; i < a.voxels.size(); ++i) {
    na += a.voxels[i] != 0;
    nb += b.voxels[i] != 0;
    both += a.voxels[i] && b.voxels[i];
  }
  return 2.0 * both / (na + nb);
}

TEST(Preprocess, BrainMaskKeepsBrainAndDropsScalp) {
  const Geometry g = testing::make_geometry(120, 140, 40, {1.25, 1.25, 3.0});
  LabelMap truth;
  const Image head = synthetic_head(g, &truth);
  auto mask = brain_mask(head);
  ASSERT_TRUE(mask) << mask.error().message;
  EXPECT_GT(dice(*mask, truth), 0.95);
  // The ventricles are inside the brain mask (holes filled).
  EXPECT_EQ(mask->at(60, 70, 20), 1);
  // Scalp is not.
  std::size_t scalp_in_mask = 0;
  for (std::size_t i = 0; i < head.voxels.size(); ++i) scalp_in_mask += head.voxels[i] == 90.0f && mask->voxels[i];
  EXPECT_EQ(scalp_in_mask, 0u);
}

TEST(Preprocess, BrainMaskOfConstantImageIsAnError) {
  Image flat(testing::make_geometry(8, 8, 8), 3.0f);
  EXPECT_FALSE(brain_mask(flat));
}

TEST(Preprocess, ZScoreHasZeroMeanUnitSdInsideMask) {
  const Geometry g = testing::make_geometry(10, 10, 4);
  Image im(g);
  LabelMap mask(g);
  for (std::size_t i = 0; i < im.voxels.size(); ++i) {
    im.voxels[i] = static_cast<float>(i % 13) * 3.0f + 7.0f;
    mask.voxels[i] = i % 2;
  }
  auto z = zscore_in_mask(im, mask);
  ASSERT_TRUE(z);
  double sum = 0, sq = 0;
  int n = 0;
  for (std::size_t i = 0; i < im.voxels.size(); ++i) {
    if (!mask.voxels[i]) continue;
    sum += z->voxels[i];
    sq += z->voxels[i] * z->voxels[i];
    ++n;
  }
  EXPECT_NEAR(sum / n, 0.0, 1e-5);
  EXPECT_NEAR(sq / n, 1.0, 1e-4);
  EXPECT_FALSE(zscore_in_mask(im, LabelMap(g)));
}

TEST(Preprocess, ModelGridKeepsSlicesAndCentresTheBrain) {
  const Geometry scan = testing::oblique_geometry(100, 110, 30);
  const auto centre = scan.to_physical(40, 60, 15);
  GridSpec spec;
  spec.in_plane_size = {64, 64};
  spec.in_plane_spacing = {1.5, 1.5};
  const Geometry grid = model_grid(scan, centre, spec);
  EXPECT_EQ(grid.size[2], scan.size[2]);
  EXPECT_DOUBLE_EQ(grid.spacing[2], scan.spacing[2]);
  EXPECT_EQ(grid.direction, scan.direction);
  // The grid's centre is the brain centre, and slice k lies in the scan's slice k.
  const auto grid_centre = grid.to_physical(31.5, 31.5, 15);
  for (int d = 0; d < 3; ++d) EXPECT_NEAR(grid_centre[d], centre[d], 1e-9);
  const auto in_scan = scan.to_index(grid.to_physical(0, 0, 7));
  EXPECT_NEAR(in_scan[2], 7.0, 1e-9);
}

// The same head stored with its rows in the other order (as dcm2niix writes a DICOM series) and
// with rows and columns swapped: the network gets the same slices, the same way up.
TEST(Preprocess, TheModelGridIsTheSameWayUpWhateverOrderTheFileStoresRowsIn) {
  const Geometry g = testing::make_geometry(90, 100, 12, {2.0, 2.0, 5.0});
  const Image flair = synthetic_head(g);
  Image t1 = flair;
  for (auto& v : t1.voxels) v = 200.0f - v;
  const auto reorder = [&](const Image& in, bool flip_y, bool swap_xy) {
    Geometry h = g;
    if (swap_xy) {
      std::swap(h.size[0], h.size[1]);
      std::swap(h.spacing[0], h.spacing[1]);
      for (int r = 0; r < 3; ++r) std::swap(h.direction[r * 3 + 0], h.direction[r * 3 + 1]);
    }
    if (flip_y) {
      h.origin = g.to_physical(0, swap_xy ? 0 : g.size[1] - 1, 0);
      if (swap_xy) h.origin = g.to_physical(g.size[0] - 1, 0, 0);
      for (int r = 0; r < 3; ++r) h.direction[r * 3 + 1] = -h.direction[r * 3 + 1];
    }
    Image out(h);
    for (std::size_t z = 0; z < h.size[2]; ++z)
      for (std::size_t y = 0; y < h.size[1]; ++y)
        for (std::size_t x = 0; x < h.size[0]; ++x) {
          const auto i = g.to_index(h.to_physical(double(x), double(y), double(z)));
          out.at(x, y, z) = in.at(std::lround(i[0]), std::lround(i[1]), std::lround(i[2]));
        }
    return out;
  };
  GridSpec spec;
  spec.in_plane_size = {64, 64};
  spec.in_plane_spacing = {3.0, 3.0};
  auto reference = preprocess(flair, t1, spec);
  ASSERT_TRUE(reference) << reference.error().message;
  for (const auto& [flip, swap] : {std::pair{true, false}, std::pair{false, true}, std::pair{true, true}}) {
    auto other = preprocess(reorder(flair, flip, swap), reorder(t1, flip, swap), spec);
    ASSERT_TRUE(other) << other.error().message;
    EXPECT_TRUE(same_geometry(other->grid, reference->grid, 1e-6)) << geometry_difference(other->grid, reference->grid);
    double worst = 0;
    for (std::size_t i = 0; i < reference->flair.voxels.size(); ++i) {
      worst = std::max(worst, double(std::abs(reference->flair.voxels[i] - other->flair.voxels[i])));
    }
    EXPECT_LT(worst, 1e-3) << "flip " << flip << " swap " << swap;
  }
}

TEST(Preprocess, InverseReturnsTheOriginalGridAndSegmentation) {
  const Geometry g = testing::oblique_geometry(150, 160, 24);
  const Image flair = synthetic_head(g);
  Image t1 = flair;
  for (auto& v : t1.voxels) v = 200.0f - v;
  GridSpec spec;
  spec.in_plane_size = {128, 128};
  spec.in_plane_spacing = {1.25, 1.25};
  auto pre = preprocess(flair, t1, spec);
  ASSERT_TRUE(pre) << pre.error().message;
  EXPECT_EQ(pre->flair.geometry.size, (std::array<std::size_t, 3>{128, 128, 24}));
  EXPECT_TRUE(same_geometry(pre->original, g));

  // A blob segmented on the original grid, taken to the model grid and back.
  LabelMap blob(g);
  for (std::size_t z = 8; z < 16; ++z)
    for (std::size_t y = 60; y < 90; ++y)
      for (std::size_t x = 70; x < 95; ++x) blob.at(x, y, z) = 1;
  Image blob_f(g);
  for (std::size_t i = 0; i < blob.voxels.size(); ++i) blob_f.voxels[i] = blob.voxels[i];
  const Image on_grid = resample_image(blob_f, pre->grid);
  const LabelMap back = restore_segmentation(on_grid, pre->original);
  EXPECT_TRUE(same_geometry(back.geometry, g));
  auto m = evaluate_case(blob, back);
  ASSERT_TRUE(m);
  EXPECT_GT(m->dsc, 0.95);
}

}  // namespace
}  // namespace fedda::imaging
