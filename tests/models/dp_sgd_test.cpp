// DP-SGD with the patient as the unit: a patient's gradient is clipped, the noise has the scale
// the accountant assumes, nobody's statistics enter batch norm, and the noise is not the job's.
#include <gtest/gtest.h>

#include <cmath>

#include "dp_sgd.h"

namespace fedda::models {
namespace {

// N patients, each one "slice" x of 4 features; patient `outlier` has x 100 times the others'.
struct Toy {
  torch::nn::Linear net{torch::nn::LinearOptions(4, 1).bias(false)};
  std::vector<ScanSlices> patients;
  std::vector<torch::Tensor> x;
  Toy(int n, int outlier) {
    torch::NoGradGuard no_grad;
    net->weight.zero_();
    for (int i = 0; i < n; ++i) {
      ScanSlices s;
      s.id = "clinic/p" + std::to_string(i);
      patients.push_back(s);
      auto xi = torch::full({1, 4}, 0.1f);
      if (i == outlier) xi *= 100;
      x.push_back(xi);
    }
  }
  // The weight moved by one step of SGD (lr 1) under `dp`.
  torch::Tensor step(const DpSgd& dp, SecretRandom& secret) {
    torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(1.0));
    const auto before = net->weight.detach().clone();
    const auto micro_batch = [&](const ScanSlices& s) {
      Batch b;
      const int i = std::stoi(s.id.substr(s.id.find("/p") + 2));
      b.images = x[i];
      return b;
    };
    const auto loss = [&](const Batch& b) { return net->forward(b.images).sum(); };  // gradient = x
    dp_step(*net, sgd, patients, dp, micro_batch, loss, secret);
    return net->weight.detach() - before;
  }
};

TEST(DpSgd, OnePatientsGradientIsClippedToTheNorm) {
  SecretRandom secret;
  const int n = 10;
  const DpSgd dp{1.0, 0.0, 1.0};  // C 1, no noise, every patient joins: the clipping alone
  // Honest patients' gradients have norm 0.2 (under C); the outlier's 20 (100x).
  Toy honest(n, -1), hostile(n, 3);
  const auto a = honest.step(dp, secret), b = hostile.step(dp, secret);
  // Unclipped, the outlier would move the weight by (20 - 0.2) / 10 = 1.98 more than an honest
  // patient; clipped, by no more than C / expected batch = 1 / 10.
  const double extra = (b - a).norm().item<double>();
  EXPECT_LE(extra, 1.0 / n + 1e-6);
  EXPECT_GT(extra, 0.05);  // it still counts: clipped to C, not dropped
  EXPECT_NEAR(a.norm().item<double>(), 0.2, 1e-5);  // honest patients are not clipped
}

// ADA: what a site sends (the discriminator's gradient) and the segmenter it steps are one
// vector per patient, so the clip holds over both together, not over each.
TEST(DpSgd, AGradientOverTwoModulesIsClippedAsOneVector) {
  SecretRandom secret;
  const int n = 10;
  const DpSgd dp{1.0, 0.0, 1.0};
  torch::nn::Linear a{torch::nn::LinearOptions(4, 1).bias(false)}, b{torch::nn::LinearOptions(4, 1).bias(false)};
  std::vector<ScanSlices> patients(n);
  for (int i = 0; i < n; ++i) patients[i].id = "p" + std::to_string(i);
  const std::vector<torch::Tensor> params = {a->weight, b->weight};
  // Module a's gradient is x (0.1 per feature, norm 0.2), b's is 2x (norm 0.4): 0.447 together,
  // under C. Patient p3's is 100x (44.7 together).
  const auto mean_gradient = [&](int outlier) {
    const auto backward = [&](const ScanSlices& s) {
      auto x = torch::full({1, 4}, 0.1f);
      if (s.id == "p" + std::to_string(outlier)) x *= 100;
      const auto l = a->forward(x).sum() + 2 * b->forward(x).sum();
      l.backward();
      return l.item<double>();
    };
    const auto r = dp_gradient(params, patients, dp, backward, secret);
    EXPECT_EQ(r.subjects, n);
    // It reports each patient's norm before the clip, and how many the clip shortened.
    EXPECT_EQ(r.clipped, outlier < 0 ? 0 : 1);
    EXPECT_EQ(r.norms.size(), static_cast<std::size_t>(n));
    for (int i = 0; i < static_cast<int>(r.norms.size()); ++i) {
      EXPECT_NEAR(r.norms[i], std::sqrt(0.2) * (i == outlier ? 100 : 1), 1e-4) << i;
    }
    return torch::cat({a->weight.grad().flatten(), b->weight.grad().flatten()}).clone();
  };
  const auto honest = mean_gradient(-1), hostile = mean_gradient(3);
  EXPECT_NEAR(honest.norm().item<double>(), std::sqrt(4 * 0.01 + 4 * 0.04), 1e-5);  // unclipped
  // Clipped as one vector, p3 adds (1 - 0.447) / n to the joint mean, its halves in a's and b's
  // proportion, 1 : 2. Each module clipped to C alone would add 0.08 and 0.06: 0.1 in all, 4 : 3.
  const auto d = hostile - honest;
  EXPECT_NEAR(d.norm().item<double>(), (1.0 - std::sqrt(0.2)) / n, 1e-5);
  EXPECT_NEAR(d.slice(0, 4, 8).norm().item<double>() / d.slice(0, 0, 4).norm().item<double>(), 2.0, 1e-4);
}

TEST(DpSgd, TheNoiseHasTheScaleTheAccountantAssumes) {
  SecretRandom secret;
  const int n = 20;
  const DpSgd dp{0.5, 2.0, 0.25};  // C 0.5, sigma 2, q 0.25: expected batch 5 patients
  Toy toy(n, -1);
  std::vector<double> moves;
  for (int k = 0; k < 400; ++k) {
    const auto d = toy.step(dp, secret);
    for (int j = 0; j < 4; ++j) moves.push_back(d[0][j].item<double>());
  }
  double mean = 0, var = 0;
  for (double m : moves) mean += m;
  mean /= moves.size();
  for (double m : moves) var += (m - mean) * (m - mean);
  const double sd = std::sqrt(var / (moves.size() - 1));
  // sigma C / (q N) = 2 * 0.5 / 5 = 0.2 per coordinate, and the sampling's own spread (0.04).
  EXPECT_NEAR(sd, std::sqrt(0.2 * 0.2 + 0.0387 * 0.0387), 0.02);
  EXPECT_NEAR(mean, -0.1, 0.03);  // the clean part: 0.1 a joined patient, 5 expected, over 5
}

TEST(DpSgd, AStepThatNoPatientJoinedStillStepsOnTheNoise) {
  SecretRandom secret;
  Toy toy(4, -1);
  const DpSgd dp{1.0, 1.0, 1e-9};
  const auto d = toy.step(dp, secret);
  EXPECT_GT(d.norm().item<double>(), 0.0);
}

TEST(DpSgd, TheNoiseIsGaussianAndNotTheJobsToReplay) {
  // From OpenSSL: two sources never agree, and nothing of the job seeds them.
  SecretRandom a, b;
  EXPECT_FALSE(torch::allclose(a.gaussian({16}, 1.0), b.gaussian({16}, 1.0)));
  const auto z = a.gaussian({200001}, 2.0).to(torch::kFloat64);  // an odd count: the last pair half used
  EXPECT_NEAR(z.mean().item<double>(), 0.0, 0.02);
  EXPECT_NEAR(z.std().item<double>(), 2.0, 0.02);
  EXPECT_NEAR((z.abs() > 2.0).to(torch::kFloat64).mean().item<double>(), 0.3173, 0.005);  // beyond one sd
  for (int i = 0; i < 1000; ++i) {
    const double u = a.uniform();
    ASSERT_TRUE(u > 0 && u <= 1) << u;
  }
}

TEST(DpSgd, BatchNormIsFrozenSoNoPatientsStatisticsEnterTheModel) {
  torch::nn::Sequential net(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 2, 3).padding(1)), torch::nn::BatchNorm2d(2));
  net->train();
  freeze_batch_norm(*net);
  auto* bn = net[1]->as<torch::nn::BatchNorm2d>();
  const auto mean = bn->running_mean.clone();
  net->forward(torch::randn({2, 1, 8, 8}) * 5 + 3);
  EXPECT_TRUE(torch::equal(bn->running_mean, mean));
  EXPECT_FALSE(bn->is_training());
  EXPECT_TRUE(net[0]->is_training());
}

TEST(DpSgd, TheSampleRateIsTheExpectedBatchOverThePatients) {
  EXPECT_DOUBLE_EQ(dp_sample_rate(10, 8, 4), 0.2);   // two patients a step out of ten
  EXPECT_DOUBLE_EQ(dp_sample_rate(1, 8, 4), 1.0);    // never above 1
}

}  // namespace
}  // namespace fedda::models
