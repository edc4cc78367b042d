#include "evaluation.h"

#include <cmath>
#include <map>

#include <nlohmann/json.hpp>

#include "fedda/common/files.h"

namespace fedda::coordinator {

Status write_results_csv(const std::filesystem::path& file, const JobRecord& job, const std::vector<EvaluationRow>& rows) {
  const auto& spec = job.definition.spec;
  std::string csv = std::string(protocol::kResultsCsvHeader) + "\n";
  for (const auto& row : rows) {
    const auto& m = row.metrics;
    csv += protocol::csv_line({spec.source, row.site, spec.fold, job.definition.method, "federated", m.subject, m.dsc, m.h95,
                               m.avd, m.recall, m.f1});
  }
  return files::write_atomically(file, csv);
}

Status write_summary(const std::filesystem::path& file, const JobRecord& job, double seconds, bool resumed,
                     const std::vector<EvaluationRow>& rows,
                     const std::map<std::string, protocol::QualitySummary>& quality,
                     const std::vector<std::string>& missing) {
  const auto& spec = job.definition.spec;
  nlohmann::json summary = {{"job", spec.id},
                            {"type", protocol::job_type_name(spec.type)},
                            {"method", job.definition.method},
                            {"rounds", job.finished_round},
                            {"seconds", seconds},
                            {"resumed", resumed}};
  std::map<std::string, std::pair<double, int>> dice;
  for (const auto& row : rows) {
    if (std::isfinite(row.metrics.dsc)) {
      dice[row.site].first += row.metrics.dsc;
      dice[row.site].second += 1;
    }
  }
  for (const auto& [site, d] : dice) summary["mean_dsc"][site] = d.first / d.second;
  for (const auto& [site, q] : quality) {
    nlohmann::json entry = {{"scans", q.scans}, {"flagged", q.flagged}, {"drifted", q.drifted}, {"site_drifted", q.site_drifted}};
    if (q.estimated) {
      entry["estimated_dsc_median"] = q.median;
      entry["estimated_dsc_q1"] = q.q1;
      entry["estimated_dsc_q3"] = q.q3;
    }
    summary["quality"][site] = entry;
  }
  if (!missing.empty()) summary["evaluation_missing"] = missing;
  return files::write_atomically(file, summary.dump(2) + "\n");
}

}  // namespace fedda::coordinator
