// fedda-agent's label-free quality commands: `monitor` (how well a model works on this site's
// scans, without labels) and `calibrate` (fit the estimator where labels exist).
#include <chrono>
#include <ctime>
#include <iostream>
#include <memory>

#include "agent_commands.h"
#include "fedda/common/log.h"
#include "fedda/imaging/subject_index.h"
#include "fedda/models/quality.h"
#include "fedda/site_agent/monitor.h"

namespace fedda::site_agent::tools {
namespace {

// The scans both commands read: a folder in any layout (--data, --layout) or a site's data.
struct DataArgs {
  std::string data_dir, layout;
  std::string model, teacher, out, device = "cpu", precision = "auto";
  int scanner_changes = 8;  // calibrate (models::CalibrationOptions)
};

// The subjects of `config`'s data, or else of the folder in `a` in any layout the agent reads
// (imaging/subject_index.h); error logged and rc set when there are none.
std::optional<std::vector<imaging::SubjectFiles>> data_subjects(const DataArgs& a, const std::optional<SiteConfig>& config,
                                                                const std::filesystem::path& dicom_cache, int& rc) {
  auto log = log::get("fedda-agent");
  if (config) {
    auto list = site_subjects(*config);
    if (!list) {
      log->error("{}", list.error().message);
      rc = 1;
      return std::nullopt;
    }
    return std::move(*list);
  }
  auto source = imaging::detect_data_source(a.data_dir);
  if (!source) {
    log->error("{}", source.error().message);
    rc = 1;
    return std::nullopt;
  }
  if (!a.layout.empty()) source->layout = a.layout;
  if (source->layout == "dicom" && source->cache.empty()) source->cache = dicom_cache;
  auto index = imaging::index_subjects(*source);
  if (!index) {
    log->error("{}", index.error().message);
    rc = 1;
    return std::nullopt;
  }
  for (const auto& i : index->ignored) log->warn("ignored {}: {}", i.path.string(), i.reason);
  return std::move(index->subjects);
}

void add_compute_options(CLI::App* cmd, DataArgs& a) {
  cmd->add_option("--device", a.device, "cpu or cuda")->capture_default_str();
  cmd->add_option("--precision", a.precision, "auto, float32 or bfloat16")->capture_default_str();
}

// cache_dir/reports/monitor-<UTC time>: where a site's monitor run writes by default.
std::string timestamped_report(const std::filesystem::path& reports) {
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "monitor-%Y%m%dT%H%M%SZ", std::gmtime(&now));
  return (reports / stamp).string();
}

}  // namespace

void add_monitor(CLI::App& app, int& rc) {
  struct Args : DataArgs {
    std::string config, baseline, estimator_from;
    double flag_below = 0.2;
    bool score = false;
  };
  auto a = std::make_shared<Args>();
  auto* monitor = app.add_subcommand(
      "monitor",
      "How well a model works on this site's scans, without labels: per scan an estimated Dice with a 90% interval "
      "(from the quality estimator the model file carries; fedda-agent calibrate fits one at a labelled site) and the "
      "signals behind it (the model's entropy and self-expected Dice, its agreement under test-time augmentation and "
      "with --teacher, predicted lesion volume and count, intensity histogram and noise). Writes OUT/estimates.csv, "
      "OUT/report.html (thumbnails of flagged scans), OUT/site-profile.json (this run's image statistics, the "
      "--baseline of a later run) and OUT/summary.json (aggregates only, the one file meant to leave the site). A scan "
      "is flagged when its estimate is below --flag-below, when its signals leave the estimator's range, or when it "
      "drifted from --baseline. With --config: the site's data, OUT defaults to cache_dir/reports/monitor-<time>, and "
      "the baseline to cache_dir/reports/site-profile.json (written by the first run).");
  monitor->add_option("--model", a->model, "fedda model file (.pt)")->required();
  monitor->add_option("--teacher", a->teacher, "the teacher it was distilled from (agreement with it is a signal)");
  monitor->add_option("--estimator-from", a->estimator_from,
                      "use the quality estimator this model file carries (e.g. the teacher's, for a model adapted from "
                      "it with no estimator of its own; what jobs do) instead of --model's");
  auto* monitor_data = monitor->add_option("--data", a->data_dir, "the scans: a folder in any layout the agent reads");
  auto* monitor_config = monitor->add_option("--config", a->config, "site config (YAML): its data and cache_dir");
  monitor_data->excludes(monitor_config);
  monitor->add_option("--layout", a->layout, "--data's layout when detection is not enough (wmh, bids, datalist, dicom)");
  monitor->add_option("--out", a->out, "report folder (created)");
  monitor->add_option("--baseline", a->baseline, "an earlier run's site-profile.json: flag scans that drifted from it");
  monitor->add_option("--flag-below", a->flag_below, "flag scans whose estimated Dice is below this")->capture_default_str();
  monitor->add_flag("--score", a->score, "also score against the labels where present (true_dsc column; for validation: "
                                         "the estimate never reads them)");
  add_compute_options(monitor, *a);
  monitor->callback([a, &rc]() {
    auto log = log::get("fedda-agent");
    if (a->data_dir.empty() && a->config.empty()) {
      log->error("monitor needs --data or --config");
      rc = 2;
      return;
    }
    std::optional<SiteConfig> config;
    if (!a->config.empty()) {
      config = load_config(a->config, rc);
      if (!config) return;
    }
    MonitorOptions options;
    options.model = a->model;
    if (!a->teacher.empty()) options.teacher = a->teacher;
    if (!a->estimator_from.empty()) options.estimator_from = a->estimator_from;
    options.flag_below = a->flag_below;
    options.score = a->score;
    options.device = a->device;
    options.precision = a->precision;
    std::string out = a->out;
    if (config) {
      const auto reports = config->cache_dir / "reports";
      if (a->baseline.empty()) options.site_baseline = reports / "site-profile.json";
      if (out.empty()) out = timestamped_report(reports);
    }
    if (out.empty()) {
      log->error("monitor needs --out (or --config)");
      rc = 2;
      return;
    }
    options.out = out;
    if (!a->baseline.empty()) options.baseline = a->baseline;
    auto subjects = data_subjects(*a, config, options.out / "dicom-cache", rc);
    if (!subjects) return;
    const auto& against = options.baseline ? options.baseline : options.site_baseline;
    log->info("monitoring {} scans with {}{}", subjects->size(), a->model,
              against ? " against baseline " + against->string() : std::string());
    auto summary = run_monitor(options, *subjects, [&](int done, int total) {
      if (done == total || done % 5 == 0) log->info("{} of {} scans", done, total);
    });
    if (!summary) {
      log->error("{}", summary.error().message);
      rc = 1;
      return;
    }
    for (const auto& s : summary->skipped) log->warn("skipped {}", s);
    if (!summary->has_estimator) log->warn("{} carries no quality estimator: signals only (fedda-agent calibrate fits one)", a->model);
    if (summary->has_estimator) {
      std::cout << summary->scans << " scans, " << summary->flagged << " flagged, estimated Dice median "
                << summary->median << " (IQR " << summary->q1 << " to " << summary->q3 << ")";
    } else {  // nothing was estimated, so "0 flagged" would read as "all well"
      std::cout << summary->scans << " scans, no Dice estimates: " << a->model
                << " carries no quality estimator (fedda-agent calibrate fits one at a labelled site)";
    }
    if (summary->compared) {
      std::cout << ", " << summary->drifted << " drifted from the baseline" << (summary->site_drifted ? ": SITE DRIFTED" : "");
    }
    std::cout << "\nreport: " << (options.out / "report.html").string() << "\n";
    if (!summary->baseline_problem.empty()) log->warn("baseline not used: {}", summary->baseline_problem);
    if (summary->became_baseline) log->info("this run is the site's baseline from now on: {}", options.site_baseline->string());
  });
}

void add_calibrate(CLI::App& app, int& rc) {
  auto a = std::make_shared<DataArgs>();
  auto* calibrate = app.add_subcommand(
      "calibrate",
      "Fit the label-free quality estimator of a model where labels exist (a source site; the labelled half in "
      "simulation): each labelled scan is segmented as it is, under 7 acquisition changes (contrast curves, noise, "
      "blur, a bias field) and under random scanner changes (--scanner-changes), its signals regressed on its "
      "Dice, and the estimator written into a copy of the model file (--out), which sites without labels then "
      "monitor with. With --teacher the teacher's agreement is one of "
      "the signals, and monitor needs the same teacher.");
  calibrate->add_option("--model", a->model, "fedda model file (.pt)")->required();
  calibrate->add_option("--teacher", a->teacher, "the teacher it was distilled from");
  calibrate->add_option("--data", a->data_dir, "labelled scans: a folder in any layout the agent reads")->required();
  calibrate->add_option("--layout", a->layout, "--data's layout when detection is not enough");
  calibrate->add_option("--out", a->out, "the model file with its estimator (may be --model itself)")->required();
  calibrate->add_option("--scanner-changes", a->scanner_changes,
                        "beside the 7 fixed changes, this many random scanner changes of each scan, drawn from the heavy "
                        "recipe's intensity transforms (BigAug's ranges) for the whole scan at once")
      ->capture_default_str()
      ->check(CLI::Range(0, 64));
  add_compute_options(calibrate, *a);
  calibrate->callback([a, &rc]() {
    auto log = log::get("fedda-agent");
    auto subjects = data_subjects(*a, std::nullopt, std::filesystem::path(a->out).parent_path() / "dicom-cache", rc);
    if (!subjects) return;
    std::vector<imaging::SubjectFiles> labelled;
    for (const auto& s : *subjects) {
      if (s.labels) labelled.push_back(s);
    }
    if (labelled.empty()) {
      log->error("{}: none of its {} scans has labels; calibration needs labelled scans", a->data_dir, subjects->size());
      rc = 1;
      return;
    }
    models::CalibrationOptions options;
    if (!a->teacher.empty()) options.teacher = a->teacher;
    options.device = a->device;
    options.precision = a->precision;
    options.scanner_changes = a->scanner_changes;
    auto estimator = models::calibrate_quality(a->model, labelled, options, [&](int done, int total) {
      if (done == total || done % 10 == 0) log->info("{} of {} samples", done, total);
    });
    if (!estimator) {
      log->error("{}", estimator.error().message);
      rc = 1;
      return;
    }
    if (auto st = models::attach_estimator(a->model, *estimator, a->out); !st) {
      log->error("{}", st.error().message);
      rc = 1;
      return;
    }
    std::cout << "fitted on " << estimator->fitted_on << ": " << estimator->samples << " samples, the model's mean Dice "
              << estimator->fit_mean_dsc << ", Spearman " << estimator->fit_spearman << ", mean absolute error "
              << estimator->fit_mae << ", 90% interval +-" << 1.645 * estimator->residual_sd << "\nwrote " << a->out << "\n";
    if (estimator->fit_mean_dsc < 0.05) {  // every estimate would be "about 0": it tells nothing
      log->warn("{} segments almost nothing on its labelled scans here (mean Dice {:.3f}): an estimator of such a model "
                "says little; train the model (or check the labels) before relying on its estimates",
                a->model, estimator->fit_mean_dsc);
    }
  });
}

}  // namespace fedda::site_agent::tools
