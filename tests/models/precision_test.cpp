// Precision chosen at run time (precision.h) and what it does to the U-Net: the choice logic on
// any processor's flags, bfloat16 autocast with float32 weights, logits and updates, and
// channels-last memory that changes nothing but speed.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include "torch_compat.h"

#include <cstdlib>

#include "fedda/models_core/precision.h"
#include "networks.h"
#include "wire.h"

namespace fedda::models {
namespace {

TEST(Precision, AutoPicksBFloat16WhereTheProcessorHasItsUnitsOrOnCuda) {
  const std::set<std::string> avx2 = {"sse4_2", "avx2", "fma"};
  const std::set<std::string> avx512 = {"avx2", "fma", "avx512f", "avx512bw"};
  const std::set<std::string> zen4 = {"avx2", "avx512f", "avx512_bf16"};
  const std::set<std::string> sapphire = {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"};
  struct Case {
    std::string requested, device;
    std::set<std::string> flags;
    bool bf16, channels_last;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {"auto", "cpu", avx2, false, false, "auto: the processor has no bfloat16 units"},
      {"auto", "cpu", avx512, false, true, "auto: the processor has no bfloat16 units"},
      {"auto", "cpu", zen4, true, true, "auto: the processor has avx512_bf16"},
      {"auto", "cpu", sapphire, true, true, "auto: the processor has amx_bf16"},
      {"auto", "cuda", avx2, true, false, "auto: CUDA"},
      {"auto", "cuda:1", {}, true, false, "auto: CUDA"},
      {"float32", "cpu", sapphire, false, true, "asked for float32"},
      {"bfloat16", "cpu", avx2, true, true, "emulated"},
      {"bfloat16", "cpu", zen4, true, true, "asked for bfloat16"},
  };
  for (const auto& c : cases) {
    auto p = choose_precision(c.requested, c.device, c.flags);
    ASSERT_TRUE(p) << c.requested;
    EXPECT_EQ(p->bfloat16, c.bf16) << c.requested << " " << c.device;
    EXPECT_EQ(p->channels_last, c.channels_last) << c.requested << " " << c.device;
    EXPECT_NE(p->reason.find(c.reason), std::string::npos) << p->reason;
    // A network that only infers is channels-last on every CPU, whatever training takes; the
    // arithmetic is the training's.
    const auto inferring = for_inference(*p, c.device);
    EXPECT_EQ(inferring.channels_last, c.device == "cpu") << c.requested << " " << c.device;
    EXPECT_EQ(inferring.bfloat16, p->bfloat16);
  }
  auto bad = choose_precision("fp8", "cpu", avx2);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("'fp8'"), std::string::npos);
  EXPECT_EQ(precision_request("auto", "bfloat16"), "bfloat16");   // the site's setting when the job leaves it
  EXPECT_EQ(precision_request("float32", "bfloat16"), "float32");  // the job's explicit choice wins
  EXPECT_EQ(precision_request("", ""), "auto");
}

TEST(Precision, TheFlagsCanBeGivenForAnotherMachine) {
  ::setenv("FEDDA_CPU_FLAGS", "avx2 avx512f amx_bf16", 1);
  auto p = choose_precision("auto", "cpu");
  EXPECT_NE(cpu_description().find("amx_bf16"), std::string::npos);
  ::unsetenv("FEDDA_CPU_FLAGS");
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->bfloat16);
}

UNetSpec small_spec() {
  UNetSpec spec;
  spec.width = 8;
  spec.depth = 2;
  return spec;
}

// Two U-Nets with the same weights, in eval mode: a float32 NCHW reference and one set to
// `precision`.
std::pair<UNet, UNet> twins(std::uint64_t seed, const PrecisionChoice& precision) {
  torch::manual_seed(seed);
  UNet reference(small_spec());
  UNet net(small_spec());
  EXPECT_TRUE(from_wire(*net, to_wire(*reference).value()));
  net->set_precision(precision);
  reference->eval();
  net->eval();
  return {reference, net};
}

TEST(Precision, BFloat16AutocastKeepsWeightsLogitsAndUpdatesFloat32) {
  PrecisionChoice bf16;
  bf16.bfloat16 = true;
  auto [reference, net] = twins(3, bf16);
  const auto x = torch::randn({4, 2, 32, 32});
  const auto expected = reference->forward(x);
  const auto logits = net->forward(x);
  EXPECT_EQ(logits.scalar_type(), torch::kFloat);
  // bfloat16 keeps 8 bits of mantissa: about 1% relative error through a few layers.
  const double scale = expected.abs().max().item<double>();
  EXPECT_LT((logits - expected).abs().max().item<double>(), 0.05 * scale);
  EXPECT_GT((logits - expected).abs().max().item<double>(), 0.0);  // it did compute in bfloat16
  EXPECT_FALSE(compat::autocast_enabled(c10::DeviceType::CPU));  // and left autocast as it found it

  net->train();
  torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(1e-2));
  for (int i = 0; i < 3; ++i) {
    adam.zero_grad();
    net->forward(x).pow(2).mean().backward();
    adam.step();
  }
  for (const auto& p : net->parameters()) EXPECT_EQ(p.scalar_type(), torch::kFloat);
  const auto update = to_wire(*net).value();
  for (const auto& t : update.tensors) {
    if (t.name.find("num_batches_tracked") == std::string::npos) {
      EXPECT_EQ(t.dtype, DType::f32) << t.name;
    }
  }
}

TEST(Precision, ChannelsLastChangesTheLayoutNotTheResultNorTheWeightsOnTheWire) {
  PrecisionChoice nhwc;
  nhwc.channels_last = true;
  auto [reference, net] = twins(4, nhwc);
  const auto x = torch::randn({2, 2, 32, 32});
  EXPECT_TRUE(torch::allclose(net->forward(x), reference->forward(x), 1e-4, 1e-5));
  // Weights leave in the same order and values whatever their memory layout.
  const auto a = to_wire(*net).value(), b = to_wire(*reference).value();
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (std::size_t i = 0; i < a.tensors.size(); ++i) EXPECT_EQ(a.tensors[i].data, b.tensors[i].data) << a.tensors[i].name;
}

}  // namespace
}  // namespace fedda::models
