// The experiment's profiles (their budgets) and what each cell trains with (cell_training).
#include <nlohmann/json.hpp>

#include "cells.h"
#include "fedda/experiment/experiment.h"

namespace fedda::experiment {
using nlohmann::json;

const std::vector<std::string>& experiment_profiles() {
  static const std::vector<std::string> p{"smoke", "quick", "standard", "paper", "paper-cpu"};
  return p;
}

Result<ExperimentBudget> experiment_budget(const std::string& profile) {
  ExperimentBudget b;
  if (profile == "smoke") {  // shapes, not numbers: every path runs once, briefly
    b.unet.width = 4;
    b.unet.depth = 2;
    b.grid = {{32, 32}, {6.0, 6.0}};
    b.teacher_epochs = 2;
    b.teacher_draws = 1;  // two epochs of a 4-channel U-Net learn nothing: one draw, its pairs out of the verdict
    b.adapt_epochs = 1;
    b.otf_epochs = 1;
    b.steps = 2;
    b.batch = 4;
    b.curve_every = 1;
  } else if (profile == "quick") {  // 2 CPU cores, about an hour for both modes
    b.unet.width = 16;
    b.unet.depth = 3;
    b.grid = {{64, 64}, {3.0, 3.0}};
    b.teacher_epochs = 40;
    b.adapt_epochs = 8;
    b.otf_epochs = 2;
    b.steps = 8;
    b.batch = 8;
    b.teacher_lr = 3e-3;
    b.adapt_lr = 1e-4;  // the paper's; 1e-3 shook the student off its teacher (README, "Experiment grid")
    b.ada_warmup_epochs = 2;
    b.curve_every = 2;
  } else if (profile == "standard") {  // 2 CPU cores: 56-70 min for both modes (README, seed 27449)
    // Against quick: 1.56x the pixels per slice and twice the adaptation epochs (each method
    // gets 128 steps where quick gives 64); the teachers keep quick's 40 epochs.
    b.unet.width = 16;
    b.unet.depth = 3;
    b.grid = {{80, 80}, {2.4, 2.4}};
    b.teacher_epochs = 40;
    b.adapt_epochs = 16;
    b.otf_epochs = 2;
    b.steps = 8;
    b.batch = 8;
    b.teacher_lr = 3e-3;
    b.adapt_lr = 1e-4;
    b.ada_warmup_epochs = 3;
    b.curve_every = 4;
  } else if (profile == "paper") {  // sized for a GPU (--device cuda)
    b.unet.width = 16;
    b.unet.depth = 4;
    b.grid = {{128, 128}, {1.5, 1.5}};
    b.teacher_epochs = 100;
    b.adapt_epochs = 40;
    b.otf_epochs = 10;
    b.steps = 32;
    b.batch = 8;
    b.teacher_lr = 1e-3;
    b.adapt_lr = 1e-4;
    b.ada_warmup_epochs = 5;
    b.curve_every = 5;
  } else if (profile == "paper-cpu") {  // the paper's grid and regime on 2 CPU cores (README, "Training recipe")
    b.unet.width = 16;
    b.unet.depth = 4;
    b.grid = {{128, 128}, {1.5, 1.5}};
    // Teachers: nnU-Net's augmentation on 64 x 64 patches (a third centred on a lesion), 100
    // epochs of 32 batches of 8, Adam with poly decay (README "Training recipe": whole slices
    // scored the same at 2.5x the time; Adam beat nnU-Net's SGD on every clinic measured).
    b.teacher_epochs = 100;
    b.adapt_epochs = 16;
    b.otf_epochs = 4;
    b.steps = 32;
    b.batch = 8;
    b.teacher_lr = 1e-3;  // Adam's, poly-decayed
    b.adapt_lr = 1e-4;    // the paper's, with Adam, from the teacher
    b.ada_warmup_epochs = 3;
    b.curve_every = 10;
    b.teacher_recipe = *models::recipe_preset("nnunet");
    b.teacher_recipe.optimizer = "adam";
    b.teacher_recipe.patch_size = 64;
    b.teacher_recipe.prefetch = 2;
    b.adapt_recipe = models::with_augmentation_of(models::Recipe{}, b.teacher_recipe);
    b.adapt_recipe.patch_size = 64;
    b.adapt_recipe.prefetch = 2;
    // --student-init scratch: the paper's student, with the teacher's budget and recipe.
    b.scratch_student_as_teacher = true;
  } else {
    return make_error("profile '" + profile + "' is not one of smoke, quick, standard, paper, paper-cpu");
  }
  return b;
}

namespace detail {

// The student's budget (kd, kd-from-ada): its own, or the adaptations'.
int kd_epochs(const ExperimentBudget& b) {
  if (b.student_init == protocol::StudentInit::scratch && b.scratch_student_as_teacher) return b.teacher_epochs;
  return b.kd_epochs > 0 ? b.kd_epochs : b.adapt_epochs;
}
double kd_lr(const ExperimentBudget& b) { return b.kd_lr > 0 ? b.kd_lr : b.adapt_lr; }
bool is_kd(const std::string& method) { return method == "kd" || method == "kd-from-ada" || method == "kd-noisy"; }

json budget_json(const ExperimentBudget& b) {
  return {{"unet", {{"width", b.unet.width}, {"depth", b.unet.depth}, {"norm", b.unet.norm}, {"upsample", b.unet.upsample}}},
          {"grid_size", b.grid.in_plane_size[0]},
          {"grid_spacing_mm", b.grid.in_plane_spacing[0]},
          {"teacher_epochs", b.teacher_epochs},
          {"teacher_draws", b.teacher_draws},
          {"adapt_epochs", b.adapt_epochs},
          {"otf_epochs", b.otf_epochs},
          {"steps_per_epoch", b.steps},
          {"batch", b.batch},
          {"teacher_lr", b.teacher_lr},
          {"adapt_lr", b.adapt_lr},
          {"ada_weight", b.ada_weight},
          {"ada_warmup_epochs", b.ada_warmup_epochs},
          {"temperature", b.temperature},
          {"student_init", protocol::setting_name(b.student_init)},
          {"kd_epochs", b.kd_epochs},
          {"kd_lr", b.kd_lr},
          {"kd_loss", protocol::setting_name(b.kd_loss)},
          {"kd_hard_weight", b.kd_hard_weight},
          {"kd_confidence", b.kd_confidence},
          {"bn_statistics", protocol::setting_name(b.bn_statistics)},
          {"federated_bn", protocol::setting_name(b.federated_bn)},
          {"server_optimizer", protocol::setting_name(b.server_optimizer)},
          {"server_lr", b.server_lr},
          {"curve_every", b.curve_every},
          {"test_time_mirroring", b.test_time_mirroring},
          {"scratch_student_as_teacher", b.scratch_student_as_teacher},
          {"teacher_recipe", json::parse(models::to_json(b.teacher_recipe))},
          {"adapt_recipe", json::parse(models::to_json(b.adapt_recipe))},
          {"noisy_augmentation", json::parse(models::to_json(b.noisy_augmentation))}};
}

}  // namespace detail

namespace {
using detail::is_kd;
using detail::kd_epochs;
using detail::kd_lr;

models::TrainConfig train_config(const ExperimentBudget& b, std::uint64_t seed, const std::string& device,
                                 const std::string& precision, int threads, int epochs, double lr,
                                 const models::Recipe& recipe) {
  models::TrainConfig c;
  c.unet = b.unet;
  c.grid = b.grid;
  c.epochs = epochs;
  c.steps_per_epoch = b.steps;
  c.batch_size = b.batch;
  c.learning_rate = lr;
  c.temperature = b.temperature;
  c.ada_weight = b.ada_weight;
  c.ada_warmup_epochs = b.ada_warmup_epochs;
  c.recipe = recipe;
  c.seed = seed;
  c.device = device;
  c.precision = precision;
  c.threads = threads;
  c.test_time_mirroring = b.test_time_mirroring;
  return c;
}

}  // namespace

CellTraining cell_training(const ExperimentBudget& b, const std::string& method, std::uint64_t seed,
                           const std::string& device, const std::string& precision, int threads) {
  CellTraining t;
  t.teacher = train_config(b, seed, device, precision, threads, b.teacher_epochs, b.teacher_lr, b.teacher_recipe);
  const bool otf = method.rfind("otf-", 0) == 0;
  const bool kd = is_kd(method);
  if (method == "lbound" || method == "lbound-aug") {
    t.adaptation = t.teacher;
  } else if (kd) {
    // A student from scratch learns as the teacher did, where the budget says so; one from the teacher adapts.
    if (b.student_init == protocol::StudentInit::scratch && b.scratch_student_as_teacher) {
      t.adaptation = t.teacher;
    } else {
      t.adaptation = train_config(b, seed, device, precision, threads, kd_epochs(b), kd_lr(b), b.adapt_recipe);
    }
    t.adaptation.kd_init = b.student_init;
  } else {
    t.adaptation = train_config(b, seed, device, precision, threads, otf ? b.otf_epochs : b.adapt_epochs, b.adapt_lr,
                                b.adapt_recipe);
  }
  if (method == "lbound-aug") t.teacher.recipe = models::with_augmentation_of(t.teacher.recipe, b.noisy_augmentation);
  if (method == "kd-noisy") t.adaptation.recipe = models::with_augmentation_of(t.adaptation.recipe, b.noisy_augmentation);
  if (kd || method == "otf-kd") {  // on the fly adapts the teacher, briefly, as it is configured
    t.adaptation.kd_loss = b.kd_loss;
    t.adaptation.kd_hard_weight = b.kd_hard_weight;
    t.adaptation.kd_confidence = b.kd_confidence;
  }
  t.adaptation.bn_statistics = b.bn_statistics;
  if (!otf) t.curve_every = b.curve_every;
  return t;
}

}  // namespace fedda::experiment
