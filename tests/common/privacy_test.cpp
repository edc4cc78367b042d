// The privacy accountant against published figures (Opacus's accountant tests) and the
// properties any accountant must have.
#include <gtest/gtest.h>

#include <cmath>

#include "fedda/common/privacy.h"

namespace fedda::privacy {
namespace {

// Opacus's test_rdp_accountant: sigma 1.5, q 0.04, 90 epochs (2250 steps), delta 1e-5.
TEST(Accountant, AgreesWithOpacusOnItsPublishedEpsilon) {
  auto spent = epsilon({1.5, 0.04, 2250}, 1e-5);
  ASSERT_TRUE(spent) << spent.error().message;
  EXPECT_NEAR(spent->epsilon, 7.32911117143, 7.32911117143 * 1e-6);
  EXPECT_DOUBLE_EQ(spent->order, 3.9);  // a fractional order: the erfc series is the one in use
}

// Opacus's test_get_noise_multiplier gives 1.425307617 for epsilon 8 at the same q, epochs and
// delta. Its search stops once sigma is known to 0.01 (its own accountant puts that sigma at
// epsilon 7.92); this one searches to 1e-6, so it finds the noise that spends 8 exactly, 0.7%
// lower.
TEST(Accountant, FindsTheNoiseOfATargetWithinOnePercentOfOpacus) {
  auto sigma = noise_for_epsilon(8, 0.04, 2250, 1e-5);
  ASSERT_TRUE(sigma) << sigma.error().message;
  EXPECT_NEAR(*sigma, 1.425307617, 1.425307617 * 0.01);
  EXPECT_NEAR(epsilon({*sigma, 0.04, 2250}, 1e-5)->epsilon, 8.0, 1e-3);
  EXPECT_NEAR(epsilon({1.425307617, 0.04, 2250}, 1e-5)->epsilon, 7.919, 1e-3);
}

// Integer orders take the binomial sum, fractional ones the series: near each other they must
// agree (RDP is continuous in the order).
TEST(Accountant, TheIntegerAndFractionalFormulasMeet) {
  for (double q : {0.01, 0.1, 0.5}) {
    for (double sigma : {0.7, 1.5, 4.0}) {
      const double at3 = rdp_of_one_step(q, sigma, 3.0);
      EXPECT_NEAR(rdp_of_one_step(q, sigma, 3.0 + 1e-7), at3, 1e-5 * std::max(at3, 1e-9)) << q << " " << sigma;
      EXPECT_NEAR(rdp_of_one_step(q, sigma, 3.0 - 1e-7), at3, 1e-5 * std::max(at3, 1e-9)) << q << " " << sigma;
    }
  }
  // q = 1 is the plain Gaussian mechanism: alpha / (2 sigma^2).
  EXPECT_DOUBLE_EQ(rdp_of_one_step(1.0, 2.0, 8.0), 1.0);
  // Subsampling never costs more than not subsampling.
  EXPECT_LT(rdp_of_one_step(0.1, 2.0, 8.0), 1.0);
}

TEST(Accountant, MoreStepsOrLessNoiseNeverLowerEpsilonAndAnyNoiseIsFinite) {
  double previous = 0;
  for (long long steps : {1LL, 10LL, 100LL, 1000LL, 10000LL, 100000LL}) {
    const double e = epsilon({1.0, 0.01, steps}, 1e-5)->epsilon;
    EXPECT_GE(e, previous) << steps;
    previous = e;
  }
  previous = 0;
  for (double sigma : {100.0, 10.0, 3.0, 1.0, 0.5, 0.2, 0.05, 0.01}) {
    const double e = epsilon({sigma, 0.01, 1000}, 1e-5)->epsilon;
    EXPECT_TRUE(std::isfinite(e)) << sigma;
    EXPECT_GE(e, previous) << sigma;
    previous = e;
  }
  // More delta, less epsilon; no steps, nothing spent.
  EXPECT_LT(epsilon({1.0, 0.01, 1000}, 1e-3)->epsilon, epsilon({1.0, 0.01, 1000}, 1e-7)->epsilon);
  EXPECT_EQ(epsilon({1.0, 0.01, 0}, 1e-5)->epsilon, 0.0);
}

TEST(Accountant, NonsenseIsRefusedNamingTheValue) {
  const std::vector<std::pair<Result<Spent>, std::string>> cases = {
      {epsilon({0.0, 0.01, 10}, 1e-5), "noise multiplier 0"},
      {epsilon({1.0, 0.0, 10}, 1e-5), "sample rate 0"},
      {epsilon({1.0, 1.5, 10}, 1e-5), "sample rate 1.5"},
      {epsilon({1.0, 0.01, -1}, 1e-5), "steps -1"},
      {epsilon({1.0, 0.01, 10}, 1.0), "delta 1"},
      {epsilon({1.0, 0.01, 10}, 1e-5, {0.5}), "order 0.5"},
  };
  for (const auto& [r, expected] : cases) {
    ASSERT_FALSE(r) << expected;
    EXPECT_NE(r.error().message.find(expected), std::string::npos) << r.error().message;
  }
  auto none = noise_for_epsilon(-1, 0.01, 10, 1e-5);
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message.find("target epsilon -1"), std::string::npos);
  auto unreachable = noise_for_epsilon(1e-9, 1.0, 1000000, 1e-5);
  ASSERT_FALSE(unreachable);
  EXPECT_NE(unreachable.error().message.find("no noise multiplier"), std::string::npos);
}

}  // namespace
}  // namespace fedda::privacy
