// fedda-sim centralized: one cell of the paper's grid without federation.
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <thread>

#include "experiment_commands.h"
#include "fedda/common/log.h"
#include "fedda/experiment/centralized.h"
#include "fedda/experiment/experiment.h"
#include "fedda/models_core/recipe.h"
#include "fedda/models_core/precision.h"

namespace fedda::experiment::tools {

namespace {

// One training option of the command: its flag and what it sets in the teacher's and the
// method's configurations. Without --profile every option applies (with its default); with it,
// only those given on the command line override the profile's.
struct Setting {
  const char* flag;
  std::function<Status(models::TrainConfig& teacher, models::TrainConfig& adaptation)> apply;
};

struct Args {
  CentralizedOptions o;
  std::string data, out, profile;
  int teacher_epochs = 12, epochs = 8, steps = 32, batch = 8, width = 16, depth = 4, grid = 128, threads = 0;
  double lr = 1e-3, spacing = 1.5;
  std::string device = "cpu", upsample = "nearest_conv", norm = "batch", precision = "auto";
  std::string student_init = "teacher", kd_loss = "hinton", bn_statistics = "shared", recipe = "classic";
  std::vector<std::string> recipe_set;
  double kd_hard_weight = 0, kd_confidence = 0.5, adapt_lr = 0;
  int curve_every = 0;
  bool test_time_mirroring = false;
  std::uint64_t seed = 1;
};

CLI::App* add_options(CLI::App& app, const std::shared_ptr<Args>& a) {
  auto* cmd = app.add_subcommand(
      "centralized",
      "Run one cell of the seed paper's experiment without federation (the reference): train the source "
      "teacher (kept as OUT/teacher.pt and reused), adapt with the method, and score the held-out half of "
      "the target clinic. Fold 0 adapts on the first half of the target's subjects and tests on the second; "
      "fold 1 swaps them. With --source equal to --target (lbound, lbound-aug) the teacher trains on one half "
      "of the clinic and is scored on the other: its in-domain Dice. --profile takes every training setting "
      "from an experiment profile, exactly as `fedda-sim experiment` trains that cell; options given beside it "
      "override the profile's. Writes OUT/model.pt, OUT/results.csv, OUT/curve.csv (loss, learning rate, test "
      "Dice, share of time waiting for batches per epoch) and OUT/summary.json (mean_dsc).");
  std::string methods;
  for (const auto& m : centralized_methods()) methods += (methods.empty() ? "" : ", ") + m;
  std::string profiles;
  for (const auto& p : experiment_profiles()) profiles += (profiles.empty() ? "" : ", ") + p;
  cmd->add_option("--data", a->data, "data folder in the WMH layout")->required();
  cmd->add_option("--source", a->o.source, "labelled source clinic")->required();
  cmd->add_option("--target", a->o.target, "target clinic")->required();
  cmd->add_option("--method", a->o.method, methods)->required()->check(CLI::IsMember(centralized_methods()));
  cmd->add_option("--fold", a->o.fold, "0 or 1")->capture_default_str()->check(CLI::Range(0, 1));
  cmd->add_option("--out", a->out, "output folder")->required();
  cmd->add_option("--profile", a->profile,
                  profiles + ": every training setting below defaults to the profile's (as the experiment grid trains the cell)")
      ->check(CLI::IsMember(experiment_profiles()));
  cmd->add_option("--teacher-epochs", a->teacher_epochs, "epochs of the source teacher and of the U-bound")->capture_default_str();
  cmd->add_option("--epochs", a->epochs, "epochs of kd / ada adaptation (from the teacher)")->capture_default_str();
  cmd->add_option("--steps", a->steps, "batches per epoch")->capture_default_str();
  cmd->add_option("--batch", a->batch, "slices per batch")->capture_default_str();
  cmd->add_option("--lr", a->lr, "learning rate (the recipe's optimiser and schedule)")->capture_default_str();
  cmd->add_option("--width", a->width, "U-Net width (channels of the first level)")->capture_default_str();
  cmd->add_option("--depth", a->depth, "U-Net depth (down-samplings)")->capture_default_str();
  cmd->add_option("--norm", a->norm, "batch, instance or none")->capture_default_str();
  cmd->add_option("--upsample", a->upsample, "transposed or nearest_conv")->capture_default_str();
  cmd->add_option("--grid", a->grid, "in-plane size of the model grid (voxels)")->capture_default_str();
  cmd->add_option("--spacing", a->spacing, "in-plane spacing of the model grid (mm)")->capture_default_str();
  cmd->add_option("--device", a->device, "cpu or cuda")->capture_default_str();
  cmd->add_option("--precision", a->precision,
                  "auto (bfloat16 where the processor has bfloat16 units, or on CUDA), float32 or bfloat16")
      ->capture_default_str()->check(CLI::IsMember(models::precision_names()));
  cmd->add_option("--threads", a->threads, "LibTorch intra-op threads (0: every core)")->capture_default_str();
  cmd->add_option("--seed", a->seed, "random seed")->capture_default_str();
  std::string presets;
  for (const auto& p : models::recipe_presets()) presets += (presets.empty() ? "" : ", ") + p;
  cmd->add_option("--recipe", a->recipe,
                  "training recipe of teacher and method: a preset (" + presets +
                      ") or a JSON object {\"preset\": ..., key: value}; README \"Training recipe\"")
      ->capture_default_str();
  cmd->add_option("--recipe-set", a->recipe_set,
                  "KEY=VALUE on top of the recipe, for teacher and method (repeatable; `fedda-sim recipe` lists the keys)");
  cmd->add_option("--student-init", a->student_init, "kd: the student starts as the teacher, or from scratch (teacher | scratch)")
      ->capture_default_str()->check(CLI::IsMember(protocol::setting_names<protocol::StudentInit>()));
  cmd->add_option("--kd-loss", a->kd_loss, "kd: hinton (T^2 KL at T on both sides) or paper (eq. 3 as written: student at T = 1)")
      ->capture_default_str()->check(CLI::IsMember(protocol::setting_names<protocol::KdLoss>()));
  cmd->add_option("--kd-hard-weight", a->kd_hard_weight,
                  "kd: weight of a supervised term (cross-entropy + soft Dice) on the teacher's confident voxels")
      ->capture_default_str();
  cmd->add_option("--kd-confidence", a->kd_confidence, "kd: confident voxels have teacher p(WMH) >= c or <= 1 - c")
      ->capture_default_str()->check(CLI::Range(0.5, 1.0));
  cmd->add_option("--bn-statistics", a->bn_statistics,
                  "kd / ada: shared, or local (batch-norm statistics recomputed on the target's scans: AdaBN; "
                  "a job's bn_statistics: local is FedBN); 'target' is taken as local")
      ->capture_default_str()->check(CLI::IsMember({"shared", "local", "target"}));
  cmd->add_option("--adapt-lr", a->adapt_lr, "learning rate of kd / ada (default: --lr)")->capture_default_str();
  cmd->add_option("--curve-every", a->curve_every, "score the test half every N adaptation epochs (curve.csv)")
      ->capture_default_str();
  cmd->add_flag("--test-time-mirroring", a->test_time_mirroring,
                "score with p(WMH) the mean of the model's on each slice and on its left-right mirror image (nnU-Net's "
                "test-time mirroring; twice the inference time)");
  return cmd;
}

std::vector<Setting> training_settings(const std::shared_ptr<Args>& a) {
  const auto both = [](auto set) {
    return [set](models::TrainConfig& t, models::TrainConfig& m) {
      set(t);
      set(m);
      return Status::success();
    };
  };
  const auto method_only = [](auto set) {
    return [set](models::TrainConfig&, models::TrainConfig& m) {
      set(m);
      return Status::success();
    };
  };
  return {
      {"--teacher-epochs", [a](models::TrainConfig& t, models::TrainConfig&) { t.epochs = a->teacher_epochs; return Status::success(); }},
      {"--epochs", method_only([a](models::TrainConfig& c) { c.epochs = a->epochs; })},
      {"--steps", both([a](models::TrainConfig& c) { c.steps_per_epoch = a->steps; })},
      {"--batch", both([a](models::TrainConfig& c) { c.batch_size = a->batch; })},
      {"--lr", both([a](models::TrainConfig& c) { c.learning_rate = a->lr; })},
      {"--width", both([a](models::TrainConfig& c) { c.unet.width = a->width; })},
      {"--depth", both([a](models::TrainConfig& c) { c.unet.depth = a->depth; })},
      {"--norm", both([a](models::TrainConfig& c) { c.unet.norm = a->norm; })},
      {"--upsample", both([a](models::TrainConfig& c) { c.unet.upsample = a->upsample; })},
      {"--grid", both([a](models::TrainConfig& c) {
         c.grid.in_plane_size = {static_cast<std::size_t>(a->grid), static_cast<std::size_t>(a->grid)};
       })},
      {"--spacing", both([a](models::TrainConfig& c) { c.grid.in_plane_spacing = {a->spacing, a->spacing}; })},
      {"--device", both([a](models::TrainConfig& c) { c.device = a->device; })},
      {"--precision", both([a](models::TrainConfig& c) { c.precision = a->precision; })},
      {"--threads", both([a](models::TrainConfig& c) { c.threads = a->threads; })},
      {"--seed", both([a](models::TrainConfig& c) { c.seed = a->seed; })},
      {"--test-time-mirroring", both([a](models::TrainConfig& c) { c.test_time_mirroring = a->test_time_mirroring; })},
      {"--recipe",
       [a](models::TrainConfig& t, models::TrainConfig& m) -> Status {
         const bool object = a->recipe.find('{') != std::string::npos;
         auto r = models::recipe_from_json(object ? a->recipe : "\"" + a->recipe + "\"");
         if (!r) return make_error("--recipe: " + r.error().message);
         t.recipe = m.recipe = *r;
         return Status::success();
       }},
      {"--student-init", method_only([a](models::TrainConfig& c) { c.kd_init = *protocol::parse_setting<protocol::StudentInit>(a->student_init, "--student-init"); })},
      {"--kd-loss", method_only([a](models::TrainConfig& c) { c.kd_loss = *protocol::parse_setting<protocol::KdLoss>(a->kd_loss, "--kd-loss"); })},
      {"--kd-hard-weight", method_only([a](models::TrainConfig& c) { c.kd_hard_weight = a->kd_hard_weight; })},
      {"--kd-confidence", method_only([a](models::TrainConfig& c) { c.kd_confidence = a->kd_confidence; })},
      {"--bn-statistics", method_only([a](models::TrainConfig& c) {
         c.bn_statistics = a->bn_statistics == "target" ? protocol::BnStatistics::local  // AdaBN's earlier name
                                                        : *protocol::parse_setting<protocol::BnStatistics>(a->bn_statistics, "--bn-statistics");
       })},
  };
}

// The teacher's and the method's configurations: the profile's (or the options' defaults), the
// options given, the recipe's overrides, validated against the model grid.
Status configure(const std::shared_ptr<Args>& a, const CLI::App& cmd, models::TrainConfig& teacher,
                 models::TrainConfig& adaptation) {
  // LibTorch's own default can be a single thread on a VM; train on every core, as the grid does.
  if (a->threads <= 0) a->threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  a->o.curve_every = a->curve_every;
  const bool profiled = !a->profile.empty();
  if (profiled) {
    auto budget = experiment_budget(a->profile);
    if (!budget) return budget.error();
    // Where the student starts decides its whole budget (paper-cpu: from scratch, the teacher's).
    if (cmd.count("--student-init")) budget->student_init = *protocol::parse_setting<protocol::StudentInit>(a->student_init, "--student-init");
    const auto training = cell_training(*budget, a->o.method, a->seed, a->device, a->precision, a->threads);
    teacher = training.teacher;
    adaptation = training.adaptation;
    if (!cmd.count("--curve-every")) a->o.curve_every = training.curve_every;
  }
  for (const auto& s : training_settings(a)) {
    if (profiled && !cmd.count(s.flag)) continue;
    if (auto st = s.apply(teacher, adaptation); !st) return st;
  }
  if ((!profiled || cmd.count("--adapt-lr")) && a->adapt_lr > 0) adaptation.learning_rate = a->adapt_lr;
  for (const auto& assignment : a->recipe_set) {
    for (auto* c : {&teacher, &adaptation}) {
      if (auto st = models::set_recipe_value(c->recipe, assignment); !st) {
        return make_error("--recipe-set " + assignment + ": " + st.error().message);
      }
    }
  }
  // Without a profile, the methods beyond the paper add the heavy preset's transforms to the
  // recipe given (the grid's default noisy_augmentation), so that they are not lbound and kd again.
  const auto heavy = *models::recipe_preset("heavy");
  if (!profiled && a->o.method == "lbound-aug") teacher.recipe = models::with_augmentation_of(teacher.recipe, heavy);
  if (!profiled && a->o.method == "kd-noisy") adaptation.recipe = models::with_augmentation_of(adaptation.recipe, heavy);
  // As the grid: U-Bound fine-tunes the teacher with the adaptation's budget.
  a->o.ubound_from_teacher = profiled;
  for (auto* c : {&teacher, &adaptation}) {
    if (auto st = models::validate(c->recipe, static_cast<int>(c->grid.in_plane_size[0]), c->unet.depth); !st) {
      return make_error("recipe: " + st.error().message);
    }
  }
  return Status::success();
}

}  // namespace

void add_centralized(CLI::App& app, int& rc) {
  auto a = std::make_shared<Args>();
  auto* cmd = add_options(app, a);
  cmd->callback([a, cmd, &rc]() {
    auto log = log::get("fedda-sim");
    models::TrainConfig teacher, adaptation;
    if (auto st = configure(a, *cmd, teacher, adaptation); !st) {
      log->error("{}", st.error().message);
      rc = 2;
      return;
    }
    a->o.data = a->data;
    a->o.out = a->out;
    a->o.teacher = teacher;
    a->o.adaptation = adaptation;
    auto r = run_centralized(a->o);
    if (!r) {
      log->error("{}", r.error().message);
      rc = 1;
      return;
    }
    log->info("{} -> {} fold {} {}: mean DSC {:.3f} over {} subjects ({:.0f} s); {}/results.csv", a->o.source,
              a->o.target, a->o.fold, a->o.method, r->mean_dsc, r->rows.size(), r->seconds, a->out);
    rc = 0;
  });
}

void add_recipe(CLI::App& app, int& rc) {
  struct Args {
    std::string preset = "classic";
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "recipe",
      "Print a training recipe's settings (augmentation, patches, optimiser, schedule, prefetch): each key, its "
      "value in the preset, its range and what it does. Job files (`recipe:`), --recipe and --recipe-set take the same keys.");
  cmd->add_option("--preset", a->preset, "classic, nnunet or heavy")->capture_default_str()->check(
      CLI::IsMember(models::recipe_presets()));
  cmd->add_flag("--json", a->json, "the preset as one JSON object");
  cmd->callback([a, &rc] {
    const auto recipe = *models::recipe_preset(a->preset);
    if (a->json) {
      std::cout << models::to_json(recipe) << "\n";
      rc = 0;
      return;
    }
    std::printf("recipe %s: optimizer %s, schedule %s\n", recipe.preset.c_str(), recipe.optimizer.c_str(),
                recipe.schedule.c_str());
    std::printf("  %-28s %10s  %-18s %s\n", "key", "value", "range", "what it does");
    for (const auto& k : models::recipe_keys()) {
      char range[64];
      std::snprintf(range, sizeof range, "[%g, %g]", k.min, k.max);
      std::printf("  %-28s %10g  %-18s %s\n", k.name, recipe.*k.field, range, k.help);
    }
    rc = 0;
  });
}

}  // namespace fedda::experiment::tools
