#pragma once
// Scoring predictions against WMH-layout ground truth, one case or a whole folder, and the
// report formats fedda writes (JSON for one case, CSV per subject with means).

#include <filesystem>
#include <string>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/imaging/metrics.h"

namespace fedda::simulation {

struct EvaluatedCase {
  std::string clinic;
  std::string subject;
  imaging::CaseMetrics metrics;
};

struct BatchEvaluation {
  std::vector<EvaluatedCase> cases;
  // One line per subject that could not be scored, naming it and why.
  std::vector<std::string> problems;
};

struct EvaluateOptions {
  // Score a prediction whose geometry differs from the truth's on the truth's grid (the
  // official script's behaviour) instead of refusing it. Sizes must still agree.
  bool allow_geometry_mismatch = false;
};

Result<imaging::CaseMetrics> evaluate_files(const std::filesystem::path& truth,
                                            const std::filesystem::path& prediction,
                                            const EvaluateOptions& options = {});

// Scores every labelled subject under `data` (WMH layout) against its prediction in
// `predictions`: `<clinic>/<subject>/result.nii.gz` or `<clinic>/<subject>.nii.gz`.
// A subject without a prediction, or whose prediction is refused, goes to `problems`.
Result<BatchEvaluation> evaluate_folder(const std::filesystem::path& data,
                                        const std::filesystem::path& predictions,
                                        const EvaluateOptions& options = {});

// {"dsc":..,"h95":..,"avd":..,"recall":..,"f1":..}; undefined values are null.
std::string metrics_json(const imaging::CaseMetrics& metrics);

// clinic,subject,dsc,h95,avd,recall,f1 per case, then a "mean" row per clinic and overall
// (means over defined values; empty cells for undefined ones).
std::string evaluation_csv(const BatchEvaluation& evaluation);

}  // namespace fedda::simulation
