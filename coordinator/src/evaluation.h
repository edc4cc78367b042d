#pragma once
// A job's outputs once its rounds are done: results.csv (one row per subject scored at each
// evaluation site, written through protocol::csv_line so no subject id from the wire can add a
// row or a column) and summary.json (what ran, how long, mean Dice per site). Pure functions
// of their arguments; thread-safe.

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "fedda/common/protocol.h"
#include "fedda/common/result.h"
#include "job_store.h"

namespace fedda::coordinator {

struct EvaluationRow {
  std::string site;
  protocol::SubjectMetrics metrics;
};

Status write_results_csv(const std::filesystem::path& file, const JobRecord& job, const std::vector<EvaluationRow>& rows);
// `quality`: the sites' label-free quality reports (aggregates), under "quality" by site;
// `missing`: the evaluation sites that sat the evaluation out, and why ("site2 (cannot run it
// (policy))"), under "evaluation_missing".
Status write_summary(const std::filesystem::path& file, const JobRecord& job, double seconds, bool resumed,
                     const std::vector<EvaluationRow>& rows,
                     const std::map<std::string, protocol::QualitySummary>& quality = {},
                     const std::vector<std::string>& missing = {});

}  // namespace fedda::coordinator
