// The label-free quality estimator (quality.h): its regression, rank correlation, histogram
// distance, JSON form, and the model file that carries it.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <random>

#include "fedda/models/quality.h"
#include "model_io.h"
#include "networks.h"
#include "support/test_support.h"

namespace fedda::models {
namespace {

TEST(Quality, SpearmanRanksWithTiesAndRefusesTooFewPairs) {
  EXPECT_DOUBLE_EQ(spearman({1, 2, 3, 4}, {10, 20, 30, 400}), 1.0);
  EXPECT_DOUBLE_EQ(spearman({1, 2, 3, 4}, {4, 3, 2, 1}), -1.0);
  // Ranks 1, 2.5, 2.5, 4 against 1..4: 4.5 / sqrt(4.5 x 5).
  EXPECT_NEAR(spearman({1, 2, 2, 3}, {1, 2, 3, 4}), 4.5 / std::sqrt(22.5), 1e-12);
  EXPECT_TRUE(std::isnan(spearman({1, 2}, {1, 2})));
  EXPECT_TRUE(std::isnan(spearman({1, 1, 1}, {1, 2, 3})));
}

TEST(Quality, HistogramDistanceIsTheShiftOfTheMass) {
  std::vector<double> a(kHistogramBins, 0), b(kHistogramBins, 0);
  a[10] = 1;
  b[13] = 1;
  const double width = (kHistogramHigh - kHistogramLow) / kHistogramBins;
  EXPECT_NEAR(histogram_distance(a, b), 3 * width, 1e-12);
  EXPECT_NEAR(histogram_distance(a, a), 0, 1e-12);
  EXPECT_TRUE(std::isnan(histogram_distance(a, {1.0})));
}

ScanSignals sample(double self_dice, double entropy, double tta) {
  ScanSignals s;
  s.subject = "s";
  s.self_dice = self_dice;
  s.entropy_brain = entropy;
  s.tta_dice = tta;
  return s;
}

TEST(Quality, RidgeFitRecoversALinearRelationAndItsSpread) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(0, 1);
  std::normal_distribution<double> noise(0, 0.02);
  std::vector<ScanSignals> samples;
  std::vector<double> dsc;
  for (int i = 0; i < 200; ++i) {
    const auto s = sample(u(rng), 0.3 * u(rng), u(rng));
    samples.push_back(s);
    dsc.push_back(0.2 + 0.5 * s.self_dice - 1.0 * s.entropy_brain + noise(rng));  // tta_dice plays no part
  }
  auto e = fit_estimator(samples, dsc, {"self_dice", "entropy_brain", "tta_dice"}, 1e-4);
  ASSERT_TRUE(e) << e.error().message;
  EXPECT_GT(e->weights[0], 0);
  EXPECT_LT(e->weights[1], 0);
  EXPECT_LT(std::abs(e->weights[2]), 0.01);
  EXPECT_NEAR(e->residual_sd, 0.02, 0.006);
  EXPECT_GT(e->fit_spearman, 0.95);
  double mean = 0;
  for (double d : dsc) mean += d / dsc.size();
  EXPECT_NEAR(e->fit_mean_dsc, mean, 1e-12);  // what calibrate warns on when it is near 0
  auto at = estimate_quality(*e, sample(0.8, 0.1, 0.5));
  ASSERT_TRUE(at) << at.error().message;
  EXPECT_NEAR(at->dsc, 0.2 + 0.4 - 0.1, 0.02);
  EXPECT_NEAR(at->high - at->dsc, 1.645 * e->residual_sd, 1e-9);
  EXPECT_TRUE(at->out_of_range.empty());

  // Far outside what it was fitted on: the estimate is clipped to [0, 1] and the signal named.
  auto far = estimate_quality(*e, sample(3.0, 0.1, 0.5));
  ASSERT_TRUE(far);
  EXPECT_EQ(far->dsc, 1.0);
  EXPECT_EQ(far->out_of_range, std::vector<std::string>{"self_dice"});
}

TEST(Quality, FitAndEstimateRefuseWhatTheyCannotUse) {
  std::vector<ScanSignals> few(4, sample(0.5, 0.1, 0.5));
  auto e = fit_estimator(few, std::vector<double>(4, 0.5), {"self_dice", "entropy_brain"});
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message.find("too few"), std::string::npos) << e.error().message;

  std::vector<ScanSignals> samples;
  std::vector<double> dsc;
  for (int i = 0; i < 10; ++i) {
    samples.push_back(sample(0.1 * i, 0.01 * i, 0.5));
    dsc.push_back(0.1 * i);
  }
  auto no_teacher = fit_estimator(samples, dsc, {"self_dice", "teacher_dice"});
  ASSERT_FALSE(no_teacher);
  EXPECT_NE(no_teacher.error().message.find("lacks signal 'teacher_dice'"), std::string::npos);

  for (auto& s : samples) s.teacher_dice = 0.7;
  auto with_teacher = fit_estimator(samples, dsc, {"self_dice", "teacher_dice"});
  ASSERT_TRUE(with_teacher) << with_teacher.error().message;
  auto missing = estimate_quality(*with_teacher, sample(0.5, 0.1, 0.5));
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("pass --teacher"), std::string::npos) << missing.error().message;
}

QualityEstimator small_estimator() {
  QualityEstimator e;
  e.features = {"self_dice", "log_lesion_ml"};
  e.mean = {0.5, 1.0};
  e.scale = {0.2, 0.5};
  e.weights = {0.1, 0.05};
  e.intercept = 0.45;
  e.residual_sd = 0.07;
  e.lower = {0.1, 0.0};
  e.upper = {0.9, 2.5};
  e.reference_histogram.assign(kHistogramBins, 1.0 / kHistogramBins);
  e.samples = 80;
  e.fitted_on = "10 labelled scans of utrecht";
  e.fit_spearman = 0.8;
  e.fit_mae = 0.05;
  e.fit_mean_dsc = 0.61;
  return e;
}

TEST(Quality, EstimatorJsonRoundTripsAndMalformedOnesAreRefused) {
  const auto e = small_estimator();
  auto back = estimator_from_json(to_json(e));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->features, e.features);
  EXPECT_EQ(back->weights, e.weights);
  EXPECT_EQ(back->reference_histogram, e.reference_histogram);
  EXPECT_EQ(back->fitted_on, e.fitted_on);
  EXPECT_DOUBLE_EQ(back->residual_sd, e.residual_sd);
  EXPECT_DOUBLE_EQ(back->fit_mean_dsc, 0.61);

  auto bad = e;
  bad.features = {"self_dice", "shoe_size"};
  auto r = estimator_from_json(to_json(bad));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("unknown signal 'shoe_size'"), std::string::npos);
  bad = e;
  bad.weights.pop_back();
  r = estimator_from_json(to_json(bad));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("do not match its 2 features"), std::string::npos);
  bad = e;
  bad.scale[0] = 0;
  r = estimator_from_json(to_json(bad));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("not finite"), std::string::npos);
  bad = e;
  bad.features[1] = "histogram_distance";
  bad.reference_histogram.clear();
  r = estimator_from_json(to_json(bad));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("no reference histogram"), std::string::npos);
  EXPECT_FALSE(estimator_from_json("{\"format\": 3, \"version\": \"x\"}"));
  EXPECT_FALSE(estimator_from_json("{\"format\": \"something else\"}"));
  EXPECT_FALSE(estimator_from_json("not json"));
}

TEST(Quality, AModelFileCarriesItsEstimatorAndKeepsItsWeights) {
  testing::ScratchDir dir;
  ModelSpec spec;
  spec.unet.width = 4;
  spec.unet.depth = 2;
  spec.grid.in_plane_size = {64, 64};
  UNet net(spec.unet);
  ASSERT_TRUE(save_model(dir / "plain.pt", spec, net));
  auto none = read_estimator(dir / "plain.pt");
  ASSERT_TRUE(none) << none.error().message;
  EXPECT_FALSE(none->has_value());

  ASSERT_TRUE(attach_estimator(dir / "plain.pt", small_estimator(), dir / "with.pt"));
  auto carried = read_estimator(dir / "with.pt");
  ASSERT_TRUE(carried) << carried.error().message;
  ASSERT_TRUE(carried->has_value());
  EXPECT_EQ((*carried)->features, small_estimator().features);

  auto a = load_model(dir / "plain.pt", torch::kCPU);
  auto b = load_model(dir / "with.pt", torch::kCPU);
  ASSERT_TRUE(a && b);
  const auto pa = a->net->named_parameters(), pb = b->net->named_parameters();
  for (const auto& p : pa) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();

  auto missing = read_estimator(dir / "nothing.pt");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("nothing.pt"), std::string::npos);
}

}  // namespace
}  // namespace fedda::models
