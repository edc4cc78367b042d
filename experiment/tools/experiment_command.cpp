// fedda-sim experiment: the seed paper's grid, federated and centralized, with tables, plots and
// a report; and fedda-sim report, which rewrites the report of a (partial) run.
#include <algorithm>
#include <cctype>
#include <iostream>
#include <memory>
#include <string_view>
#include <sstream>

#include "fedda/common/log.h"
#include "fedda/experiment/consortium.h"
#include "fedda/experiment/experiment.h"
#include "experiment_commands.h"
#include "fedda/models_core/precision.h"

namespace fedda::experiment::tools {
namespace fs = std::filesystem;

namespace {

std::vector<std::string> comma_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream list(text);
  for (std::string item; std::getline(list, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// A word for sh: as it is when it holds nothing sh reads specially, else single-quoted.
std::string shell_word(const std::string& word) {
  const bool plain = !word.empty() && std::all_of(word.begin(), word.end(), [](unsigned char c) {
    return std::isalnum(c) || std::string_view("_-./,:=+@%").find(static_cast<char>(c)) != std::string_view::npos;
  });
  if (plain) return word;
  std::string quoted = "'";
  for (char c : word) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

struct ExperimentArgs {
  std::string data, out, profile = "quick", modes = "federated,centralized", methods, folds = "0,1", device = "cpu", precision = "auto";
  std::string student_init, federated_bn, server_optimizer, plan, cell;
  double server_lr = 0;
  int teacher_draws = 0;
  std::uint64_t seed = 1;
  int threads = 0;
  bool insecure = false, secure_aggregation = false, test_time_mirroring = false;
};

void add_experiment_options(CLI::App* cmd, ExperimentArgs& a) {
  cmd->add_option("--data", a.data, "clinics in the WMH layout (fedda-sim generate)")->required();
  cmd->add_option("--out", a.out, "output folder (resumed when it holds a run with the same settings)")->required();
  cmd->add_option("--profile", a.profile, "smoke, quick, standard, paper or paper-cpu: the training budget and recipe of every cell "
                  "(paper-cpu: the paper's grid with nnU-Net's recipe on 2 CPU cores)")
      ->capture_default_str()->check(CLI::IsMember(experiment_profiles()));
  cmd->add_option("--student-init", a.student_init,
                  "where the KD student starts: teacher or scratch (default: the profile's)")
      ->check(CLI::IsMember(protocol::setting_names<protocol::StudentInit>()));
  cmd->add_option("--federated-bn", a.federated_bn,
                  "federated: batch norm averaged like every other tensor (shared) or kept at each site and never sent "
                  "(local: FedBN) (default: the profile's)")
      ->check(CLI::IsMember(protocol::setting_names<protocol::BnStatistics>()));
  cmd->add_option("--server-optimizer", a.server_optimizer,
                  "federated: the coordinator's step on the sites' average: fedavg (take it), fedadam or fedyogi "
                  "(default: the profile's)")
      ->check(CLI::IsMember(protocol::setting_names<protocol::ServerOptimizer>()));
  cmd->add_option("--server-lr", a.server_lr,
                  "federated, fedadam/fedyogi: the server's step size; each round moves a weight by about this much "
                  "(default: the profile's)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--teacher-draws", a.teacher_draws,
                  "how many random draws a source's teacher gets to learn its own source (mean Dice on its training "
                  "scans of at least 0.05) before its pairs are left out of the verdict; 1: no retry (default: the "
                  "profile's, 3; smoke 1)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--modes", a.modes, "federated and/or centralized, comma-separated")->capture_default_str();
  cmd->add_option("--methods", a.methods,
                  "comma-separated: the paper's lbound,ubound,ada,kd,kd-from-ada,otf-kd,otf-ada (the default), and "
                  "lbound-aug (a teacher trained with heavy intensity and scanner augmentation, no target data) and "
                  "kd-noisy (KD whose student learns clean soft labels from heavily augmented slices)");
  cmd->add_option("--folds", a.folds, "folds to run: 0, 1 or 0,1")->capture_default_str();
  cmd->add_option("--seed", a.seed, "training seed (data are generated separately)")->capture_default_str();
  cmd->add_option("--device", a.device, "cpu or cuda")->capture_default_str();
  cmd->add_option("--precision", a.precision,
                  "auto (bfloat16 where the processor has bfloat16 units, or on CUDA), float32 or bfloat16: what every "
                  "cell computes in")
      ->capture_default_str()->check(CLI::IsMember(models::precision_names()));
  cmd->add_option("--threads", a.threads, "LibTorch threads per process (0: every core)")->capture_default_str();
  cmd->add_flag("--insecure", a.insecure, "federated: plain TCP, no kits (for debugging only)");
  cmd->add_flag("--secure-aggregation", a.secure_aggregation,
                "federated: every training job under secure aggregation (the coordinator sees only each round's sum; "
                "results equal the plain run's within 1e-6 per weight)");
  cmd->add_flag("--test-time-mirroring", a.test_time_mirroring,
                "score every model with p(WMH) the mean of its own on each slice and on the slice's left-right mirror "
                "image (nnU-Net's test-time mirroring; centralized scores and federated evaluation alike)");
  auto* plan = cmd->add_option(
      "--plan", a.plan,
      "write the grid as independent commands into this folder instead of running it: stage-1.txt, stage-2.txt, "
      "... (one command per line; a stage's lines are independent, the stages run in order, the last writes the "
      "report: `for s in DIR/stage-*.txt; do parallel < $s; done`), cells.tsv, a Snakefile for Snakemake and "
      "slurm.sh for Slurm. Each line runs one cell with --cell into the shared --out");
  cmd->add_option("--cell", a.cell,
                  "run one cell of the grid (an id of the plan's cells.tsv, e.g. teacher-utrecht or "
                  "federated-kd-utrecht-singapore-f0) into --out, or 'report' to merge every finished cell and write "
                  "the report; refused while a cell it needs (its teacher, kd-from-ada's ada) has not finished. A "
                  "federated cell runs on a consortium of its own")
      ->excludes(plan);
}

ExperimentOptions experiment_options(const ExperimentArgs& a) {
  ExperimentOptions o;
  o.data = a.data;
  o.out = a.out;
  o.profile = a.profile;
  if (!a.student_init.empty()) o.student_init = *protocol::parse_setting<protocol::StudentInit>(a.student_init, "--student-init");
  if (!a.federated_bn.empty()) o.federated_bn = *protocol::parse_setting<protocol::BnStatistics>(a.federated_bn, "--federated-bn");
  if (!a.server_optimizer.empty()) {
    o.server_optimizer = *protocol::parse_setting<protocol::ServerOptimizer>(a.server_optimizer, "--server-optimizer");
  }
  o.server_lr = a.server_lr;
  o.teacher_draws = a.teacher_draws;
  o.modes = comma_list(a.modes);
  o.methods = comma_list(a.methods);
  o.folds.clear();
  for (const auto& f : comma_list(a.folds)) {
    if (f != "0" && f != "1") throw CLI::ValidationError("--folds", "folds are 0 and 1, not '" + f + "'");
    o.folds.push_back(f == "1");
  }
  o.seed = a.seed;
  o.device = a.device;
  o.precision = a.precision;
  o.threads = a.threads;
  o.secure = !a.insecure;
  o.secure_aggregation = a.secure_aggregation;
  o.test_time_mirroring = a.test_time_mirroring;
  o.bin_dir = executable_dir();
  o.cell = a.cell;
  return o;
}

// --plan: every option of this command again, paths absolute, so that a line runs anywhere `out`
// is shared; the plan's files written into a.plan.
int write_plan(const ExperimentArgs& a, const ExperimentOptions& o) {
  std::string base = shell_word((o.bin_dir / "fedda-sim").string()) + " experiment --data " +
                     shell_word(fs::absolute(o.data).lexically_normal().string()) + " --out " +
                     shell_word(fs::absolute(o.out).lexically_normal().string()) + " --profile " + shell_word(o.profile);
  const auto option = [&](const std::string& name, const std::string& value) {
    if (!value.empty()) base += " --" + name + " " + shell_word(value);
  };
  option("student-init", a.student_init);
  option("federated-bn", a.federated_bn);
  option("server-optimizer", a.server_optimizer);
  if (a.server_lr > 0) option("server-lr", std::to_string(a.server_lr));
  if (a.teacher_draws > 0) option("teacher-draws", std::to_string(a.teacher_draws));
  option("modes", a.modes);
  option("methods", a.methods);
  option("folds", a.folds);
  option("seed", std::to_string(a.seed));
  option("device", a.device);
  option("precision", a.precision);
  option("threads", std::to_string(a.threads));
  if (a.insecure) base += " --insecure";
  if (a.secure_aggregation) base += " --secure-aggregation";
  if (a.test_time_mirroring) base += " --test-time-mirroring";
  auto written = write_experiment_plan(o, a.plan, [&](const std::string& cell) { return base + " --cell " + cell; });
  if (!written) {
    log::get("fedda-sim")->error("{}", written.error().message);
    return 1;
  }
  const auto d = written->dir.string();
  log::get("fedda-sim")->info("plan: {} cells in {} stages in {}", written->cells, written->stages, d);
  std::cout << "run it with GNU parallel, Snakemake or Slurm (the cores a cell takes: --threads):\n"
            << "  for s in " << d << "/stage-*.txt; do parallel --halt now,fail=1 < \"$s\" || break; done\n"
            << "  snakemake -s " << d << "/Snakefile --cores N\n"
            << "  FEDDA_SBATCH_OPTIONS=\"--partition=...\" " << d << "/slurm.sh\n";
  return 0;
}

}  // namespace

void add_experiment(CLI::App& app, int& rc) {
  auto a = std::make_shared<ExperimentArgs>();
  auto* cmd = app.add_subcommand(
      "experiment",
      "Run the seed paper's experiment grid and write its tables, plots and report.\n"
      "For every ordered (source, target) pair of the clinics in --data and both folds of the target's "
      "subjects: L-bound (source teacher), U-bound (teacher fine-tuned with the adaptation half's labels), ADA, "
      "KD, KD with the ADA model as teacher, and KD and ADA on the fly (each test subject on its own), scored "
      "on the other half. Every cell runs federated (a local consortium of separate processes over CurveZMQ on "
      "loopback) and centralized (the reference), with the same steps.\n"
      "Writes OUT/results.csv, timings.csv, table2.md (with KD-vs-ADA paired t-tests), table3.md (on the "
      "fly), plots/*.png, report.md and report.html. Rerunning the same command resumes: finished cells are "
      "skipped.\n"
      "Budgets (2 CPU cores): smoke a few minutes (tests), quick 45-50 min, standard about an hour, paper for "
      "a GPU. The report opens with a verdict: the paper's findings, each computed from this run beside the "
      "paper's figure.");
  add_experiment_options(cmd, *a);
  cmd->callback([a, &rc]() {
    const ExperimentOptions o = experiment_options(*a);
    if (!a->plan.empty()) {
      rc = write_plan(*a, o);
      return;
    }
    auto r = run_experiment(o);
    if (!r) {
      log::get("fedda-sim")->error("{}", r.error().message);
      rc = 1;
      return;
    }
    if (!o.cell.empty() && o.cell != "report") {
      if (r->failed) log::get("fedda-sim")->error("cell {} FAILED (the reason is in the report step's report)", o.cell);
      rc = r->failed ? 2 : 0;
      return;
    }
    log::get("fedda-sim")->info("{} cells in {:.1f} min{}; report {}", r->cells, r->seconds / 60,
                                r->failed ? ", " + std::to_string(r->failed) + " FAILED (named in the report)" : "",
                                r->report.string());
    rc = r->failed ? 2 : 0;
  });
}

}  // namespace fedda::experiment::tools
