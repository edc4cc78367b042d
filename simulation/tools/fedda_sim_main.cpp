// fedda-sim: simulated clinics and evaluation for researchers running fedda on one machine.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "fedda/common/cli.h"
#include "fedda/common/files.h"
#include "fedda/common/log.h"
#include "fedda/simulation/evaluation.h"
#include "fedda/common/version.h"
#include "sim_commands.h"
#include "experiment_commands.h"

namespace fs = std::filesystem;
using namespace fedda;

namespace {

int fail(const Error& error) {
  log::get("fedda-sim")->error("{}", error.message);
  return 1;
}

struct EvaluateArgs {
  std::string truth, pred, data, preds, csv;
  bool json = false;
  bool allow_geometry_mismatch = false;
};

void add_evaluate(CLI::App& app, EvaluateArgs& a, int& rc) {
  auto* cmd = app.add_subcommand(
      "evaluate",
      "Score predictions with the five WMH challenge metrics (DSC, H95, AVD, lesion recall, "
      "lesion F1). Label 2 (other pathology) is excluded from truth and prediction.\n"
      "One case:  fedda-sim evaluate --truth wmh.nii.gz --pred result.nii.gz --json\n"
      "A folder:  fedda-sim evaluate --data DATA --preds PREDS --csv scores.csv\n"
      "  (predictions at PREDS/<clinic>/<subject>/result.nii.gz or PREDS/<clinic>/<subject>.nii.gz)");
  cmd->add_option("--truth", a.truth, "ground truth label map (0, 1 WMH, 2 other pathology)");
  cmd->add_option("--pred", a.pred, "prediction (any datatype; >= 0.5 is lesion)");
  cmd->add_flag("--json", a.json, "print one JSON object {dsc,h95,avd,recall,f1} (null = undefined)");
  cmd->add_option("--data", a.data, "data folder in the WMH layout, for batch scoring");
  cmd->add_option("--preds", a.preds, "folder of predictions, for batch scoring");
  cmd->add_option("--csv", a.csv, "batch: write per-subject scores and means to this CSV (default: stdout)");
  cmd->add_flag("--allow-geometry-mismatch", a.allow_geometry_mismatch,
                "score a prediction of the right size but different spacing/origin/direction on the "
                "truth's grid, as the official script does, instead of refusing it");
  cmd->callback([&]() {
    simulation::EvaluateOptions options;
    options.allow_geometry_mismatch = a.allow_geometry_mismatch;
    const bool single = !a.truth.empty() || !a.pred.empty();
    const bool batch = !a.data.empty() || !a.preds.empty();
    if (single == batch) {
      throw CLI::ValidationError("evaluate", "give either --truth and --pred, or --data and --preds");
    }
    if (single) {
      if (a.truth.empty() || a.pred.empty()) throw CLI::ValidationError("evaluate", "--truth and --pred go together");
      auto m = simulation::evaluate_files(a.truth, a.pred, options);
      if (!m) {
        rc = fail(m.error());
        return;
      }
      if (a.json) {
        std::cout << simulation::metrics_json(*m) << std::endl;
      } else {
        std::printf("DSC    %.4f\nH95    %.2f mm\nAVD    %.2f %%\nRecall %.4f\nF1     %.4f\n", m->dsc,
                    m->h95, m->avd, m->recall, m->f1);
      }
      rc = 0;
      return;
    }
    if (a.data.empty() || a.preds.empty()) throw CLI::ValidationError("evaluate", "--data and --preds go together");
    auto batch_result = simulation::evaluate_folder(a.data, a.preds, options);
    if (!batch_result) {
      rc = fail(batch_result.error());
      return;
    }
    const std::string csv = simulation::evaluation_csv(*batch_result);
    if (a.csv.empty()) {
      std::cout << csv;
    } else if (auto st = files::write_atomically(a.csv, csv); !st) {
      rc = fail(st.error());
      return;
    } else {
      log::get("fedda-sim")->info("scored {} subjects; wrote {}", batch_result->cases.size(), a.csv);
    }
    for (const auto& p : batch_result->problems) log::get("fedda-sim")->error("{}", p);
    rc = batch_result->problems.empty() ? 0 : 2;
  });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "fedda-sim: simulated clinics, evaluation and experiments for fedda, federated domain "
      "adaptation of MRI segmentation networks."};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("fedda-sim ") + kVersion);
  std::string log_level = "info";
  cli::add_log_level(app, log_level);

  int rc = 0;
  EvaluateArgs evaluate_args;
  add_evaluate(app, evaluate_args, rc);
  simulation::tools::add_generate(app, rc);
  simulation::tools::add_preview(app, rc);
  simulation::tools::add_threshold_baseline(app, rc);
  experiment::tools::add_centralized(app, rc);
  experiment::tools::add_recipe(app, rc);
  experiment::tools::add_consortium(app, rc);
  experiment::tools::add_experiment(app, rc);

  return cli::run(app, argc, argv, rc, "fedda-sim");
}
