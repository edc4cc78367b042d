// fedda-sim centralized: one cell of the paper's grid without federation.
#include <memory>

#include "experiment_commands.h"
#include "fedda/common/log.h"
#include "fedda/experiment/centralized.h"
#include "fedda/models/precision.h"

namespace fedda::experiment::tools {

void add_centralized(CLI::App& app, int& rc) {
  struct Args {
    CentralizedOptions o;
    std::string data, out;
    int teacher_epochs = 12, epochs = 8, steps = 32, batch = 8, width = 16, depth = 4, grid = 128, threads = 0;
    double lr = 1e-3, spacing = 1.5;
    std::string device = "cpu", upsample = "nearest_conv", norm = "batch", precision = "auto";
    std::string student_init = "teacher", kd_loss = "hinton", bn_statistics = "shared";
    double kd_hard_weight = 0, kd_confidence = 0.5, adapt_lr = 0;
    int curve_every = 0;
    std::uint64_t seed = 1;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "centralized",
      "Run one cell of the seed paper's experiment without federation (the reference): train the source "
      "teacher (kept as OUT/teacher.pt and reused), adapt with the method, and score the held-out half of "
      "the target clinic. Fold 0 adapts on the first half of the target's subjects and tests on the second; "
      "fold 1 swaps them. Writes OUT/model.pt, OUT/results.csv, OUT/curve.csv and OUT/summary.json.");
  cmd->add_option("--data", a->data, "data folder in the WMH layout")->required();
  cmd->add_option("--source", a->o.source, "labelled source clinic")->required();
  cmd->add_option("--target", a->o.target, "target clinic")->required();
  cmd->add_option("--method", a->o.method, "lbound, ubound, ada, kd, kd-from-ada, otf-kd or otf-ada")->required();
  cmd->add_option("--fold", a->o.fold, "0 or 1")->capture_default_str()->check(CLI::Range(0, 1));
  cmd->add_option("--out", a->out, "output folder")->required();
  cmd->add_option("--teacher-epochs", a->teacher_epochs, "epochs of the source teacher and of the U-bound")->capture_default_str();
  cmd->add_option("--epochs", a->epochs, "epochs of kd / ada adaptation (from the teacher)")->capture_default_str();
  cmd->add_option("--steps", a->steps, "batches per epoch")->capture_default_str();
  cmd->add_option("--batch", a->batch, "slices per batch")->capture_default_str();
  cmd->add_option("--lr", a->lr, "Adam learning rate (decayed x0.1 after 3/8 of the epochs)")->capture_default_str();
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
  cmd->add_option("--threads", a->threads, "LibTorch intra-op threads (0: its default)")->capture_default_str();
  cmd->add_option("--seed", a->seed, "random seed")->capture_default_str();
  cmd->add_option("--student-init", a->student_init, "kd: the student starts as the teacher, or from scratch (teacher | scratch)")
      ->capture_default_str()->check(CLI::IsMember({"teacher", "scratch"}));
  cmd->add_option("--kd-loss", a->kd_loss, "kd: hinton (T^2 KL at T on both sides) or paper (eq. 3 as written: student at T = 1)")
      ->capture_default_str()->check(CLI::IsMember({"hinton", "paper"}));
  cmd->add_option("--kd-hard-weight", a->kd_hard_weight,
                  "kd: weight of a supervised term (cross-entropy + soft Dice) on the teacher's confident voxels")
      ->capture_default_str();
  cmd->add_option("--kd-confidence", a->kd_confidence, "kd: confident voxels have teacher p(WMH) >= c or <= 1 - c")
      ->capture_default_str()->check(CLI::Range(0.5, 1.0));
  cmd->add_option("--bn-statistics", a->bn_statistics,
                  "kd / ada: shared, or target (batch-norm statistics recomputed on the target's scans: AdaBN)")
      ->capture_default_str()->check(CLI::IsMember({"shared", "target"}));
  cmd->add_option("--adapt-lr", a->adapt_lr, "learning rate of kd / ada (default: --lr)")->capture_default_str();
  cmd->add_option("--curve-every", a->curve_every, "score the test half every N adaptation epochs (curve.csv)")
      ->capture_default_str();
  cmd->callback([a, &rc]() {
    models::TrainConfig c;
    c.unet.width = a->width;
    c.unet.depth = a->depth;
    c.unet.norm = a->norm;
    c.unet.upsample = a->upsample;
    c.grid.in_plane_size = {static_cast<std::size_t>(a->grid), static_cast<std::size_t>(a->grid)};
    c.grid.in_plane_spacing = {a->spacing, a->spacing};
    c.steps_per_epoch = a->steps;
    c.batch_size = a->batch;
    c.learning_rate = a->lr;
    c.device = a->device;
    c.precision = a->precision;
    c.threads = a->threads;
    c.seed = a->seed;
    a->o.data = a->data;
    a->o.out = a->out;
    a->o.teacher = c;
    a->o.teacher.epochs = a->teacher_epochs;
    a->o.adaptation = c;
    a->o.adaptation.epochs = a->epochs;
    a->o.adaptation.kd_init = a->student_init;
    a->o.adaptation.kd_loss = a->kd_loss;
    a->o.adaptation.kd_hard_weight = a->kd_hard_weight;
    a->o.adaptation.kd_confidence = a->kd_confidence;
    a->o.adaptation.bn_statistics = a->bn_statistics;
    if (a->adapt_lr > 0) a->o.adaptation.learning_rate = a->adapt_lr;
    a->o.curve_every = a->curve_every;
    auto r = run_centralized(a->o);
    if (!r) {
      log::get("fedda-sim")->error("{}", r.error().message);
      rc = 1;
      return;
    }
    log::get("fedda-sim")->info("{} -> {} fold {} {}: mean DSC {:.3f} over {} subjects ({:.0f} s); {}/results.csv",
                                a->o.source, a->o.target, a->o.fold, a->o.method, r->mean_dsc, r->rows.size(),
                                r->seconds, a->out);
    rc = 0;
  });
}

}  // namespace fedda::experiment::tools
