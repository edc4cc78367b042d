#pragma once
// `fedda-sim experiment`: the seed paper's experiment grid, federated and centralized, with its
// tables, plots and report.
//
// Cells: for every ordered (source, target) pair of the clinics in `data` and both folds of the
// target's subjects, the methods lbound, ubound, ada, kd, kd-from-ada (KD with the ADA-adapted
// model as teacher), otf-kd and otf-ada (each test subject of the fold adapted to on its own,
// teacher fixed). One teacher per source clinic, trained at that clinic alone, is shared by both
// modes, so that comparing them measures the adaptation and not two random teachers. Every
// other cell runs in each mode:
//   federated    jobs on a local consortium (fedda-coordinator + one fedda-agent per clinic,
//                separate processes, CurveZMQ on loopback, signed models, sealed caches)
//   centralized  the same training in this process, the reference
// A federated round is one centralized epoch: `steps` optimiser steps shared out among the sites
// by sample count, so both modes train with the same data, steps and batch size.
//
// Layout of `out`:
//   experiment.json        the configuration; a rerun with another one is refused
//   centralized/teachers/  one teacher per source clinic (both modes adapt it)
//   centralized/<source>-<target>/fold<k>/<method>/   run_centralized's outputs
//   federated/             the consortium (jobs/, job-files/, logs/, kits/, cache/)
//   results.csv            per subject: source,target,fold,method,mode,subject,dsc,h95,avd,recall,f1
//   timings.csv            seconds per cell
//   table2.md, table3.md, plots/*.png, report.md, report.html
// Resumable: a rerun skips finished cells (and a consortium resumes unfinished jobs).

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/models/engine.h"
#include "fedda/simulation/clinics.h"

namespace fedda::experiment {

// How every cell trains, per profile (smoke, quick, standard, paper; see experiment.cpp).
struct ExperimentBudget {
  models::UNetSpec unet;
  GridSpec grid;
  int teacher_epochs = 0;   // source teachers (federated: rounds)
  // A teacher that has not learned its own source (mean Dice on its training scans below
  // kTeacherLearnedDice) is trained again from another random draw, up to this many draws in all;
  // the report names every draw and leaves pairs whose teacher never learned out of the verdict.
  int teacher_draws = 3;
  int adapt_epochs = 0;     // ubound (fine-tuned from the teacher), ada, and kd when kd_epochs is 0
  int otf_epochs = 0;       // on the fly, per subject
  int steps = 0;            // optimiser steps per epoch
  int batch = 8;
  double teacher_lr = 1e-3;
  double adapt_lr = 1e-3;
  double ada_weight = 0.1;
  int ada_warmup_epochs = 1;
  double temperature = 2.0;
  // The student (kd, kd-from-ada, otf-kd): where it starts and what it learns from.
  protocol::StudentInit student_init = protocol::StudentInit::teacher;
  bool scratch_student_as_teacher = false;  // scratch: the teacher's epochs, step size and recipe (the paper's)
  int kd_epochs = 0;                     // 0: adapt_epochs
  double kd_lr = 0;                      // 0: adapt_lr
  protocol::KdLoss kd_loss = protocol::KdLoss::hinton;
  double kd_hard_weight = 0;             // supervised term on the teacher's confident voxels
  double kd_confidence = 0.5;
  // Batch norm across domains: centralized kd / ada recompute it on the target (local: AdaBN) or
  // not (shared); federated jobs keep it at each site (local: FedBN) or average it (shared, a job
  // file's default too). What each choice measured, and why shared is the federated default since
  // FedNova's rounds: README, "Federated rounds, corrected".
  protocol::BnStatistics bn_statistics = protocol::BnStatistics::shared;  // centralized kd / ada (TrainConfig)
  protocol::BnStatistics federated_bn = protocol::BnStatistics::shared;
  protocol::ServerOptimizer server_optimizer = protocol::ServerOptimizer::fedavg;
  double server_lr = 1.0;
  int curve_every = 0;  // learning curves: the test half scored every this many epochs / rounds
  bool test_time_mirroring = false;  // every score with test-time mirroring (TrainConfig::test_time_mirroring)
  // How the networks train (models/recipe.h): teachers (and students from scratch, which get the
  // teacher's budget), and adaptations from the teacher (ubound, ada, kd from the teacher, on the
  // fly). lbound-aug's teacher and kd-noisy's student add noisy_augmentation's transforms to theirs.
  models::Recipe teacher_recipe;
  models::Recipe adapt_recipe;
  models::Recipe noisy_augmentation = *models::recipe_preset("heavy");
};

// A teacher's mean Dice on its own training scans below this has learned nothing of its source:
// the experiment draws it again (a teacher that segments nothing makes every method of its pairs
// score 0; README, "Teachers that learn nothing", has the case that set this).
inline constexpr double kTeacherLearnedDice = 0.05;

// Error lists the profiles.
Result<ExperimentBudget> experiment_budget(const std::string& profile);
const std::vector<std::string>& experiment_profiles();

// The paper's methods: what a grid runs unless --methods says otherwise.
inline const std::vector<std::string>& paper_methods() {
  static const std::vector<std::string> m{"lbound", "ubound", "ada", "kd", "kd-from-ada", "otf-kd", "otf-ada"};
  return m;
}
// Every method a grid can run: the paper's, and two a reviewer would ask for (centralized.h):
// lbound-aug (a teacher trained with heavy augmentation and no target data, one per source
// clinic like the teacher) and kd-noisy (KD whose student sees heavily augmented slices).
inline const std::vector<std::string>& experiment_methods() {
  static const std::vector<std::string> m{"lbound", "ubound",  "ada",        "kd",      "kd-from-ada",
                                          "otf-kd", "otf-ada", "lbound-aug", "kd-noisy"};
  return m;
}

// How a centralized cell of `method` trains under budget `b`: the source teacher, and the
// method's own training (for lbound and lbound-aug, the teacher's again). `fedda-sim
// centralized --profile P` starts from these, so that it trains exactly as the grid's cell.
struct CellTraining {
  models::TrainConfig teacher;
  models::TrainConfig adaptation;
  int curve_every = 0;
};
CellTraining cell_training(const ExperimentBudget& b, const std::string& method, std::uint64_t seed,
                           const std::string& device, const std::string& precision, int threads);

struct ExperimentOptions {
  std::filesystem::path data;
  std::filesystem::path out;
  std::string profile = "quick";     // the training budget; any data (fedda-sim generate) will do
  std::optional<protocol::StudentInit> student_init;          // overrides the profile's when set
  std::optional<protocol::BnStatistics> federated_bn;         // overrides the profile's when set
  std::optional<protocol::ServerOptimizer> server_optimizer;  // overrides the profile's when set
  double server_lr = 0;              // overrides the profile's when positive
  int teacher_draws = 0;             // overrides the profile's when positive
  std::vector<std::string> modes{"federated", "centralized"};
  std::vector<std::string> methods;  // default: paper_methods()
  std::vector<int> folds{0, 1};
  std::uint64_t seed = 1;
  std::string device = "cpu";
  std::string precision = "auto";    // auto | float32 | bfloat16, every cell (models/precision.h)
  int threads = 0;                   // 0: every core
  bool secure = true;                // federated: provisioned kits (CurveZMQ, signatures, sealed state)
  bool secure_aggregation = false;   // federated: every training job under secure aggregation (common/secagg.h)
  bool test_time_mirroring = false;  // sets the profile's
  std::filesystem::path bin_dir;     // fedda-coordinator and fedda-agent (required for federated cells)
  // Run only this cell of the grid (ids as a plan's cells.tsv lists them, e.g. "teacher-utrecht",
  // "federated-kd-utrecht-singapore-f0"), or "report": merge every finished cell and write the
  // report. A cell is refused while a cell it needs has not finished; a federated cell runs on a
  // consortium of its own (out/federated/cells/<id>/), so cells can run at once, on one machine or
  // on several sharing `out`. Empty: the whole grid.
  std::string cell;
  std::function<void(const std::string&)> say;  // progress lines; default: stdout
};

struct ExperimentResult {
  int cells = 0;
  int failed = 0;
  double seconds = 0;
  std::filesystem::path report;
};

// Runs (or resumes) the grid and writes the report. Failed cells are named in the report and
// the result; the error is for what stops the whole grid (bad data folder, configuration clash).
Result<ExperimentResult> run_experiment(const ExperimentOptions& options);

// (Re)writes table2.md, table3.md, plots/ and report.{md,html} from `out`'s results.csv,
// timings.csv and experiment.json.
Status write_experiment_report(const std::filesystem::path& out, const std::filesystem::path& data,
                               const std::string& device);

// `fedda-sim experiment ... --plan DIR`: the grid as independent commands for an existing engine.
// DIR/stage-1.txt, stage-2.txt, ...: one shell command per line (`command(cell id)`), the lines of a
// stage independent of each other, the stages in order (teachers; the cells that adapt them; KD
// from the ADA models; the report), so that `for s in DIR/stage-*.txt; do parallel < $s; done` runs
// the grid. Beside them: cells.tsv (id, stage, the cells it needs, estimated cost), a Snakefile for
// Snakemake (one rule per cell, markers in DIR/done/), and slurm.sh, which submits one Slurm array
// job per stage, each after the one before succeeded (run-line.sh runs a stage's line N). Writes
// out/experiment.json as a run would (a plan for another configuration of `out` is refused) and
// out/plan.json (where the plan is).
struct ExperimentPlan {
  int cells = 0;   // the grid's, without the report
  int stages = 0;  // with the report's
  std::filesystem::path dir;
};
Result<ExperimentPlan> write_experiment_plan(const ExperimentOptions& options, const std::filesystem::path& dir,
                                             const std::function<std::string(const std::string&)>& command);

struct PairedTTest {
  int n = 0;                  // pairs where both values are finite
  double mean_difference = 0; // mean of a - b
  double t = 0;
  double p = 1;               // two-sided
};

// Student's paired t-test of a against b (element i of each is one subject), with Boost.Math's
// Student's t distribution; pairs with a non-finite value are left out. Empty below 2 pairs.
std::optional<PairedTTest> paired_t_test(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace fedda::experiment
