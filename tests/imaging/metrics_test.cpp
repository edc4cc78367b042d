#include "fedda/imaging/metrics.h"

#include <cmath>

#include <gtest/gtest.h>

#include "support/test_support.h"

namespace fedda::imaging {
namespace {

LabelMap empty_map(std::array<double, 3> spacing = {1, 1, 1}) {
  return LabelMap(testing::make_geometry(12, 12, 6, spacing));
}

void fill_box(LabelMap& m, std::array<std::size_t, 3> lo, std::array<std::size_t, 3> hi, std::uint8_t v) {
  for (std::size_t z = lo[2]; z <= hi[2]; ++z)
    for (std::size_t y = lo[1]; y <= hi[1]; ++y)
      for (std::size_t x = lo[0]; x <= hi[0]; ++x) m.at(x, y, z) = v;
}

TEST(Percentile, MatchesNumpyLinearInterpolation) {
  // numpy.percentile([1, 2, 3, 4], 95) == 3.85; ([5], 95) == 5
  EXPECT_NEAR(percentile({4, 1, 3, 2}, 95), 3.85, 1e-12);
  EXPECT_NEAR(percentile({5}, 95), 5.0, 1e-12);
  EXPECT_NEAR(percentile({0, 10}, 50), 5.0, 1e-12);
  EXPECT_TRUE(std::isnan(percentile({}, 95)));
}

TEST(LesionSummary, CountsWmhVoxelsInMillilitresAndLesionsWith26Connectivity) {
  LabelMap m = empty_map({0.5, 1.0, 3.0});  // 1.5 mm3 a voxel
  fill_box(m, {1, 1, 1}, {2, 2, 1}, kWmh);   // 4 voxels
  m.at(3, 3, 2) = kWmh;                      // touches the box at a corner only: the same lesion
  fill_box(m, {8, 8, 4}, {9, 8, 4}, kWmh);   // a second lesion of 2 voxels
  fill_box(m, {0, 10, 0}, {3, 11, 0}, kOtherPathology);  // not WMH: neither counted nor measured
  const auto s = summarize_lesions(m);
  EXPECT_EQ(s.voxels, 7u);
  EXPECT_NEAR(s.volume_ml, 7 * 1.5 / 1000.0, 1e-12);
  EXPECT_EQ(s.count, 2u);
  const auto none = summarize_lesions(empty_map());
  EXPECT_EQ(none.voxels, 0u);
  EXPECT_EQ(none.count, 0u);
  EXPECT_EQ(none.volume_ml, 0.0);
}

TEST(Metrics, PerfectPredictionScoresPerfectly) {
  LabelMap truth = empty_map();
  fill_box(truth, {2, 2, 1}, {4, 4, 2}, kWmh);
  auto m = evaluate_case(truth, truth);
  ASSERT_TRUE(m);
  EXPECT_DOUBLE_EQ(m->dsc, 1.0);
  EXPECT_DOUBLE_EQ(m->h95, 0.0);
  EXPECT_DOUBLE_EQ(m->avd, 0.0);
  EXPECT_DOUBLE_EQ(m->recall, 1.0);
  EXPECT_DOUBLE_EQ(m->f1, 1.0);
}

TEST(Metrics, TwoLesionsOneFoundOneFalsePositive) {
  // Truth: lesion A of 8 voxels, lesion B of 1 voxel. Prediction: 4 voxels inside A,
  // and a 2-voxel false positive far from both.
  LabelMap truth = empty_map(), pred = empty_map();
  fill_box(truth, {1, 1, 1}, {2, 2, 2}, kWmh);  // 8 voxels
  truth.at(9, 9, 4) = kWmh;                     // 1 voxel
  fill_box(pred, {1, 1, 1}, {2, 2, 1}, 1);      // 4 voxels inside A
  pred.at(6, 9, 0) = 1;
  pred.at(7, 9, 0) = 1;
  auto m = evaluate_case(truth, pred);
  ASSERT_TRUE(m);
  EXPECT_NEAR(m->dsc, 2.0 * 4 / (9 + 6), 1e-12);
  EXPECT_NEAR(m->avd, 3.0 / 9.0 * 100.0, 1e-9);
  EXPECT_NEAR(m->recall, 0.5, 1e-12);
  // precision: 1 of 2 predicted components touches a lesion -> 0.5; F1 = 0.5
  EXPECT_NEAR(m->f1, 0.5, 1e-12);
}

TEST(Metrics, OtherPathologyIsRemovedFromTruthAndPrediction) {
  LabelMap truth = empty_map(), pred = empty_map();
  fill_box(truth, {1, 1, 1}, {2, 2, 2}, kWmh);
  fill_box(truth, {6, 6, 1}, {8, 8, 1}, kOtherPathology);
  fill_box(pred, {1, 1, 1}, {2, 2, 2}, 1);
  fill_box(pred, {6, 6, 1}, {8, 8, 1}, 1);  // predicting the label-2 region costs nothing
  auto m = evaluate_case(truth, pred);
  ASSERT_TRUE(m);
  EXPECT_DOUBLE_EQ(m->dsc, 1.0);
  EXPECT_DOUBLE_EQ(m->avd, 0.0);
  EXPECT_DOUBLE_EQ(m->f1, 1.0);
}

TEST(Metrics, EmptyPredictionHasUndefinedH95AndZeroRecall) {
  LabelMap truth = empty_map(), pred = empty_map();
  fill_box(truth, {1, 1, 1}, {2, 2, 2}, kWmh);
  auto m = evaluate_case(truth, pred);
  ASSERT_TRUE(m);
  EXPECT_DOUBLE_EQ(m->dsc, 0.0);
  EXPECT_TRUE(std::isnan(m->h95));
  EXPECT_DOUBLE_EQ(m->avd, 100.0);
  EXPECT_DOUBLE_EQ(m->recall, 0.0);
  EXPECT_DOUBLE_EQ(m->f1, 0.0);  // precision 1 (no detections), recall 0
}

TEST(Metrics, EmptyTruthAndPredictionLeaveDiceAndAvdUndefined) {
  auto m = evaluate_case(empty_map(), empty_map());
  ASSERT_TRUE(m);
  EXPECT_TRUE(std::isnan(m->dsc));
  EXPECT_TRUE(std::isnan(m->avd));
  EXPECT_DOUBLE_EQ(m->recall, 1.0);
  EXPECT_DOUBLE_EQ(m->f1, 1.0);
}

TEST(Metrics, DiagonalNeighboursFormOneLesion) {
  LabelMap truth = empty_map(), pred = empty_map();
  truth.at(3, 3, 2) = kWmh;
  truth.at(4, 4, 3) = kWmh;  // touches (3,3,2) only at a corner: one lesion with 26-connectivity
  pred.at(3, 3, 2) = 1;
  auto m = evaluate_case(truth, pred);
  ASSERT_TRUE(m);
  EXPECT_DOUBLE_EQ(m->recall, 1.0);
  EXPECT_DOUBLE_EQ(m->f1, 1.0);
}

TEST(Metrics, H95UsesPhysicalDistanceAcrossThickSlices) {
  // Single voxels 2 slices apart with 3 mm slices: 6 mm.
  LabelMap truth = empty_map({1, 1, 3}), pred = empty_map({1, 1, 3});
  truth.at(5, 5, 1) = kWmh;
  pred.at(5, 5, 3) = 1;
  auto m = evaluate_case(truth, pred);
  ASSERT_TRUE(m);
  EXPECT_NEAR(m->h95, 6.0, 1e-5);
}

TEST(Metrics, H95OfShiftedSquareOnAnisotropicGrid) {
  // A 5x5 square and the same square shifted one voxel along x (0.8 mm): the in-plane
  // boundaries are rings of 16 voxels; half the ring voxels are at distance 0, half at
  // 0.8 mm, so both directed 95th percentiles are 0.8 mm.
  LabelMap truth = empty_map({0.8, 1.0, 3.0}), pred = empty_map({0.8, 1.0, 3.0});
  fill_box(truth, {2, 2, 2}, {6, 6, 2}, kWmh);
  fill_box(pred, {3, 2, 2}, {7, 6, 2}, 1);
  auto m = evaluate_case(truth, pred);
  ASSERT_TRUE(m);
  EXPECT_NEAR(m->h95, 0.8, 1e-5);
  EXPECT_NEAR(m->dsc, 2.0 * 20 / 50, 1e-12);
}

TEST(Metrics, RefusesPredictionOnAnotherGrid) {
  LabelMap truth = empty_map();
  LabelMap pred(testing::make_geometry(12, 12, 5));
  auto m = evaluate_case(truth, pred);
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message.find("same grid"), std::string::npos);
}

}  // namespace
}  // namespace fedda::imaging
