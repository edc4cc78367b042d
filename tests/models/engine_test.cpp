// The training engine through its LibTorch-free interface, on simulated smoke data.
#include "fedda/models/engine.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "fedda/common/files.h"
#include "fedda/imaging/nifti_io.h"
#include "fedda/models/federated.h"
#include "fedda/models_core/weights.h"
#include "fedda/simulation/generator.h"
#include "support/test_support.h"

namespace fedda::models {
namespace {

namespace fs = std::filesystem;
using imaging::SubjectFiles;

class Engine : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = new testing::ScratchDir();
    simulation::GenerateOptions o;
    o.profile = simulation::Profile::kSmoke;
    o.subjects = 2;
    o.clinics = {"utrecht", "singapore"};
    o.out = data_->path();
    auto generated = simulation::generate(o);
    ASSERT_TRUE(generated) << generated.error().message;
  }
  static void TearDownTestSuite() {
    delete data_;
    data_ = nullptr;
  }
  static std::vector<SubjectFiles> clinic(const std::string& name) {
    return imaging::find_clinic_subjects(data_->path(), name).value();
  }
  static TrainConfig tiny() {
    TrainConfig c;
    c.unet.width = 4;
    c.unet.depth = 2;
    c.grid.in_plane_size = {64, 64};
    c.grid.in_plane_spacing = {3.0, 3.0};
    c.epochs = 2;
    c.steps_per_epoch = 2;
    c.batch_size = 2;
    c.threads = 2;
    c.seed = 5;
    return c;
  }
  // Trains `c` (from epoch 1, into a fresh checkpoint) until after its first epoch, then resumes
  // that checkpoint to c.epochs into dir_ / out; returns the resumed run's report.
  TrainReport interrupted_and_resumed(TrainConfig c, const std::string& out) {
    c.checkpoint = dir_ / (out + ".ckpt");
    const int epochs = c.epochs;
    c.epochs = 1;
    EXPECT_TRUE(train_supervised(clinic("utrecht"), c, dir_ / (out + ".partial")));
    c.epochs = epochs;
    auto resumed = train_supervised(clinic("utrecht"), c, dir_ / out);
    EXPECT_TRUE(resumed) << resumed.error().message;
    if (!resumed) return {};
    EXPECT_EQ(resumed->resumed_from_epoch, 1);
    return *resumed;
  }
  bool same_bytes(const std::string& a, const std::string& b) {
    return *files::read_all(dir_ / a) == *files::read_all(dir_ / b);
  }
  testing::ScratchDir dir_;

 private:
  static testing::ScratchDir* data_;
};
testing::ScratchDir* Engine::data_ = nullptr;

TEST_F(Engine, SameSeedGivesTheSameWeights) {
  auto c = tiny();
  ASSERT_TRUE(train_supervised(clinic("utrecht"), c, dir_ / "a.pt"));
  ASSERT_TRUE(train_supervised(clinic("utrecht"), c, dir_ / "b.pt"));
  c.seed = 6;
  ASSERT_TRUE(train_supervised(clinic("utrecht"), c, dir_ / "c.pt"));
  // Compared as bytes (printing them on failure would be useless).
  EXPECT_TRUE(*files::read_all(dir_ / "a.pt") == *files::read_all(dir_ / "b.pt"));
  EXPECT_FALSE(*files::read_all(dir_ / "a.pt") == *files::read_all(dir_ / "c.pt"));
}

TEST_F(Engine, ResumingFromACheckpointIsExact) {
  auto c = tiny();
  c.epochs = 3;
  c.checkpoint = dir_ / "straight.ckpt";
  auto straight = train_supervised(clinic("utrecht"), c, dir_ / "straight.pt");
  ASSERT_TRUE(straight) << straight.error().message;
  EXPECT_EQ(straight->epochs.size(), 3u);

  EXPECT_EQ(interrupted_and_resumed(c, "resumed.pt").epochs.size(), 2u);
  EXPECT_TRUE(same_bytes("straight.pt", "resumed.pt"));
}

TEST_F(Engine, AveragedWeightsAreWhatIsSavedWhileTrainingItselfIsUnchanged) {
  auto c = tiny();
  c.epochs = 1;
  c.steps_per_epoch = 1;
  ModelSpec spec;
  spec.unet = c.unet;
  spec.grid = c.grid;
  spec.role = "teacher";
  ASSERT_TRUE(write_model_weights(dir_ / "init.pt", spec, new_model_weights(spec, 3).value()));
  c.init_model = dir_ / "init.pt";
  c.curve_every = 1;
  c.curve_subjects = clinic("singapore");
  auto plain = train_supervised(clinic("utrecht"), c, dir_ / "trained.pt");
  ASSERT_TRUE(plain) << plain.error().message;
  EXPECT_TRUE(std::isnan(plain->epochs.back().curve_dsc_unaveraged));
  c.recipe.weight_average = 0.5;  // the first step's decay: min(0.5, (1 + 0) / (10 + 0)) = 0.1
  auto with_average = train_supervised(clinic("utrecht"), c, dir_ / "averaged.pt");
  ASSERT_TRUE(with_average) << with_average.error().message;
  // The curve scores the averaged model, and at the last epoch the weights as trained beside it:
  // the plain run's model.
  EXPECT_EQ(with_average->epochs.back().curve_dsc_unaveraged, plain->epochs.back().curve_dsc);
  const auto averaged_scores = evaluate_model(dir_ / "averaged.pt", clinic("singapore"));
  ASSERT_TRUE(averaged_scores) << averaged_scores.error().message;
  EXPECT_NEAR(with_average->epochs.back().curve_dsc, mean_dice(*averaged_scores), 1e-9);
  const auto initial = read_model_weights(dir_ / "init.pt").value().weights;
  const auto trained = read_model_weights(dir_ / "trained.pt").value().weights;
  const auto averaged = read_model_weights(dir_ / "averaged.pt").value().weights;
  ASSERT_EQ(averaged.tensors.size(), trained.tensors.size());
  for (std::size_t i = 0; i < averaged.tensors.size(); ++i) {
    const auto& name = averaged.tensors[i].name;
    const auto a = to_f32(averaged.tensors[i]), w0 = to_f32(initial.tensors[i]), w1 = to_f32(trained.tensors[i]);
    ASSERT_EQ(a.size(), w1.size()) << name;
    for (std::size_t k = 0; k < a.size(); ++k) {
      // Counters are the trained ones; every float is 0.1 of the start and 0.9 of the step.
      const float expected = averaged.tensors[i].dtype == DType::i64 ? w1[k] : 0.1f * w0[k] + 0.9f * w1[k];
      ASSERT_NEAR(a[k], expected, 1e-5f + 1e-5f * std::fabs(expected)) << name << "[" << k << "]";
    }
  }
  EXPECT_GT(l2_distance(trained, averaged), 1e-6);

  // The average travels in the checkpoint: a resumed run saves the same averaged weights.
  c = tiny();
  c.epochs = 3;
  c.recipe.weight_average = 0.9;
  c.checkpoint = dir_ / "straight.ckpt";
  ASSERT_TRUE(train_supervised(clinic("utrecht"), c, dir_ / "straight.pt"));
  interrupted_and_resumed(c, "resumed.pt");
  EXPECT_TRUE(same_bytes("straight.pt", "resumed.pt"));
  c.recipe.weight_average = 1;
  auto refused = train_supervised(clinic("utrecht"), c, dir_ / "refused.pt");
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("weight_average is 1, outside [0, 0.9999]"), std::string::npos)
      << refused.error().message;
}

TEST_F(Engine, TheNnunetRecipeResumesExactlyAndPrefetchingChangesNothingButTheThread) {
  auto c = tiny();
  c.epochs = 3;
  c.recipe = *recipe_preset("nnunet");
  c.recipe.patch_size = 32;
  c.recipe.foreground_fraction = 0.5;
  c.learning_rate = 1e-2;
  auto straight = train_supervised(clinic("utrecht"), c, dir_ / "inline.pt");
  ASSERT_TRUE(straight) << straight.error().message;
  // Poly decay, epoch by epoch, from the initial step size.
  EXPECT_DOUBLE_EQ(straight->epochs[0].learning_rate, 1e-2);
  EXPECT_NEAR(straight->epochs[2].learning_rate, 1e-2 * std::pow(1.0 / 3.0, 0.9), 1e-12);
  c.recipe.prefetch = 2;
  const auto resumed = interrupted_and_resumed(c, "prefetched.pt");
  EXPECT_TRUE(same_bytes("inline.pt", "prefetched.pt"));
  for (const auto& e : resumed.epochs) {
    EXPECT_GE(e.data_wait_share, 0.0);
    EXPECT_LE(e.data_wait_share, 1.0);
  }
  // The same recipe drives distillation and adversarial adaptation.
  auto kd = train_kd(dir_ / "inline.pt", clinic("utrecht"), clinic("singapore"), c, dir_ / "kd.pt");
  ASSERT_TRUE(kd) << kd.error().message;
  auto ada = train_ada(dir_ / "inline.pt", clinic("utrecht"), clinic("singapore"), c, dir_ / "ada.pt");
  ASSERT_TRUE(ada) << ada.error().message;
}

TEST_F(Engine, ARecipeThatCannotTrainTheGridIsRefusedBeforeTraining) {
  auto c = tiny();
  c.recipe.patch_size = 96;  // the grid is 64
  auto r = train_supervised(clinic("utrecht"), c, dir_ / "never.pt");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("recipe: patch_size 96 is larger than the model grid (64)"), std::string::npos)
      << r.error().message;
  EXPECT_FALSE(fs::exists(dir_ / "never.pt"));
}

TEST_F(Engine, DistillationAndAdversarialAdaptationTrainFromTheTeacherAndProduceScorableModels) {
  auto c = tiny();
  ASSERT_TRUE(train_supervised(clinic("utrecht"), c, dir_ / "teacher.pt"));
  auto kd = train_kd(dir_ / "teacher.pt", clinic("utrecht"), clinic("singapore"), c, dir_ / "kd.pt");
  ASSERT_TRUE(kd) << kd.error().message;
  auto ada = train_ada(dir_ / "teacher.pt", clinic("utrecht"), clinic("singapore"), c, dir_ / "ada.pt");
  ASSERT_TRUE(ada) << ada.error().message;
  EXPECT_EQ(read_model_spec(dir_ / "kd.pt")->role, "student");
  EXPECT_EQ(read_model_spec(dir_ / "ada.pt")->role, "ada");
  // Each ran every epoch it was given, with a finite loss, and moved away from the teacher it
  // started from (the student starts as the teacher by default; ADA adapts the teacher).
  for (const auto* report : {&*kd, &*ada}) {
    ASSERT_EQ(report->epochs.size(), static_cast<std::size_t>(c.epochs));
    for (const auto& e : report->epochs) {
      EXPECT_TRUE(std::isfinite(e.loss)) << "epoch " << e.epoch;
      EXPECT_GT(e.slices_per_second, 0.0);
    }
  }
  const auto teacher = read_model_weights(dir_ / "teacher.pt").value().weights;
  const auto student = read_model_weights(dir_ / "kd.pt").value().weights;
  const auto adapted = read_model_weights(dir_ / "ada.pt").value().weights;
  EXPECT_GT(l2_distance(teacher, student), 1e-4);
  EXPECT_GT(l2_distance(teacher, adapted), 1e-4);
  EXPECT_GT(l2_distance(student, adapted), 1e-4);
  // Scored per subject of the target, with metrics that agree with each other.
  auto scores = evaluate_model(dir_ / "kd.pt", clinic("singapore"));
  ASSERT_TRUE(scores) << scores.error().message;
  ASSERT_EQ(scores->size(), 2u);
  std::set<std::string> subjects;
  for (const auto& s : *scores) {
    EXPECT_EQ(s.clinic, "singapore");
    subjects.insert(s.subject);
    EXPECT_GE(s.metrics.recall, 0.0);
    EXPECT_LE(s.metrics.recall, 1.0);
    if (std::isfinite(s.metrics.dsc)) {
      EXPECT_GE(s.metrics.dsc, 0.0);
      EXPECT_LE(s.metrics.dsc, 1.0);
    }
  }
  EXPECT_EQ(subjects.size(), 2u);
}

// ADA under dp at a target site, through the site's trainer: each patient's segmenter and
// discriminator gradients are clipped together to C, so the mean discriminator gradient it
// sends is no longer than C (the raw one is hundreds of times longer; without the clip this test
// reads 0.93 against C 0.001); in its warm-up rounds (adversarial weight 0, so its step rate is
// 0) it sends the segmenter back unmoved.
TEST_F(Engine, AnAdaTargetUnderDpSendsClippedDiscriminatorGradientsAndStepsNoSegmenterInWarmUp) {
  const auto c = tiny();
  SiteJobOptions o;
  o.type = protocol::JobType::ada;
  o.spec.unet = c.unet;
  o.spec.grid = c.grid;
  o.train = clinic("singapore");  // 2 subjects
  o.domain = 1;
  o.batch_size = 4;
  o.threads = 2;
  o.precision = "float32";
  o.dp.clip_norm = 1e-3;
  o.dp.noise_multiplier = 1e-3;  // noise of sd 1e-6 a coordinate: small beside C
  o.dp.slices_per_subject = 2;   // q = (4 / 2) / 2 = 1: both patients join every step
  o.planned_steps = 6;
  auto trainer = SiteTrainer::open(o, {});
  ASSERT_TRUE(trainer) << trainer.error().message;
  ASSERT_TRUE((*trainer)->dp().on);
  EXPECT_DOUBLE_EQ((*trainer)->dp().sample_rate, 1.0);
  const auto model = new_model_weights(o.spec, 1).value();
  const auto discriminator = new_discriminator_weights(o.spec, 2).value();
  const auto norm = [](const TensorSet& t) {
    TensorSet zero = t;
    for (auto& w : zero.tensors) w = make_f32(w.name, w.shape, std::vector<float>(to_f32(w).size(), 0.0f));
    return l2_distance(t, zero);
  };
  auto warm_up = (*trainer)->train(1, model, discriminator, 3, 1e-3, 0.0);
  ASSERT_TRUE(warm_up) << warm_up.error().message;
  EXPECT_EQ(l2_distance(warm_up->model, model), 0.0);
  const double sent = norm(warm_up->discriminator_grads);
  EXPECT_GT(sent, 0.0);
  EXPECT_LE(sent, 1e-3 * 1.3);
  auto adversarial = (*trainer)->train(2, model, discriminator, 3, 1e-3, 0.1);
  ASSERT_TRUE(adversarial) << adversarial.error().message;
  EXPECT_GT(l2_distance(adversarial->model, model), 0.0);
  EXPECT_LE(norm(adversarial->discriminator_grads), 1e-3 * 1.3);
  // Without dp the same site sends the raw mean gradient: far longer than C.
  o.dp = {};
  auto plain = SiteTrainer::open(o, {});
  ASSERT_TRUE(plain) << plain.error().message;
  auto raw = (*plain)->train(1, model, discriminator, 3, 1e-3, 0.0);
  ASSERT_TRUE(raw) << raw.error().message;
  EXPECT_GT(norm(raw->discriminator_grads), 1e-3 * 10);
}

TEST_F(Engine, SegmentKeepsAnObliqueAnisotropicScansGeometry) {
  auto c = tiny();
  c.epochs = 1;
  ASSERT_TRUE(train_supervised(clinic("utrecht"), c, dir_ / "m.pt"));
  const auto s = clinic("singapore").front();
  auto subject = imaging::read_subject(s.flair, s.t1, std::nullopt);
  ASSERT_TRUE(subject);
  const auto oblique = testing::oblique_geometry(subject->flair.geometry.size[0], subject->flair.geometry.size[1],
                                                 subject->flair.geometry.size[2]);
  subject->flair.geometry = oblique;
  subject->t1.geometry = oblique;
  ASSERT_TRUE(imaging::write_image(dir_ / "flair.nii.gz", subject->flair));
  ASSERT_TRUE(imaging::write_image(dir_ / "t1.nii.gz", subject->t1));
  ASSERT_TRUE(segment_scan(dir_ / "m.pt", dir_ / "flair.nii.gz", dir_ / "t1.nii.gz", dir_ / "seg.nii.gz"));
  auto seg = imaging::read_label_map(dir_ / "seg.nii.gz");
  ASSERT_TRUE(seg) << seg.error().message;
  EXPECT_TRUE(imaging::same_geometry(seg->geometry, oblique)) << imaging::geometry_difference(seg->geometry, oblique);
}

TEST_F(Engine, BadInputIsAClearErrorAndWritesNothing) {
  auto c = tiny();
  auto none = train_supervised({}, c, dir_ / "x.pt");
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message.find("no labelled subjects"), std::string::npos);

  auto unlabelled = clinic("utrecht");
  unlabelled[1].labels.reset();
  auto r = train_supervised(unlabelled, c, dir_ / "x.pt");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("utrecht/" + unlabelled[1].subject), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("no labels"), std::string::npos) << r.error().message;

  std::ofstream(dir_ / "corrupt.pt") << "garbage";
  const auto s = clinic("singapore").front();
  auto seg = segment_scan(dir_ / "corrupt.pt", s.flair, s.t1, dir_ / "seg.nii.gz");
  ASSERT_FALSE(seg);
  EXPECT_NE(seg.error().message.find("corrupt.pt"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ / "x.pt"));
  EXPECT_FALSE(fs::exists(dir_ / "seg.nii.gz"));

  c.device = "cuda";
  if (!check_device("cuda")) {
    auto cuda = train_supervised(clinic("utrecht"), c, dir_ / "x.pt");
    ASSERT_FALSE(cuda);
    EXPECT_NE(cuda.error().message.find("CUDA"), std::string::npos);
  }
}

}  // namespace
}  // namespace fedda::models
