// Unit tests of the networks and losses (LibTorch inside).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "fedda/models_core/model_spec.h"
#include "losses.h"
#include "model_io.h"
#include "networks.h"
#include "support/test_support.h"

namespace fedda::models {
namespace {

TEST(DistillationLoss, IsZeroWhenStudentEqualsTeacher) {
  torch::manual_seed(0);
  const auto logits = torch::randn({3, 2, 8, 8}) * 3;
  for (double T : {1.0, 2.0, 5.0}) {
    const auto loss = distillation_loss(logits, tempered_softmax(logits, T), T);
    EXPECT_NEAR(loss.item<double>(), 0.0, 1e-6) << "T=" << T;
  }
  const auto other = torch::randn({3, 2, 8, 8});
  EXPECT_GT(distillation_loss(other, tempered_softmax(logits, 2.0), 2.0).item<double>(), 0.01);
}

TEST(DistillationLoss, GradientIsTTimesPosteriorDifference) {
  torch::manual_seed(1);
  const auto teacher = torch::randn({2, 2, 4, 4}) * 2;
  for (double T : {1.0, 2.0, 4.0}) {
    auto student = (torch::randn({2, 2, 4, 4}) * 2).requires_grad_(true);
    const auto soft = tempered_softmax(teacher, T);
    distillation_loss(student, soft, T).backward();
    const double voxels = 2 * 4 * 4;
    const auto expected = T * (tempered_softmax(student.detach(), T) - soft) / voxels;
    EXPECT_TRUE(torch::allclose(student.grad(), expected, 1e-5, 1e-7)) << "T=" << T;
  }
}

TEST(SupervisedLoss, IgnoresOtherPathology) {
  auto logits = torch::zeros({1, 2, 1, 2});
  logits.index_put_({0, 1, 0, 0}, 5.0);  // confident WMH at voxel 0
  const auto wrong_on_label2 = torch::tensor({2, 1}, torch::kInt64).reshape({1, 1, 2});
  const auto only_voxel1 = torch::tensor({1}, torch::kInt64).reshape({1, 1, 1});
  const double with_label2 = supervised_loss(logits, wrong_on_label2, 1.0).item<double>();
  const double without = supervised_loss(logits.index({torch::indexing::Slice(), torch::indexing::Slice(),
                                                       torch::indexing::Slice(), torch::indexing::Slice(1, 2)}),
                                         only_voxel1, 1.0)
                             .item<double>();
  EXPECT_NEAR(with_label2, without, 1e-6);
}

TEST(Discriminator, HasThePapersLayersAndOutputsTwoLogits) {
  Discriminator d(2);
  const auto out = d->forward(torch::rand({3, 2, 128, 128}));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, 2}));
  std::vector<int64_t> conv_filters, fc_outputs;
  for (const auto& p : d->named_parameters()) {
    if (p.key().find("weight") == std::string::npos) continue;
    if (p.value().dim() == 4) conv_filters.push_back(p.value().size(0));
    if (p.value().dim() == 2) fc_outputs.push_back(p.value().size(0));
  }
  EXPECT_EQ(conv_filters, (std::vector<int64_t>{8, 16, 32, 64}));
  EXPECT_EQ(fc_outputs, (std::vector<int64_t>{64, 128, 2}));
}

TEST(UNet, OutputMatchesInputForEveryConfiguration) {
  for (const char* up : {"transposed", "nearest_conv"})
    for (const char* norm : {"batch", "instance", "none"}) {
      UNetSpec s;
      s.width = 4;
      s.depth = 3;
      s.upsample = up;
      s.norm = norm;
      UNet net(s);
      const auto out = net->forward(torch::randn({2, 2, 32, 48}));
      EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 2, 32, 48})) << up << " " << norm;
    }
}

TEST(UNet, SmallNetworkOverfitsOneBatch) {
  torch::manual_seed(1);
  torch::set_num_threads(2);
  UNetSpec s;
  s.width = 8;
  s.depth = 2;
  UNet net(s);
  // Two channels of noise with a bright square "lesion" in the first; labels mark it.
  auto images = torch::randn({4, 2, 32, 32}) * 0.3;
  auto labels = torch::zeros({4, 32, 32}, torch::kInt64);
  for (int b = 0; b < 4; ++b) {
    const int x = 4 + 5 * b, y = 20 - 4 * b;
    images.index_put_({b, 0, torch::indexing::Slice(y, y + 6), torch::indexing::Slice(x, x + 6)}, 1.5);
    labels.index_put_({b, torch::indexing::Slice(y, y + 6), torch::indexing::Slice(x, x + 6)}, 1);
  }
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-2));
  for (int step = 0; step < 120; ++step) {
    opt.zero_grad();
    const auto loss = supervised_loss(net->forward(images), labels, 1.0);
    loss.backward();
    opt.step();
  }
  net->eval();
  const auto predicted = net->forward(images).argmax(1);
  const double overlap = (predicted * labels).sum().item<double>();
  const double dice = 2 * overlap / (predicted.sum().item<double>() + labels.sum().item<double>());
  EXPECT_GT(dice, 0.9);
}

TEST(ModelFile, RoundTripIsExactAndCarriesTheSpec) {
  testing::ScratchDir dir;
  ModelSpec spec;
  spec.unet.width = 4;
  spec.unet.depth = 2;
  spec.unet.upsample = "nearest_conv";
  spec.grid.in_plane_size = {64, 64};
  spec.grid.in_plane_spacing = {3.0, 3.0};
  spec.role = "teacher";
  UNet net(spec.unet);
  // Make batch-norm buffers non-trivial too.
  net->train();
  net->forward(torch::randn({2, 2, 16, 16}));
  ASSERT_TRUE(save_model(dir / "m.pt", spec, net));
  auto loaded = load_model(dir / "m.pt", torch::kCPU);
  ASSERT_TRUE(loaded) << loaded.error().message;
  EXPECT_EQ(to_json(loaded->spec), to_json(spec));
  const auto a = net->named_parameters(), b = loaded->net->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& p : a) EXPECT_TRUE(torch::equal(p.value(), b[p.key()])) << p.key();
  const auto ba = net->named_buffers(), bb = loaded->net->named_buffers();
  for (const auto& p : ba) EXPECT_TRUE(torch::equal(p.value(), bb[p.key()])) << p.key();
}

TEST(ModelFile, RefusesCorruptForeignAndMismatchedFiles) {
  testing::ScratchDir dir;
  std::ofstream(dir / "junk.pt") << "not a model";
  auto junk = load_model(dir / "junk.pt", torch::kCPU);
  ASSERT_FALSE(junk);
  EXPECT_NE(junk.error().message.find("junk.pt"), std::string::npos);

  auto missing = load_model(dir / "none.pt", torch::kCPU);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("no such model file"), std::string::npos);

  // Weights of width 4 under a spec that claims width 8: another architecture.
  ModelSpec spec;
  spec.unet.width = 4;
  spec.unet.depth = 2;
  spec.grid.in_plane_size = {64, 64};
  UNet net(spec.unet);
  torch::serialize::OutputArchive archive;
  ModelSpec lie = spec;
  lie.unet.width = 8;
  archive.write("fedda.spec", c10::IValue(to_json(lie)));
  net->save(archive);
  archive.save_to((dir / "lie.pt").string());
  auto mismatched = load_model(dir / "lie.pt", torch::kCPU);
  ASSERT_FALSE(mismatched);
  EXPECT_NE(mismatched.error().message.find("do not match the architecture"), std::string::npos)
      << mismatched.error().message;

  // A newer format version.
  std::string future = to_json(spec);
  future.replace(future.find("\"version\":1"), 11, "\"version\":99");
  torch::serialize::OutputArchive newer;
  newer.write("fedda.spec", c10::IValue(future));
  net->save(newer);
  newer.save_to((dir / "new.pt").string());
  auto too_new = load_model(dir / "new.pt", torch::kCPU);
  ASSERT_FALSE(too_new);
  EXPECT_NE(too_new.error().message.find("newer"), std::string::npos) << too_new.error().message;
}

TEST(Device, CpuAlwaysWorksAndUnknownDevicesAreRefused) {
  EXPECT_TRUE(parse_device("cpu"));
  EXPECT_FALSE(parse_device("tpu"));
  if (!torch::cuda::is_available()) {
    auto cuda = parse_device("cuda");
    ASSERT_FALSE(cuda);
    EXPECT_NE(cuda.error().message.find("CUDA"), std::string::npos);
  }
}

TEST(KdLoss, ThePapersFormIsTheCrossEntropyWithTheStudentAtTOne) {
  torch::manual_seed(4);
  const auto student = torch::randn({2, 2, 4, 4});
  const auto teacher = torch::softmax(torch::randn({2, 2, 4, 4}) / 2.0, 1);
  const auto expected = -(teacher * torch::log_softmax(student, 1)).sum(1).mean();
  EXPECT_NEAR(paper_distillation_loss(student, teacher).item<double>(), expected.item<double>(), 1e-6);
  // Hinton's form is the default; with no hard term kd_loss is the distillation term alone.
  EXPECT_NEAR(kd_loss(student, teacher, 2.0, KdObjective{}).item<double>(), distillation_loss(student, teacher, 2.0).item<double>(), 1e-6);
}

TEST(KdLoss, TheTeachersConfidentVoxelsBecomeHardLabels) {
  // Teacher logits with p(WMH) at T = 1 of 0.95, 0.6, 0.4, 0.05 on four voxels; the soft labels
  // hold them at T = 2.
  const auto p = torch::tensor({0.95f, 0.6f, 0.4f, 0.05f});
  const auto logit = torch::log(p / (1 - p));
  const auto logits = torch::stack({torch::zeros(4), logit}).reshape({1, 2, 1, 4});
  const auto soft = tempered_softmax(logits, 2.0);
  const auto back = teacher_probability(soft, 2.0).flatten();
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(back[i].item<float>(), p[i].item<float>(), 1e-3);
  const auto all = confident_labels(soft, 2.0, 0.5).flatten();  // every voxel: the argmax
  EXPECT_EQ(all[0].item<int64_t>(), 1);
  EXPECT_EQ(all[1].item<int64_t>(), 1);
  EXPECT_EQ(all[2].item<int64_t>(), 0);
  EXPECT_EQ(all[3].item<int64_t>(), 0);
  const auto confident = confident_labels(soft, 2.0, 0.9).flatten();  // the uncertain two are left out
  EXPECT_EQ(confident[0].item<int64_t>(), 1);
  EXPECT_EQ(confident[1].item<int64_t>(), kIgnoreLabel);
  EXPECT_EQ(confident[2].item<int64_t>(), kIgnoreLabel);
  EXPECT_EQ(confident[3].item<int64_t>(), 0);
  // The hard term adds to the distillation term.
  KdObjective hard;
  hard.hard_weight = 1;
  const auto student = torch::zeros({1, 2, 1, 4});
  EXPECT_GT(kd_loss(student, soft, 2.0, hard).item<double>(), kd_loss(student, soft, 2.0, KdObjective{}).item<double>());
}

}  // namespace
}  // namespace fedda::models
