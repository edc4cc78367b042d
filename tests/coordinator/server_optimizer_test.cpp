// The coordinator's step on the averaged model: FedAvg takes it, FedAdam moves by the first
// moment over the root of the second, buffers are averaged, and the moments survive a restart.
#include "server_optimizer.h"

#include <gtest/gtest.h>

#include <cmath>

namespace fedda::coordinator {
namespace {

TensorSet model(float weight, float running_mean) {
  TensorSet s;
  s.tensors.push_back(make_f32("conv.weight", {2}, {weight, weight}));
  s.tensors.push_back(make_f32("bn.running_mean", {1}, {running_mean}));
  return s;
}

TEST(ServerOptimizer, FedAvgTakesTheAverage) {
  ServerOptimizer fedavg(protocol::ServerOptimizer::fedavg, 1.0);
  const auto next = fedavg.step(model(0, 0), model(1, 5)).value();
  EXPECT_EQ(to_f32(next.tensors[0])[0], 1.0f);
  EXPECT_FALSE(fedavg.adaptive());
}

TEST(ServerOptimizer, FedAdamStepsByTheMomentsAndKeepsThemAcrossARestart) {
  ServerOptimizer adam(protocol::ServerOptimizer::fedadam, 0.5);
  // delta = 1 from zero moments: m = 0.1, v = 0.99 tau^2 + 0.01, step = 0.5 * m / (sqrt(v) + tau).
  const auto first = adam.step(model(0, 0), model(1, 5)).value();
  const double v = 0.99 * 1e-6 + 0.01;
  EXPECT_NEAR(to_f32(first.tensors[0])[0], 0.5 * 0.1 / (std::sqrt(v) + 1e-3), 1e-5);
  EXPECT_EQ(to_f32(first.tensors[1])[0], 5.0f);  // a buffer: taken as averaged
  // A second step, and the same second step after the moments were saved and restored.
  const auto second = adam.step(first, model(1, 5)).value();
  ServerOptimizer restarted(protocol::ServerOptimizer::fedadam, 0.5);
  ASSERT_TRUE(restarted.restore(ServerOptimizer(protocol::ServerOptimizer::fedadam, 0.5).state()));  // empty state reads back
  ServerOptimizer again(protocol::ServerOptimizer::fedadam, 0.5);
  (void)again.step(model(0, 0), model(1, 5));
  ServerOptimizer resumed(protocol::ServerOptimizer::fedadam, 0.5);
  ASSERT_TRUE(resumed.restore(again.state()));
  const auto second_resumed = resumed.step(first, model(1, 5)).value();
  EXPECT_FLOAT_EQ(to_f32(second_resumed.tensors[0])[0], to_f32(second.tensors[0])[0]);
  EXPECT_FALSE(adam.step(model(0, 0), TensorSet{}));  // another layout
}

TEST(ServerOptimizer, FedYogiMovesItsSecondMomentBySign) {
  ServerOptimizer yogi(protocol::ServerOptimizer::fedyogi, 0.5);
  const auto next = yogi.step(model(0, 0), model(1, 0)).value();
  EXPECT_GT(to_f32(next.tensors[0])[0], 0.0f);
  EXPECT_TRUE(yogi.adaptive());
}

}  // namespace
}  // namespace fedda::coordinator
