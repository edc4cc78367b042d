#pragma once
// fedda-agent monitor: how well a model works on this site's scans, without labels, and whether
// the scans changed since an earlier run (models/quality.h has the signals and the estimator).
//
// Writes into OUT:
//   estimates.csv      one row per scan: subject, clinic, estimated_dsc and its 90% interval,
//                      flagged and why, every signal (and true_dsc when asked to score)
//   report.html        the same as a table, the site's summary, thumbnails of flagged scans
//   thumbnails/        PNGs of the flagged scans (the slice with most predicted lesion)
//   site-profile.json  this run's image statistics: the baseline a later run compares against
//   summary.json       aggregates only (count, median and IQR of the estimate, flagged, drifted):
//                      the only part meant to leave the site
// Per-scan values stay in OUT. A scan that cannot be read is listed as skipped; the run goes on.
//
// Flags: a scan is flagged when its estimate is below `flag_below`, when a signal lies outside
// the range the estimator was fitted on (its estimate is an extrapolation), or when it drifted:
// its FLAIR histogram or noise left the baseline's range (median + 5 robust deviations, and
// 1.5x the farthest baseline scan). The site drifted when at least a fifth of its scans did.

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/imaging/dataset.h"

namespace fedda::site_agent {

struct MonitorOptions {
  std::filesystem::path model;
  std::optional<std::filesystem::path> teacher;
  std::optional<std::filesystem::path> estimator_from;  // use this model file's estimator instead of the model's
  std::filesystem::path out;
  double flag_below = 0.2;
  std::optional<std::filesystem::path> baseline;  // an earlier run's site-profile.json (must be usable)
  // The site's own baseline (cache_dir/reports/site-profile.json), when `baseline` is not given:
  // used when it is usable (else the reason is noted, not an error), and this run becomes it when
  // it is missing or unusable and the run has at least 3 scans.
  std::optional<std::filesystem::path> site_baseline;
  bool score = false;                             // true_dsc where labels exist (validation only)
  std::string device = "cpu", precision = "auto";
};

struct MonitorSummary {
  int scans = 0, flagged = 0, drifted = 0;
  double median = 0, q1 = 0, q3 = 0;   // of the estimated Dice (NaN without an estimator)
  bool has_estimator = false;
  bool site_drifted = false;
  bool compared = false;                // against a baseline (drifted and site_drifted mean something)
  std::string baseline_problem;         // site_baseline: why it was not used
  bool became_baseline = false;         // site_baseline: this run is the site's baseline from now on
  std::vector<std::string> skipped;     // "subject: why"
};

Result<MonitorSummary> run_monitor(const MonitorOptions& options, const std::vector<imaging::SubjectFiles>& subjects,
                                   const std::function<void(int done, int total)>& progress = {});

}  // namespace fedda::site_agent
