// The grid's centralized cells: a teacher's draws (train_teacher_cell), or an adaptation of one
// pair and fold through the centralized harness (centralized.h).
#include <chrono>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cells.h"
#include "fedda/common/files.h"
#include "fedda/common/log.h"
#include "fedda/experiment/centralized.h"
#include "fedda/imaging/dataset.h"
#include "run_layout.h"

namespace fedda::experiment::detail {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

fs::path centralized_dir(const fs::path& out, const Cell& c) {
  if (c.is_teacher()) return layout::teacher_dir(out, c.source, c.method == "teacher-aug");
  return layout::centralized_cell(out, c.pair(), c.fold, c.method);
}

namespace {

// A teacher cell's curve.csv: the kept draw's epochs are the "teacher" curve; the others stay in
// the file under their own stage.
Status write_teacher_curve(const fs::path& file, const std::vector<std::vector<models::EpochReport>>& curves, int kept) {
  std::ostringstream curve;
  curve << "stage,epoch,loss,seconds,slices_per_second\n";
  for (std::size_t d = 0; d < curves.size(); ++d) {
    const std::string stage = static_cast<int>(d) == kept ? "teacher" : "discarded-draw-" + std::to_string(d + 1);
    for (const auto& e : curves[d]) {
      curve << stage << "," << e.epoch << "," << e.loss << "," << e.seconds << "," << e.slices_per_second << "\n";
    }
  }
  return files::write_atomically(file, curve.str());
}

// A teacher cell: up to teacher_draws draws of the source's teacher, each trained afresh until
// one learns (its Dice on its own training scans at least kTeacherLearnedDice), the best kept as
// teacher.pt; its curve and a summary of every draw beside it.
Status train_teacher_cell(const ExperimentOptions& o, const ExperimentBudget& b, const Cell& c, const fs::path& dir,
                          const fs::path& teacher, bool augmented) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  auto source = imaging::find_clinic_subjects(o.data, c.source);
  if (!source) return source.error();
  // Each draw trains teacher.pt afresh; the best so far waits in teacher-best-draw.pt when another follows.
  const auto best_file = dir / "teacher-best-draw.pt";
  const int draws_allowed = std::max(1, b.teacher_draws);
  const auto start = Clock::now();
  std::vector<std::vector<models::EpochReport>> curves;
  json draws = json::array();
  int best = -1;
  double best_dice = -1;
  for (int draw = 0; draw < draws_allowed; ++draw) {
    auto config = cell_training(b, augmented ? "lbound-aug" : "lbound", o.seed, o.device, o.precision, o.threads).teacher;
    config.seed = o.seed + 1000003ULL * static_cast<std::uint64_t>(draw);  // draw 0: the grid's seed
    const auto progress = [&](const models::EpochReport& e) {
      log::get("centralized")->info("teacher {} (draw {}) epoch {}/{}: loss {:.4f}, {:.1f} slices/s", c.source,
                                    draw + 1, e.epoch, b.teacher_epochs, e.loss, e.slices_per_second);
    };
    auto r = models::train_supervised(*source, config, teacher, "teacher", progress);
    if (!r) return r.error();
    // Scored on its own training scans: not a measure of quality, a check that it learned at all.
    // Scans whose Dice is undefined (no WMH in truth or prediction) are left out of the mean.
    auto scores = models::evaluate_model(teacher, *source, o.device, o.precision);
    if (!scores) return scores.error();
    int scored = 0;
    const double mean = models::mean_dice(*scores, &scored);
    const double dice = scored ? mean : 0.0;
    const bool learned = dice >= kTeacherLearnedDice;
    const bool last = learned || draw + 1 >= draws_allowed;
    curves.push_back(r->epochs);
    draws.push_back({{"draw", draw + 1},
                     {"seed", config.seed},
                     {"final_loss", r->epochs.empty() ? 0.0 : r->epochs.back().loss},
                     {"source_dice", dice},
                     {"scored_scans", scored},
                     {"seconds", r->seconds}});
    log::get("centralized")->info("teacher {} (draw {}): mean Dice {:.3f} on its own {} scans{}", c.source, draw + 1,
                                  dice, scored,
                                  learned ? "" : last ? ": it learned nothing of its source, no draws left"
                                                      : ": it learned nothing of its source, training another draw");
    if (dice > best_dice) {
      best = draw;
      best_dice = dice;
      if (!last) {
        fs::copy_file(teacher, best_file, fs::copy_options::overwrite_existing, ec);
        if (ec) return make_error(best_file.string() + ": cannot write: " + ec.message());
      }
    }
    if (last) break;
  }
  // None learned: keep the best of them (the verdict leaves its pairs out either way).
  if (best + 1 != static_cast<int>(draws.size())) {
    fs::rename(best_file, teacher, ec);
    if (ec) return make_error(teacher.string() + ": cannot restore the best draw: " + ec.message());
  }
  fs::remove(best_file, ec);
  if (auto st = write_teacher_curve(dir / "curve.csv", curves, best); !st) return st;
  json summary = {{"source", c.source},
                  {"method", c.method},
                  {"mode", "centralized"},
                  {"seconds", std::chrono::duration<double>(Clock::now() - start).count()},
                  {"source_dice", best_dice},
                  {"learned", best_dice >= kTeacherLearnedDice},
                  {"kept_draw", best + 1},
                  {"draws_allowed", draws_allowed},
                  {"draws", draws}};
  return files::write_atomically(dir / "summary.json", summary.dump(2) + "\n");
}

}  // namespace

// Runs one centralized cell; returns its results.csv rows.
Result<std::string> run_centralized_cell(const ExperimentOptions& o, const ExperimentBudget& b, const Cell& c) {
  const auto dir = centralized_dir(o.out, c);
  const bool augmented = c.method == "teacher-aug" || c.method == "lbound-aug";
  const auto teacher = layout::teacher_model(o.out, c.source, augmented);
  if (c.method == "teacher" || c.method == "teacher-aug") {
    if (auto st = train_teacher_cell(o, b, c, dir, teacher, augmented); !st) return st.error();
    return std::string();
  }
  CentralizedOptions co;
  co.data = o.data;
  co.out = dir;
  co.source = c.source;
  co.target = c.target;
  co.method = c.method;
  co.fold = c.fold;
  const auto training = cell_training(b, c.method, o.seed, o.device, o.precision, o.threads);
  co.teacher = training.teacher;
  co.adaptation = training.adaptation;
  co.curve_every = training.curve_every;
  co.teacher_model = teacher;
  // kd-from-ada distils the ada cell's model of the same pair and fold (trained here if missing).
  co.ada_model = layout::centralized_cell(o.out, c.pair(), c.fold, "ada") / "model.pt";
  co.ubound_from_teacher = true;
  auto r = run_centralized(co);
  if (!r) return r.error();
  return csv_rows(dir / "results.csv");
}

}  // namespace fedda::experiment::detail
