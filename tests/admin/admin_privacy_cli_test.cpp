// `fedda-admin privacy`: the accountant from the command line, as a consortium uses it to
// choose a job's noise (the published figures are checked in tests/common/privacy_test.cpp).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace fedda {
namespace {

using nlohmann::json;

std::string admin(const std::string& args) { return testing::bin("fedda-admin").string() + " privacy " + args; }

TEST(FeddaAdminPrivacy, PrintsEpsilonForANoiseAndTheNoiseForATarget) {
  auto spent = testing::run_command(admin("--noise-multiplier 1.5 --sample-rate 0.04 --steps 2250 --delta 1e-5 --json"));
  ASSERT_EQ(spent.exit_code, 0) << spent.output;
  const auto e = json::parse(spent.output);
  EXPECT_NEAR(e.at("epsilon").get<double>(), 7.3291, 1e-4);
  EXPECT_EQ(e.at("steps"), 2250);

  auto found = testing::run_command(admin("--target-epsilon 8 --sample-rate 0.04 --steps 2250 --json"));
  ASSERT_EQ(found.exit_code, 0) << found.output;
  const auto s = json::parse(found.output);
  EXPECT_NEAR(s.at("noise_multiplier").get<double>(), 1.4158, 1e-3);
  EXPECT_NEAR(s.at("epsilon").get<double>(), 8.0, 1e-3);
  EXPECT_EQ(s.at("delta").get<double>(), 1e-5);  // the default

  auto people = testing::run_command(admin("--noise-multiplier 1.5 --sample-rate 0.04 --steps 2250"));
  ASSERT_EQ(people.exit_code, 0) << people.output;
  EXPECT_NE(people.output.find("epsilon 7.32911 at delta 1e-05"), std::string::npos) << people.output;
}

TEST(FeddaAdminPrivacy, MistakesAreNamed) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--sample-rate 0.04 --steps 10", "give --noise-multiplier S"},
      {"--noise-multiplier 1 --target-epsilon 3 --sample-rate 0.04 --steps 10", "excludes"},
      {"--noise-multiplier 1 --sample-rate 2 --steps 10", "sample rate 2 is not in (0, 1]"},
      {"--noise-multiplier -1 --sample-rate 0.1 --steps 10", "noise multiplier -1"},
      {"--target-epsilon 1 --sample-rate 0.1 --steps 0", "no steps"},
      {"--noise-multiplier 1 --steps 10", "--sample-rate is required"},
  };
  for (const auto& [args, expected] : cases) {
    auto r = testing::run_command(admin(args));
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_NE(r.output.find(expected), std::string::npos) << args << ": " << r.output;
  }
}

}  // namespace
}  // namespace fedda
