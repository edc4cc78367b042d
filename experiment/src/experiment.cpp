#include "fedda/experiment/experiment.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "fedda/common/files.h"
#include "fedda/common/log.h"
#include "fedda/imaging/dataset.h"
#include "fedda/experiment/centralized.h"
#include "fedda/experiment/consortium.h"
#include "grid.h"
#include "results_csv.h"

namespace fedda::experiment {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;
using detail::Cell;
using detail::Grid;

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

namespace {

// The student's budget (kd, kd-from-ada): its own, or the adaptations'.
int kd_epochs(const ExperimentBudget& b) {
  if (b.student_init == protocol::StudentInit::scratch && b.scratch_student_as_teacher) return b.teacher_epochs;
  return b.kd_epochs > 0 ? b.kd_epochs : b.adapt_epochs;
}
double kd_lr(const ExperimentBudget& b) { return b.kd_lr > 0 ? b.kd_lr : b.adapt_lr; }
bool is_kd(const std::string& method) { return method == "kd" || method == "kd-from-ada" || method == "kd-noisy"; }

const std::string kCsvHeader = std::string(protocol::kResultsCsvHeader) + "\n";

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
          {"bn_statistics", b.bn_statistics},
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

class Progress {
 public:
  Progress(std::function<void(const std::string&)> say, double total) : say_(std::move(say)), total_(total) {}
  void start_cell(const Cell& c) { say_("  running " + c.name()); }
  void finish(const Cell& c, double seconds, const std::string& outcome) {
    done_ += c.cost;
    ++cells_;
    const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
    std::string left = "?";
    if (done_ > 0) left = clock_text(elapsed / done_ * std::max(0.0, total_ - done_));
    say_("[" + std::to_string(cells_ + skipped_) + "/" + std::to_string(cell_total_) + " cells | " +
         clock_text(elapsed) + " elapsed | about " + left + " left] " + c.name() + ": " + outcome + " (" +
         std::to_string(static_cast<int>(std::lround(seconds))) + " s)");
  }
  void skip(const Cell& c) {
    total_ -= c.cost;
    ++skipped_;
  }
  void set_cells(int n) { cell_total_ = n; }
  int skipped() const { return skipped_; }

  static std::string clock_text(double seconds) {
    const long s = std::lround(seconds);
    char buf[32];
    if (s >= 3600) {
      std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
    } else {
      std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
    }
    return buf;
  }

 private:
  std::function<void(const std::string&)> say_;
  double total_ = 0, done_ = 0;
  int cells_ = 0, skipped_ = 0, cell_total_ = 0;
  Clock::time_point start_ = Clock::now();
};

// Rows of a results.csv after its header ("" when the file is missing).
std::string csv_rows(const fs::path& csv) {
  auto text = files::read_all(csv);
  if (!text) return {};
  const auto body = text->find('\n');
  return body == std::string::npos ? std::string() : text->substr(body + 1);
}

// Mean Dice of a results.csv's rows (no header), as text for the progress line.
std::string mean_dice_text(const std::string& rows) {
  double sum = 0;
  int n = 0;
  auto parsed = protocol::parse_results_csv(kCsvHeader + rows);
  if (!parsed) return parsed.error().message;
  for (const auto& r : *parsed) {
    if (std::isfinite(r.dsc)) {
      sum += r.dsc;
      ++n;
    }
  }
  if (n == 0) return "no scored subject";
  char buf[64];
  std::snprintf(buf, sizeof buf, "mean Dice %.3f over %d subjects", sum / n, n);
  return buf;
}

}  // namespace

namespace detail {

std::string Cell::name() const {
  if (is_teacher()) return method + " " + source;
  return mode + " " + method + " " + source + "->" + target + " fold " + std::to_string(fold);
}

std::string Cell::id() const {
  if (is_teacher()) return method + "-" + source;
  return mode + "-" + method + "-" + pair() + "-f" + std::to_string(fold);
}

std::vector<std::string> Cell::jobs() const {
  const std::string base = method + "-" + pair() + "-f" + std::to_string(fold);
  if (method.rfind("otf-", 0) != 0) return {base};
  std::vector<std::string> ids;
  for (std::size_t i = 0; i < subjects.size(); ++i) ids.push_back(base + "-s" + std::to_string(i));
  return ids;
}

std::vector<std::string> cell_dependencies(const Cell& c) {
  if (c.is_teacher()) return {};
  std::vector<std::string> needs{(c.method == "lbound-aug" ? "teacher-aug-" : "teacher-") + c.source};
  if (c.method == "kd-from-ada") needs.push_back(c.mode + "-ada-" + c.pair() + "-f" + std::to_string(c.fold));
  return needs;
}

Result<Grid> plan_grid(const ExperimentOptions& o, const ExperimentBudget& b) {
  auto subjects = imaging::find_subjects(o.data);
  if (!subjects) return subjects.error();
  std::map<std::string, std::vector<imaging::SubjectFiles>> by_clinic;
  Grid g;
  for (const auto& s : *subjects) {
    if (!by_clinic.count(s.clinic)) g.clinics.push_back(s.clinic);
    by_clinic[s.clinic].push_back(s);
  }
  for (const auto& clinic : g.clinics) {  // a clinic's name is part of every cell id and job id
    const bool plain = !clinic.empty() && std::all_of(clinic.begin(), clinic.end(), [](unsigned char ch) {
      return std::isalnum(ch) || ch == '_';
    });
    if (!plain) {
      return make_error((o.data / clinic).string() + ": a clinic's folder name is letters, digits and '_' only "
                        "(it names the grid's cells and jobs)");
    }
  }
  if (g.clinics.size() < 2) return make_error(o.data.string() + ": the grid needs at least two clinics, found " +
                                              std::to_string(g.clinics.size()));
  for (const auto& [clinic, list] : by_clinic) {
    if (list.size() < 2) return make_error(clinic + ": needs at least 2 subjects to split into two folds");
    for (const auto& s : list) {
      if (!s.labels) return make_error(clinic + "/" + s.subject + ": no wmh.nii.gz (every subject is scored, or is a source)");
    }
  }
  const auto methods = o.methods.empty() ? paper_methods() : o.methods;
  const bool augmented_teachers = std::count(methods.begin(), methods.end(), "lbound-aug") > 0;
  const double eval = 4, overhead = 10;  // steps' worth per scored subject and per cell
  // One teacher per source clinic, trained at that clinic alone and shared by both modes, so
  // that federated against centralized compares the adaptations rather than two teacher draws.
  for (const auto& source : g.clinics) {
    Cell t;
    t.mode = "centralized";
    t.source = source;
    t.method = "teacher";
    t.cost = b.teacher_epochs * b.steps + overhead;
    g.cells.push_back(t);
    if (augmented_teachers) {  // lbound-aug's teacher: the same source, heavily augmented
      t.method = "teacher-aug";
      g.cells.push_back(t);
    }
  }
  for (const auto& mode : o.modes) {
    for (const auto& source : g.clinics) {
      for (const auto& target : g.clinics) {
        if (source == target) continue;
        for (int fold : o.folds) {
          const auto test = imaging::split_fold(by_clinic[target], fold).test;
          for (const auto& method : methods) {
            Cell c;
            c.mode = mode;
            c.source = source;
            c.target = target;
            c.method = method;
            c.fold = fold;
            const double n = static_cast<double>(test.size());
            const double adapt = b.adapt_epochs * b.steps, otf = b.otf_epochs * b.steps;
            const double kd = kd_epochs(b) * b.steps * (b.kd_hard_weight > 0 ? 1.1 : 1.0);
            const double curves = b.curve_every > 0 ? eval * n * 0.3 * kd_epochs(b) / b.curve_every : 0;
            if (method == "lbound" || method == "lbound-aug") c.cost = overhead + eval * n;
            if (method == "ubound") c.cost = adapt + overhead + eval * n + curves;
            if (method == "kd" || method == "kd-noisy") c.cost = kd + overhead + eval * n + curves;
            if (method == "ada") c.cost = 2 * adapt + overhead + eval * n + curves;
            if (method == "kd-from-ada") c.cost = kd + overhead + eval * n + curves;
            if (method == "otf-kd") c.cost = n * (otf + overhead + eval);
            if (method == "otf-ada") c.cost = n * (2 * otf + overhead + eval);
            if (method.rfind("otf-", 0) == 0) {
              for (const auto& s : test) c.subjects.push_back(s.subject);
            }
            g.cells.push_back(c);
          }
        }
      }
    }
  }
  return g;
}

}  // namespace detail

namespace {

// The source's teacher; `augmented`: lbound-aug's.
fs::path teacher_model(const fs::path& out, const std::string& source, bool augmented = false) {
  return fs::absolute(out / "centralized" / (augmented ? "teachers-aug" : "teachers") / source / "teacher.pt");
}

fs::path centralized_dir(const fs::path& out, const Cell& c) {
  if (c.method == "teacher") return out / "centralized" / "teachers" / c.source;
  if (c.method == "teacher-aug") return out / "centralized" / "teachers-aug" / c.source;
  return out / "centralized" / c.pair() / ("fold" + std::to_string(c.fold)) / c.method;
}

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

namespace {

// Runs one centralized cell; returns its results.csv rows.
Result<std::string> run_centralized_cell(const ExperimentOptions& o, const ExperimentBudget& b, const Cell& c) {
  const auto dir = centralized_dir(o.out, c);
  const bool augmented = c.method == "teacher-aug" || c.method == "lbound-aug";
  const auto teacher = teacher_model(o.out, c.source, augmented);
  if (c.method == "teacher" || c.method == "teacher-aug") {
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
    // The kept draw's epochs are the "teacher" curve; the others stay in the file under their own stage.
    std::ostringstream curve;
    curve << "stage,epoch,loss,seconds,slices_per_second\n";
    for (std::size_t d = 0; d < curves.size(); ++d) {
      const std::string stage = static_cast<int>(d) == best ? "teacher" : "discarded-draw-" + std::to_string(d + 1);
      for (const auto& e : curves[d]) {
        curve << stage << "," << e.epoch << "," << e.loss << "," << e.seconds << "," << e.slices_per_second << "\n";
      }
    }
    if (auto st = files::write_atomically(dir / "curve.csv", curve.str()); !st) return st.error();
    json summary = {{"source", c.source},
                    {"method", c.method},
                    {"mode", "centralized"},
                    {"seconds", std::chrono::duration<double>(Clock::now() - start).count()},
                    {"source_dice", best_dice},
                    {"learned", best_dice >= kTeacherLearnedDice},
                    {"kept_draw", best + 1},
                    {"draws_allowed", draws_allowed},
                    {"draws", draws}};
    if (auto st = files::write_atomically(dir / "summary.json", summary.dump(2) + "\n"); !st) return st.error();
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
  co.ada_model = o.out / "centralized" / c.pair() / ("fold" + std::to_string(c.fold)) / "ada" / "model.pt";
  co.ubound_from_teacher = true;
  auto r = run_centralized(co);
  if (!r) return r.error();
  return csv_rows(dir / "results.csv");
}

std::string yaml_list(const std::vector<std::string>& items) {
  std::string s = "[";
  for (std::size_t i = 0; i < items.size(); ++i) s += (i ? ", " : "") + items[i];
  return s + "]";
}

// Where federated cells run: the grid's one consortium (a run in one process), or a
// consortium of the cell's own (a cell run alone, --cell, so that cells on other machines or
// beside it never share a coordinator or a site's state).
fs::path shared_consortium(const fs::path& out) { return out / "federated"; }
fs::path own_consortium(const fs::path& out, const Cell& c) { return out / "federated" / "cells" / c.id(); }

bool jobs_done(const fs::path& consortium, const Cell& c) {
  const auto ids = c.jobs();
  return std::all_of(ids.begin(), ids.end(), [&](const auto& id) { return fs::exists(consortium / "jobs" / id / "summary.json"); });
}

// The consortium holding a federated cell's finished jobs: its own where it ran alone, else the shared one.
fs::path consortium_of(const fs::path& out, const Cell& c) {
  return jobs_done(own_consortium(out, c), c) ? own_consortium(out, c) : shared_consortium(out);
}

// A centralized cell is done when its summary is written; a federated one when all its jobs are.
bool cell_done(const fs::path& out, const Cell& c) {
  if (c.mode == "centralized") return fs::exists(centralized_dir(out, c) / "summary.json");
  return jobs_done(consortium_of(out, c), c);
}

// The kd-from-ada cell's ada twin (same mode, pair and fold).
Cell ada_twin(const Cell& c) {
  Cell ada = c;
  ada.method = "ada";
  ada.subjects.clear();
  return ada;
}

// Pseudonym <-> subject id of each clinic of the local consortium, loaded once per clinic.
class Pseudonyms {
 public:
  explicit Pseudonyms(fs::path consortium) : consortium_(std::move(consortium)) {}
  // The subject a pseudonym of `clinic` stands for (the pseudonym itself when unknown).
  std::string subject(const std::string& clinic, const std::string& pseudonym) {
    const auto& m = load(clinic);
    const auto it = m.find(pseudonym);
    return it == m.end() ? pseudonym : it->second;
  }
  Result<std::string> pseudonym(const std::string& clinic, const std::string& subject) {
    for (const auto& [p, s] : load(clinic)) {
      if (s == subject) return p;
    }
    return make_error(clinic + "/" + subject + ": no pseudonym (has the consortium run that site?)");
  }

 private:
  const std::map<std::string, std::string>& load(const std::string& clinic) {
    auto it = maps_.find(clinic);
    if (it == maps_.end()) {
      auto map = site_pseudonyms(consortium_, clinic);
      it = maps_.emplace(clinic, map ? *map : std::map<std::string, std::string>()).first;
    }
    return it->second;
  }
  fs::path consortium_;
  std::map<std::string, std::map<std::string, std::string>> maps_;
};

// A YAML single-quoted scalar: any path, quotes doubled.
std::string yaml_quoted(const std::string& text) {
  std::string quoted = "'";
  for (char ch : text) quoted += ch == '\'' ? std::string("''") : std::string(1, ch);
  return quoted + "'";
}

// The job files of a federated cell run on `consortium`, as (id, YAML) in running order: every
// setting a JobSpec (protocol::job_file_settings), and the file's own keys (method, teacher,
// recipe) after them.
Result<std::vector<std::pair<std::string, std::string>>> job_files(const ExperimentOptions& o, const ExperimentBudget& b,
                                                                   const Cell& c, const fs::path& consortium,
                                                                   Pseudonyms& pseudonyms) {
  using protocol::JobType;
  std::vector<std::pair<std::string, std::string>> out;
  const auto ids = c.jobs();
  const std::string teacher = yaml_quoted(teacher_model(o.out, c.source, c.method == "lbound-aug").string());
  const bool otf = c.method.rfind("otf-", 0) == 0;
  // Rounds, step size and recipe of the cell's centralized twin: a round is one of its epochs.
  const auto training = cell_training(b, c.method, o.seed, o.device, o.precision, o.threads).adaptation;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    protocol::JobSpec j;
    j.id = ids[i];
    j.fold = c.fold;
    j.sites = {c.source, c.target};
    j.evaluation_sites = {c.target};
    j.source = c.source;
    j.batch_size = b.batch;
    j.local_steps = b.steps;
    j.steps_by_share = true;
    j.seed = o.seed;
    j.round_deadline_s = 1800;
    j.temperature = b.temperature;
    j.ada_weight = b.ada_weight;
    j.ada_warmup_rounds = b.ada_warmup_epochs;
    j.precision = o.precision;
    j.test_time_mirroring = b.test_time_mirroring;
    std::string extra = "method: " + c.method + "\n";
    std::string model = teacher;  // the job's teacher: model file or job:<id>
    if (c.method == "lbound" || c.method == "lbound-aug") {
      j.type = JobType::evaluate;
    } else {
      j.rounds = training.epochs;
      j.learning_rate = training.learning_rate;
      j.min_sites = 2;
      j.bn_statistics = b.federated_bn;
      j.server_optimizer = b.server_optimizer;
      j.server_lr = b.server_lr;
      if (!otf && b.curve_every > 0) j.evaluate_every = b.curve_every;
      j.secure_aggregation = o.secure_aggregation;
      if (is_kd(c.method)) j.student_init = b.student_init;
      if (is_kd(c.method) || c.method == "otf-kd") {
        j.kd_loss = b.kd_loss;
        j.kd_hard_weight = b.kd_hard_weight;
        j.kd_confidence = b.kd_confidence;
      }
      // JSON is YAML; the classic recipe is written as none, as before recipes.
      if (models::to_json(training.recipe) != models::to_json(models::Recipe{})) {
        extra += "recipe: " + models::to_json(training.recipe) + "\n";
      }
      j.type = c.method == "ubound" ? JobType::teacher : c.method == "ada" || c.method == "otf-ada" ? JobType::ada : JobType::kd;
      if (c.method == "kd-from-ada") {
        // The ada job of the same consortium, or the model of the ada cell that ran in its own.
        const auto ada = ada_twin(c);
        if (consortium == shared_consortium(o.out) && consortium_of(o.out, ada) == consortium) {
          model = "job:" + ada.jobs().front();
        } else {
          model = yaml_quoted(fs::absolute(consortium_of(o.out, ada) / "jobs" / ada.jobs().front() / "model.pt").string());
        }
      }
      if (otf) {
        auto p = pseudonyms.pseudonym(c.target, c.subjects[i]);
        if (!p) return p.error();
        j.subjects = {*p};
      }
    }
    out.emplace_back(ids[i], protocol::job_file_settings(j) + extra + "teacher: " + model + "\n");
  }
  return out;
}

// The "seconds" of a summary.json (the engine's or the coordinator's); 0 when unreadable.
double summary_seconds(const fs::path& summary) {
  auto text = files::read_all(summary);
  if (!text) return 0;
  const auto j = json::parse(*text, nullptr, false);
  return j.is_object() && j.contains("seconds") && j["seconds"].is_number() ? j["seconds"].get<double>() : 0;
}

// A federated cell's rows with subjects under their real ids again (the sites sent pseudonyms).
std::string job_rows(const fs::path& jobs, const Cell& c, Pseudonyms& pseudonyms) {
  std::string rows;
  for (const auto& id : c.jobs()) {
    auto parsed = protocol::parse_results_csv(kCsvHeader + csv_rows(jobs / id / "results.csv"));
    if (!parsed) continue;
    for (auto r : *parsed) {
      r.subject = pseudonyms.subject(r.target, r.subject);
      rows += protocol::csv_line(r);
    }
  }
  return rows;
}

double job_seconds(const fs::path& jobs, const Cell& c) {
  double s = 0;
  for (const auto& id : c.jobs()) s += summary_seconds(jobs / id / "summary.json");
  return s;
}

// Runs the federated cells on one local consortium in `root` (agents for `sites`; empty: every
// clinic): every cell's jobs are submitted through the coordinator's admin endpoint up front, in
// the grid's order, and the coordinator runs them one after another (they share sites); a job
// whose teacher job failed fails with it. Cells are reported as their jobs end, a failed one with
// the coordinator's reason; finished jobs of an earlier run are not rerun, unfinished ones resume.
void run_federated(const ExperimentOptions& o, const ExperimentBudget& b, const std::vector<Cell>& cells,
                   const fs::path& root, const std::vector<std::string>& sites, Progress& progress,
                   std::map<std::string, std::string>& failures) {
  std::error_code ec;
  fs::create_directories(root / "job-files", ec);
  std::vector<const Cell*> pending;
  for (const auto& c : cells) {
    if (!fs::exists(teacher_model(o.out, c.source, c.method == "lbound-aug"))) {
      failures[c.name()] = "not run: teacher " + c.source + " failed";
      progress.finish(c, 0, "not run (teacher " + c.source + " failed)");
      continue;
    }
    pending.push_back(&c);
  }
  if (pending.empty()) return;
  const auto fail_all = [&](std::size_t from, const std::string& why) {
    log::get("experiment")->error("{}", why);
    for (std::size_t i = from; i < pending.size(); ++i) {
      failures[pending[i]->name()] = why;
      progress.finish(*pending[i], 0, "FAILED (see report)");
    }
  };
  ConsortiumOptions co;
  co.data = o.data;
  co.out = root;
  co.sites = sites;
  co.device = o.device;
  co.threads_per_agent = o.threads;
  co.bin_dir = o.bin_dir;
  co.secure = o.secure;
  co.show_progress = false;
  co.heartbeat_ms = 500;
  auto consortium = LocalConsortium::start(co);
  if (!consortium) return fail_all(0, "the consortium did not start: " + consortium.error().message);
  Pseudonyms pseudonyms(root);
  std::vector<std::string> ids;
  std::vector<const Cell*> submitted;
  for (const auto* c : pending) {
    std::string failed;
    auto files_of_cell = job_files(o, b, *c, root, pseudonyms);
    if (!files_of_cell) failed = files_of_cell.error().message;
    for (const auto& [id, yaml] : files_of_cell ? *files_of_cell : std::vector<std::pair<std::string, std::string>>{}) {
      const auto file = root / "job-files" / (id + ".yaml");
      auto queued = files::write_atomically(file, yaml) ? (*consortium)->submit(file)
                                                        : Result<std::string>(make_error(file.string() + ": cannot write"));
      if (!queued) {
        failed = queued.error().message;
        break;
      }
      ids.push_back(*queued);
    }
    if (!failed.empty()) {
      failures[c->name()] = "not submitted: " + failed;
      progress.finish(*c, 0, "FAILED (see report)");
      continue;
    }
    submitted.push_back(c);
  }
  pending = submitted;
  if (pending.empty()) return;
  std::size_t next = 0;  // first cell not yet reported
  auto cell_start = Clock::now();
  const auto poll = [&](const std::vector<JobView>& jobs) {
    std::map<std::string, const JobView*> by_id;
    for (const auto& j : jobs) by_id[j.id] = &j;
    while (next < pending.size()) {
      const Cell& c = *pending[next];
      std::string failed;
      for (const auto& id : c.jobs()) {
        const auto it = by_id.find(id);
        if (it == by_id.end()) return;
        const auto& state = it->second->state;
        if (state != "finished" && state != "failed" && state != "aborted") return;
        if (state != "finished" && failed.empty()) failed = "job " + id + " " + state + ": " + it->second->error;
      }
      const double seconds = std::chrono::duration<double>(Clock::now() - cell_start).count();
      if (failed.empty()) {
        progress.finish(c, seconds, mean_dice_text(job_rows(root / "jobs", c, pseudonyms)));
      } else {
        failures[c.name()] = failed;
        log::get("experiment")->error("federated {}", failed);
        progress.finish(c, seconds, "FAILED (see report)");
      }
      cell_start = Clock::now();
      ++next;
      if (next < pending.size()) progress.start_cell(*pending[next]);
    }
  };
  progress.start_cell(*pending.front());
  auto ended = (*consortium)->wait(ids, poll);
  if (!ended) return fail_all(next, "the consortium stopped: " + ended.error().message);
  std::vector<JobView> last;
  for (const auto& [id, view] : *ended) last.push_back(view);
  poll(last);
  if (auto st = (*consortium)->stop(); !st) log::get("experiment")->warn("{}", st.error().message);
}

Status check_configuration(const ExperimentOptions& o, const json& config) {
  const auto file = o.out / "experiment.json";
  if (fs::exists(file)) {
    auto text = files::read_all(file);
    if (!text) return text.error();
    auto old = json::parse(*text, nullptr, false);
    if (old.is_discarded()) return make_error(file.string() + ": not JSON; remove it or choose another --out");
    for (const char* key : {"profile", "seed", "budget", "data"}) {
      const json& now = config.at(key);
      json before = old.value(key, json());
      // A budget key newer than the run reads as the value that does what the run did.
      static const json kBeforeTheKey = {{"teacher_draws", 1},
                                         {"scratch_student_as_teacher", false},
                                         {"teacher_recipe", json::parse(models::to_json(models::Recipe{}))},
                                         {"adapt_recipe", json::parse(models::to_json(models::Recipe{}))},
                                         {"noisy_augmentation", json::parse(models::to_json(*models::recipe_preset("heavy")))}};
      if (std::string(key) == "budget" && before.is_object()) {
        for (const auto& [name, value] : kBeforeTheKey.items()) {
          if (!before.contains(name)) before[name] = value;
        }
      }
      if (before != now) {
        return make_error(o.out.string() + " holds a run with another " + key + " (" + before.dump() +
                          ", now " + now.dump() + "); resume it with the same settings or choose another --out");
      }
    }
  }
  return files::write_atomically(file, config.dump(2) + "\n");
}

}  // namespace

namespace {

// A grid ready to run: its options completed, its budget, its cells, its configuration on disk.
struct Setup {
  ExperimentOptions o;
  ExperimentBudget budget;
  Grid grid;
};

// Checks the options, plans the grid and writes (or checks against) out/experiment.json: what
// every way of running a grid does first, so that a plan's cells agree with each other.
Result<Setup> set_up(const ExperimentOptions& options) {
  Setup setup{options, {}, {}};
  ExperimentOptions& o = setup.o;
  if (!o.say) o.say = [](const std::string& line) { std::cout << line << std::endl; };
  for (const auto& m : o.modes) {
    if (m != "federated" && m != "centralized") return make_error("unknown mode '" + m + "' (federated or centralized)");
  }
  for (const auto& m : o.methods) {
    if (std::find(experiment_methods().begin(), experiment_methods().end(), m) == experiment_methods().end()) {
      std::string names;
      for (const auto& known : experiment_methods()) names += (names.empty() ? "" : ", ") + known;
      return make_error("unknown method '" + m + "' (choose from " + names + ")");
    }
  }
  // kd-from-ada needs its pair's ada model.
  if (!o.methods.empty() && std::count(o.methods.begin(), o.methods.end(), "kd-from-ada") &&
      !std::count(o.methods.begin(), o.methods.end(), "ada")) {
    o.methods.push_back("ada");
  }
  if (auto st = models::check_device(o.device); !st) return st.error();
  // LibTorch's own default may be the physical core count; the grid runs one thing at a time.
  if (o.threads <= 0) o.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  auto chosen = experiment_budget(o.profile);
  if (!chosen) return chosen.error();
  auto& budget = setup.budget;
  budget = *chosen;
  if (o.student_init) budget.student_init = *o.student_init;
  if (o.federated_bn) budget.federated_bn = *o.federated_bn;
  if (o.server_optimizer) budget.server_optimizer = *o.server_optimizer;
  if (o.server_lr > 0) budget.server_lr = o.server_lr;
  if (o.test_time_mirroring) budget.test_time_mirroring = true;
  if (o.teacher_draws > 0) budget.teacher_draws = o.teacher_draws;
  auto grid = detail::plan_grid(o, budget);
  if (!grid) return grid.error();
  setup.grid = std::move(*grid);
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec) return make_error(o.out.string() + ": cannot create: " + ec.message());

  json config = {{"profile", o.profile},
                 {"seed", o.seed},
                 {"budget", budget_json(budget)},
                 {"data", fs::absolute(o.data).lexically_normal().string()},
                 {"clinics", setup.grid.clinics},
                 {"modes", o.modes},
                 {"device", o.device},
                 {"precision", o.precision},
                 {"threads", o.threads},
                 {"secure", o.secure},
                 {"secure_aggregation", o.secure_aggregation}};
  if (auto st = check_configuration(o, config); !st) return st.error();
  return setup;
}

// Why a cell run alone (--cell) failed, kept for the report step: out/cell-failures/<id>.txt.
fs::path cell_failure_file(const fs::path& out, const Cell& c) { return out / "cell-failures" / (c.id() + ".txt"); }

// Merges the results and timings of every finished cell, names the failed ones and writes the
// report. `failures`: this run's; cells neither finished nor failed here are named from their
// own run's failure file, or as not run.
Status merge_and_report(const Setup& setup, std::map<std::string, std::string> failures) {
  const auto& o = setup.o;
  std::map<fs::path, Pseudonyms> pseudonyms;
  std::string results = kCsvHeader;
  std::string timings = "mode,source,target,fold,method,seconds,status\n";
  for (const auto& c : setup.grid.cells) {
    const bool done = cell_done(o.out, c);
    std::string rows;
    double seconds = 0;
    if (c.mode == "centralized") {
      rows = csv_rows(centralized_dir(o.out, c) / "results.csv");
      seconds = summary_seconds(centralized_dir(o.out, c) / "summary.json");
    } else {
      const auto root = consortium_of(o.out, c);
      auto& names = pseudonyms.try_emplace(root, root).first->second;
      rows = job_rows(root / "jobs", c, names);
      seconds = job_seconds(root / "jobs", c);
    }
    if (!done && !failures.count(c.name())) {
      auto why = files::read_all(cell_failure_file(o.out, c));
      failures[c.name()] = why ? *why : "not run";
    }
    results += rows;
    char line[512];
    std::snprintf(line, sizeof line, "%s,%s,%s,%d,%s,%.1f,%s\n", c.mode.c_str(), c.source.c_str(), c.target.c_str(),
                  c.fold, c.method.c_str(), seconds, done ? "done" : "failed");
    timings += line;
  }
  if (auto st = files::write_atomically(o.out / "results.csv", results); !st) return st.error();
  if (auto st = files::write_atomically(o.out / "timings.csv", timings); !st) return st.error();
  json failed = json::object();
  for (const auto& [cell, why] : failures) failed[cell] = why;
  if (auto st = files::write_atomically(o.out / "failures.json", failed.dump(2) + "\n"); !st) return st.error();
  o.say("experiment: writing tables, plots and report");
  return write_experiment_report(o.out, o.data, o.device);
}

// Runs one centralized cell, with its progress lines; false (and the reason in `failures`) when it failed.
bool run_centralized_with_progress(const Setup& setup, const Cell& c, Progress& progress,
                                   std::map<std::string, std::string>& failures) {
  progress.start_cell(c);
  const auto t0 = Clock::now();
  auto rows = run_centralized_cell(setup.o, setup.budget, c);
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!rows) {
    failures[c.name()] = rows.error().message;
    log::get("experiment")->error("{}: {}", c.name(), rows.error().message);
    progress.finish(c, s, "FAILED (see report)");
    return false;
  }
  progress.finish(c, s, c.is_teacher() ? "trained" : mean_dice_text(*rows));
  return true;
}

// The whole grid in this process: centralized cells one after another, then the federated
// cells on one shared consortium, then the report.
Result<ExperimentResult> run_grid(const Setup& setup, Clock::time_point start) {
  const auto& o = setup.o;
  double total = 0;
  for (const auto& c : setup.grid.cells) total += c.cost;
  Progress progress(o.say, total);
  progress.set_cells(static_cast<int>(setup.grid.cells.size()));
  std::map<std::string, std::string> failures;
  std::vector<Cell> federated;
  for (const auto& c : setup.grid.cells) {
    if (cell_done(o.out, c)) {
      progress.skip(c);
    } else if (c.mode == "federated") {
      federated.push_back(c);
    }
  }
  o.say("experiment: " + std::to_string(setup.grid.cells.size()) + " cells (" + o.profile + " profile, " +
        std::to_string(setup.grid.clinics.size()) + " clinics, modes " + yaml_list(o.modes) + "), " +
        std::to_string(progress.skipped()) + " already done; output in " + o.out.string());
  for (const auto& c : setup.grid.cells) {
    if (c.mode == "centralized" && !cell_done(o.out, c)) run_centralized_with_progress(setup, c, progress, failures);
  }
  if (!federated.empty()) run_federated(o, setup.budget, federated, shared_consortium(o.out), {}, progress, failures);
  if (auto st = merge_and_report(setup, failures); !st) return st.error();
  ExperimentResult result;
  result.cells = static_cast<int>(setup.grid.cells.size());
  result.failed = static_cast<int>(failures.size());
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  result.report = o.out / "report.html";
  return result;
}

// Where the grid's plan is, for the refusals of --cell (out/plan.json, written with the plan).
std::string plan_hint(const fs::path& out) {
  auto text = files::read_all(out / "plan.json");
  const auto j = text ? json::parse(*text, nullptr, false) : json();
  if (j.is_object() && j.contains("dir") && j["dir"].is_string()) {
    return "the plan in " + j["dir"].get<std::string>() + " (cells.tsv lists its cells)";
  }
  return "its plan (fedda-sim experiment with the same options and --plan DIR writes DIR/cells.tsv)";
}

// One cell of the grid (o.cell), as a line of a plan runs it: refused while a cell it needs has
// not finished; a federated cell on a consortium of its own. The report step (kReportCell)
// merges every finished cell and writes the report.
Result<ExperimentResult> run_one_cell(const Setup& setup, Clock::time_point start) {
  const auto& o = setup.o;
  ExperimentResult result;
  result.cells = 1;
  result.report = o.out / "report.html";
  if (o.cell == detail::kReportCell) {
    if (auto st = merge_and_report(setup, {}); !st) return st.error();
    for (const auto& c : setup.grid.cells) result.failed += cell_done(o.out, c) ? 0 : 1;
    result.cells = static_cast<int>(setup.grid.cells.size());
    result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    return result;
  }
  std::map<std::string, const Cell*> by_id;
  for (const auto& c : setup.grid.cells) by_id[c.id()] = &c;
  const auto it = by_id.find(o.cell);
  if (it == by_id.end()) {
    return make_error("--cell " + o.cell + ": no such cell in the grid of " + o.out.string() + " (" +
                      std::to_string(setup.grid.cells.size()) + " cells and '" + detail::kReportCell + "'; see " +
                      plan_hint(o.out) + ")");
  }
  const Cell& c = *it->second;
  for (const auto& need : detail::cell_dependencies(c)) {
    const auto dep = by_id.find(need);
    if (dep == by_id.end() || !cell_done(o.out, *dep->second)) {
      return make_error("--cell " + c.id() + " needs cell " + need + ", which has not finished in " + o.out.string() +
                        " (run --cell " + need + " first: its stage of " + plan_hint(o.out) + " comes earlier)");
    }
  }
  if (cell_done(o.out, c)) {
    o.say("experiment: cell " + c.id() + " is done already in " + o.out.string());
    return result;
  }
  Progress progress(o.say, c.cost);
  progress.set_cells(1);
  std::map<std::string, std::string> failures;
  if (c.mode == "centralized") {
    run_centralized_with_progress(setup, c, progress, failures);
  } else {
    run_federated(o, setup.budget, {c}, own_consortium(o.out, c), {c.source, c.target}, progress, failures);
  }
  const auto failure_file = cell_failure_file(o.out, c);
  if (const auto why = failures.find(c.name()); why != failures.end()) {
    result.failed = 1;
    if (auto st = files::write_atomically(failure_file, why->second); !st) log::get("experiment")->warn("{}", st.error().message);
  } else if (auto st = files::remove_durably(failure_file); !st) {
    log::get("experiment")->warn("{}", st.error().message);
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

}  // namespace

Result<ExperimentResult> run_experiment(const ExperimentOptions& options) {
  const auto start = Clock::now();
  auto setup = set_up(options);
  if (!setup) return setup.error();
  return setup->o.cell.empty() ? run_grid(*setup, start) : run_one_cell(*setup, start);
}

Result<ExperimentPlan> write_experiment_plan(const ExperimentOptions& options, const fs::path& dir,
                                             const std::function<std::string(const std::string&)>& command) {
  auto setup = set_up(options);
  if (!setup) return setup.error();
  auto plan = detail::write_plan_files(setup->grid, dir, command, options.threads);
  if (!plan) return plan.error();
  // Where the plan is, for the refusals of --cell (an unknown cell, one that must wait).
  const json record = {{"dir", fs::absolute(dir).lexically_normal().string()}, {"cells", plan->cells}, {"stages", plan->stages}};
  if (auto st = files::write_atomically(setup->o.out / "plan.json", record.dump(2) + "\n"); !st) return st.error();
  return plan;
}

}  // namespace fedda::experiment
