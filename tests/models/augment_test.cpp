// The training recipe: augmentation keeps labels and soft labels on their images, a generator's
// state reproduces a batch, soft labels stay probabilities, patches hold foreground when asked,
// prefetching changes nothing but the thread, and bad recipes are refused naming the key.
#include <gtest/gtest.h>

#include <stdexcept>

#include "augment.h"
#include "data.h"
#include "fedda/models_core/recipe.h"
#include "prefetch.h"

namespace fedda::models {
namespace {

// A batch whose lesion is a bright off-centre blob in channel 0 (and p = 1 there), so any
// misalignment of labels against images shows.
SliceBatch blob_batch(int n = 4, int size = 64) {
  SliceBatch b;
  auto yy = torch::arange(size, torch::kFloat32).view({-1, 1}).expand({size, size});
  auto xx = torch::arange(size, torch::kFloat32).view({1, -1}).expand({size, size});
  const auto blob = ((yy - 20).pow(2) + (xx - 40).pow(2)).lt(64);  // radius 8 around (20, 40)
  auto images = torch::zeros({n, 2, size, size});
  images.select(1, 0).copy_(blob.to(torch::kFloat32).unsqueeze(0).expand({n, size, size}) * 10.0);
  images.select(1, 1).copy_(xx.unsqueeze(0).expand({n, size, size}) / size);
  b.images = images;
  b.labels = blob.to(torch::kInt64).unsqueeze(0).expand({n, size, size}).contiguous();
  b.p = blob.to(torch::kFloat32).unsqueeze(0).expand({n, size, size}).contiguous();
  return b;
}

double dice(const torch::Tensor& a, const torch::Tensor& b) {
  const auto inter = (a & b).sum().item<double>();
  return 2 * inter / (a.sum().item<double>() + b.sum().item<double>());
}

Recipe only(double Recipe::*probability) {
  Recipe r = without_augmentation(Recipe{});
  r.*probability = 1.0;
  r.channel_probability = 1.0;
  return r;
}

TEST(Augmentation, LabelsAndSoftLabelsStayOnTheirImagesUnderEverySpatialTransform) {
  for (auto field : {&Recipe::mirror_probability, &Recipe::rotation_probability, &Recipe::scale_probability,
                     &Recipe::elastic_probability}) {
    auto recipe = only(field);
    recipe.elastic_magnitude = 0.05;
    auto b = blob_batch();
    std::mt19937_64 rng(7);
    augment_slices(b, recipe, rng);
    for (int i = 0; i < 4; ++i) {
      const auto image_lesion = b.images[i][0].gt(5.0);
      const auto label_lesion = b.labels[i].eq(1);
      const auto p_lesion = b.p[i].gt(0.5);
      ASSERT_GT(label_lesion.sum().item<int64_t>(), 50) << "the blob left the slice";
      EXPECT_GT(dice(image_lesion, label_lesion), 0.9) << "slice " << i;
      EXPECT_GT(dice(image_lesion, p_lesion), 0.9) << "slice " << i;
    }
    // Labels keep their classes (nearest), p stays a probability.
    EXPECT_TRUE(((b.labels == 0) | (b.labels == 1)).all().item<bool>());
    EXPECT_GE(b.p.min().item<float>(), 0.0f);
    EXPECT_LE(b.p.max().item<float>(), 1.0f);
  }
}

TEST(Augmentation, MovesTheSliceWhereItSaysItDoes) {
  auto recipe = only(&Recipe::mirror_probability);
  auto b = blob_batch(1);
  std::mt19937_64 rng(1);
  augment_slices(b, recipe, rng);
  EXPECT_TRUE(b.labels[0].equal(blob_batch(1).labels[0].flip({1})));  // mirrored left-right exactly
  recipe = only(&Recipe::rotation_probability);
  recipe.rotation_degrees = 180;
  b = blob_batch(8);
  augment_slices(b, recipe, rng);
  int moved = 0;
  for (int i = 0; i < 8; ++i) moved += !b.labels[i].equal(blob_batch(1).labels[0]);
  EXPECT_GE(moved, 7);  // at most one angle lands close enough to 0 to leave the blob in place
}

TEST(Augmentation, IntensityTransformsLeaveLabelsAndSoftLabelsAlone) {
  for (auto field : {&Recipe::noise_probability, &Recipe::blur_probability, &Recipe::brightness_probability,
                     &Recipe::contrast_probability, &Recipe::low_resolution_probability, &Recipe::gamma_probability,
                     &Recipe::gamma_invert_probability, &Recipe::bias_field_probability}) {
    const auto recipe = only(field);
    auto b = blob_batch();
    const auto before = b.images.clone();
    std::mt19937_64 rng(3);
    augment_slices(b, recipe, rng);
    EXPECT_TRUE(b.labels.equal(blob_batch().labels));
    EXPECT_TRUE(b.p.equal(blob_batch().p));
    EXPECT_FALSE(b.images.equal(before)) << "the transform changed nothing";
    EXPECT_TRUE(torch::isfinite(b.images).all().item<bool>());
  }
}

TEST(Augmentation, TheGeneratorsStateReproducesABatch) {
  const auto recipe = *recipe_preset("heavy");
  auto a = blob_batch(), b = blob_batch(), c = blob_batch();
  std::mt19937_64 ra(42), rb(42), rc(43);
  augment_slices(a, recipe, ra);
  augment_slices(b, recipe, rb);
  augment_slices(c, recipe, rc);
  EXPECT_TRUE(a.images.equal(b.images));
  EXPECT_TRUE(a.labels.equal(b.labels));
  EXPECT_TRUE(a.p.equal(b.p));
  EXPECT_FALSE(a.images.equal(c.images));
}

ScanSlices synthetic_scan(bool soft) {
  ScanSlices s;
  s.id = "test/scan";
  const auto b = blob_batch(6);
  s.images = b.images.clone();
  s.brain = torch::ones({6, 64, 64}, torch::kBool);
  for (int z = 0; z < 6; ++z) s.brain_slices.push_back(z);
  s.lesion_slices = {1, 3};
  if (soft) {
    s.soft = (b.p * 0.9 + 0.05).to(torch::kFloat16);
  } else {
    s.labels = b.labels.clone();
  }
  return s;
}

TEST(Augmentation, AScannerChangeIsOneChangeOfTheWholeScanThatItsSeedReproduces) {
  // Six identical slices stay identical to one another under the heavy recipe's change of the
  // scan: every slice had the same draws.
  const auto same = blob_batch(6).images;
  auto scan = same.clone();
  scanner_change(scan, *recipe_preset("heavy"), 11);
  for (int i = 1; i < 6; ++i) EXPECT_TRUE(scan[i].equal(scan[0])) << "slice " << i;
  // With noise certain: the seed reproduces the change, another seed gives another, and the
  // scan did change.
  const auto noisy = only(&Recipe::noise_probability);
  auto a = same.clone(), b = same.clone(), c = same.clone();
  scanner_change(a, noisy, 7);
  scanner_change(b, noisy, 7);
  scanner_change(c, noisy, 8);
  EXPECT_TRUE(a.equal(b));
  EXPECT_FALSE(a.equal(c));
  EXPECT_FALSE(a.equal(same));
  EXPECT_TRUE(a[5].equal(a[0]));
}

TEST(Augmentation, SoftLabelsStillSumToOneAfterTheHeavyRecipe) {
  const std::vector<ScanSlices> scans{synthetic_scan(true)};
  std::mt19937_64 rng(5);
  const auto batch = sample_batch(scans, 8, 0.5, *recipe_preset("heavy"), rng, torch::kCPU);
  ASSERT_TRUE(batch.soft.defined());
  EXPECT_EQ(batch.soft.sizes(), torch::IntArrayRef({8, 2, 64, 64}));
  EXPECT_LT((batch.soft.sum(1) - 1).abs().max().item<float>(), 1e-6);
  EXPECT_GE(batch.soft.min().item<float>(), 0.0f);
  EXPECT_LE(batch.soft.max().item<float>(), 1.0f);
}

TEST(Augmentation, PatchesCentredOnForegroundHoldALesion) {
  const std::vector<ScanSlices> scans{synthetic_scan(false)};
  auto recipe = without_augmentation(Recipe{});
  recipe.patch_size = 16;
  recipe.foreground_fraction = 1.0;
  std::mt19937_64 rng(9);
  // Lesion slices only: every patch is centred on the blob.
  const auto batch = sample_batch(scans, 16, 1.0, recipe, rng, torch::kCPU);
  EXPECT_EQ(batch.images.sizes(), torch::IntArrayRef({16, 2, 16, 16}));
  EXPECT_EQ(batch.labels.sizes(), torch::IntArrayRef({16, 16, 16}));
  for (int i = 0; i < 16; ++i) {
    EXPECT_GT(batch.labels[i].eq(1).sum().item<int64_t>(), 0) << "patch " << i;
    EXPECT_TRUE(batch.images[i][0].gt(5.0).equal(batch.labels[i].eq(1))) << "patch " << i;
  }
  // Without oversampling, some of a batch of 16 random 16-pixel windows miss a radius-8 blob.
  recipe.foreground_fraction = 0.0;
  const auto random = sample_batch(scans, 16, 1.0, recipe, rng, torch::kCPU);
  int empty = 0;
  for (int i = 0; i < 16; ++i) empty += random.labels[i].eq(1).sum().item<int64_t>() == 0;
  EXPECT_GT(empty, 0);
}

TEST(Prefetcher, HandsOutWhatTheCallersThreadWouldHaveDrawnInOrder) {
  std::mt19937_64 inline_rng(11), background_rng(11);
  std::vector<std::uint64_t> expected;
  for (int i = 0; i < 50; ++i) expected.push_back(inline_rng());
  Prefetcher<std::uint64_t> ahead([&] { return background_rng(); }, 50, 3);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(ahead.next(), expected[static_cast<std::size_t>(i)]);
  EXPECT_GE(ahead.waited_seconds(), 0.0);
}

TEST(Prefetcher, RethrowsTheProducersErrorAndStopsCleanlyWhenLeftEarly) {
  int made = 0;
  Prefetcher<int> failing([&] {
    if (++made == 3) throw std::runtime_error("bad scan");
    return made;
  }, 10, 2);
  EXPECT_EQ(failing.next(), 1);
  EXPECT_EQ(failing.next(), 2);
  EXPECT_THROW(failing.next(), std::runtime_error);
  // Destroyed with items left to make: the destructor stops and joins the producer.
  Prefetcher<int> abandoned([] { return 1; }, 1000, 2);
  EXPECT_EQ(abandoned.next(), 1);
}

TEST(Recipe, RefusesOutOfRangeSettingsNamingTheKey) {
  Recipe r = *recipe_preset("nnunet");
  EXPECT_TRUE(validate(r, 128, 4));
  r.gamma_probability = 1.5;
  auto st = validate(r);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("gamma_probability"), std::string::npos) << st.error().message;
  r = *recipe_preset("nnunet");
  r.scale_min = 2.0;
  r.scale_max = 1.0;
  st = validate(r);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("scale_min"), std::string::npos) << st.error().message;
  r = *recipe_preset("nnunet");
  r.patch_size = 160;
  st = validate(r, 128, 4);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("larger than the model grid"), std::string::npos) << st.error().message;
  r.patch_size = 100;
  st = validate(r, 128, 4);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("multiple of the U-Net's stride 16"), std::string::npos) << st.error().message;
  r.patch_size = 96;
  EXPECT_TRUE(validate(r, 128, 4));
  r.optimizer = "lbfgs";
  st = validate(r);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("optimizer"), std::string::npos);
}

TEST(Recipe, ReadsPresetsAndOverridesFromJsonAndRefusesUnknownKeys) {
  auto r = recipe_from_json(R"({"preset": "nnunet", "patch_size": 96, "optimizer": "adam"})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->patch_size, 96);
  EXPECT_EQ(r->optimizer, "adam");
  EXPECT_EQ(r->gamma_probability, 0.3);  // the preset's
  auto back = recipe_from_json(to_json(*r));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(to_json(*back), to_json(*r));
  auto unknown = recipe_from_json(R"({"preset": "nnunet", "gama_probability": 0.5})");
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message.find("gama_probability"), std::string::npos);
  auto wrong_type = recipe_from_json(R"({"patch_size": "big"})");
  ASSERT_FALSE(wrong_type);
  EXPECT_NE(wrong_type.error().message.find("patch_size"), std::string::npos);
  auto bad_preset = recipe_from_json(R"("nnunet2")");
  ASSERT_FALSE(bad_preset);
  EXPECT_NE(bad_preset.error().message.find("classic, nnunet, heavy"), std::string::npos);
  auto out_of_range = recipe_from_json(R"({"rotation_degrees": 400})");
  ASSERT_FALSE(out_of_range);
  EXPECT_NE(out_of_range.error().message.find("rotation_degrees"), std::string::npos);
  Recipe set;
  EXPECT_TRUE(set_recipe_value(set, "preset=heavy"));
  EXPECT_EQ(set.preset, "heavy");
  EXPECT_TRUE(set_recipe_value(set, "schedule=step"));
  EXPECT_TRUE(set_recipe_value(set, "patch_size=64"));
  EXPECT_EQ(set.schedule, "step");
  EXPECT_EQ(set.patch_size, 64);
  EXPECT_FALSE(set_recipe_value(set, "patchsize=64"));
  EXPECT_FALSE(set_recipe_value(set, "patch_size"));
}

TEST(Recipe, ClassicIsWhatFeddaTrainedWithAndHeavyAugmentsMore) {
  const Recipe classic;
  EXPECT_TRUE(classic_augmentation(classic));
  EXPECT_EQ(classic.optimizer, "adam");
  EXPECT_EQ(classic.schedule, "step");
  EXPECT_FALSE(classic_augmentation(*recipe_preset("nnunet")));
  EXPECT_FALSE(without_augmentation(classic).augments());
  const auto noisy = with_augmentation_of(classic, *recipe_preset("heavy"));
  EXPECT_EQ(noisy.optimizer, "adam");  // the base's optimiser, the heavy preset's transforms
  EXPECT_EQ(noisy.bias_field_probability, recipe_preset("heavy")->bias_field_probability);
}

}  // namespace
}  // namespace fedda::models
