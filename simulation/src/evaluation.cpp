#include "fedda/simulation/evaluation.h"

#include <cmath>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fedda/common/protocol.h"
#include "fedda/imaging/dataset.h"
#include "fedda/imaging/nifti_io.h"

namespace fedda::simulation {
namespace fs = std::filesystem;
using imaging::CaseMetrics;

namespace {

nlohmann::json number_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }

struct MeanAccumulator {
  double sum[5] = {0, 0, 0, 0, 0};
  int count[5] = {0, 0, 0, 0, 0};
  int cases = 0;
  void add(const CaseMetrics& m) {
    const double v[5] = {m.dsc, m.h95, m.avd, m.recall, m.f1};
    for (int i = 0; i < 5; ++i) {
      if (std::isfinite(v[i])) {
        sum[i] += v[i];
        ++count[i];
      }
    }
    ++cases;
  }
  std::string row(const std::string& clinic) const {
    std::ostringstream s;
    s << clinic << ",mean";
    for (int i = 0; i < 5; ++i) {
      s << "," << (count[i] ? protocol::csv_number(sum[i] / count[i]) : "");
    }
    return s.str();
  }
};

}  // namespace

Result<CaseMetrics> evaluate_files(const fs::path& truth, const fs::path& prediction,
                                   const EvaluateOptions& options) {
  auto t = imaging::read_label_map(truth);
  if (!t) return t.error();
  auto p = imaging::read_prediction(prediction);
  if (!p) return p.error();
  if (auto diff = imaging::geometry_difference(t->geometry, p->geometry); !diff.empty()) {
    if (!options.allow_geometry_mismatch || t->geometry.size != p->geometry.size) {
      return make_error(prediction.string() + ": not on the grid of " + truth.string() + ": " + diff +
                        (t->geometry.size == p->geometry.size
                             ? " (use --allow-geometry-mismatch to score it on the truth's grid)"
                             : ""));
    }
    p->geometry = t->geometry;
  }
  auto m = imaging::evaluate_case(*t, *p);
  if (!m) return make_error(prediction.string() + ": " + m.error().message);
  return m;
}

Result<BatchEvaluation> evaluate_folder(const fs::path& data, const fs::path& predictions,
                                        const EvaluateOptions& options) {
  auto subjects = imaging::find_subjects(data);
  if (!subjects) return subjects.error();
  std::error_code ec;
  if (!fs::is_directory(predictions, ec)) {
    return make_error(predictions.string() + ": no such predictions folder");
  }
  BatchEvaluation out;
  for (const auto& s : *subjects) {
    if (!s.labels) continue;
    const fs::path candidates[] = {predictions / s.clinic / s.subject / "result.nii.gz",
                                   predictions / s.clinic / (s.subject + ".nii.gz")};
    const fs::path* found = nullptr;
    for (const auto& c : candidates) {
      if (fs::exists(c, ec)) {
        found = &c;
        break;
      }
    }
    if (!found) {
      out.problems.push_back(s.clinic + "/" + s.subject + ": no prediction (looked for " +
                             candidates[0].string() + " and " + candidates[1].string() + ")");
      continue;
    }
    auto m = evaluate_files(*s.labels, *found, options);
    if (!m) {
      out.problems.push_back(s.clinic + "/" + s.subject + ": " + m.error().message);
      continue;
    }
    out.cases.push_back({s.clinic, s.subject, *m});
  }
  if (out.cases.empty() && out.problems.empty()) {
    return make_error(data.string() + ": no labelled subjects (wmh.nii.gz) to evaluate");
  }
  return out;
}

std::string metrics_json(const CaseMetrics& m) {
  nlohmann::json j;
  j["dsc"] = number_or_null(m.dsc);
  j["h95"] = number_or_null(m.h95);
  j["avd"] = number_or_null(m.avd);
  j["recall"] = number_or_null(m.recall);
  j["f1"] = number_or_null(m.f1);
  return j.dump();
}

std::string evaluation_csv(const BatchEvaluation& evaluation) {
  std::ostringstream s;
  s << "clinic,subject,dsc,h95,avd,recall,f1\n";
  std::map<std::string, MeanAccumulator> per_clinic;
  MeanAccumulator overall;
  for (const auto& c : evaluation.cases) {
    const auto& m = c.metrics;
    s << c.clinic << "," << c.subject << "," << protocol::csv_number(m.dsc) << "," << protocol::csv_number(m.h95) << ","
      << protocol::csv_number(m.avd) << "," << protocol::csv_number(m.recall) << "," << protocol::csv_number(m.f1) << "\n";
    per_clinic[c.clinic].add(m);
    overall.add(m);
  }
  for (const auto& [clinic, acc] : per_clinic) s << acc.row(clinic) << "\n";
  if (!evaluation.cases.empty()) s << overall.row("all") << "\n";
  return s.str();
}

}  // namespace fedda::simulation
