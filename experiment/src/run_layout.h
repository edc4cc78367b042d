#pragma once
// Where an experiment's run keeps what (OUT: fedda-sim experiment --out), in one place for the
// grid that writes it (experiment.cpp) and the report that reads it (experiment_report.cpp and
// its parts). Private to the experiment library.
//
//   OUT/experiment.json, results.csv, timings.csv, report.md, report.html, table2.md, table3.md, plots/
//   OUT/centralized/teachers/<source>/          teacher.pt, curve.csv, summary.json (teachers-aug/: lbound-aug's)
//   OUT/centralized/<source>-<target>/fold<k>/<method>/   model.pt, results.csv, curve.csv, summary.json
//   OUT/federated/                               the consortium the federated cells share
//   OUT/federated/jobs/<method>-<source>-<target>-f<k>/   a job's model.pt, rounds.jsonl, results.csv
//   OUT/federated/cells/<cell id>/               a consortium of its own (a cell run by --cell)

#include <filesystem>
#include <string>

namespace fedda::experiment::layout {

inline std::filesystem::path teacher_dir(const std::filesystem::path& out, const std::string& source, bool augmented = false) {
  return out / "centralized" / (augmented ? "teachers-aug" : "teachers") / source;
}
inline std::filesystem::path teacher_model(const std::filesystem::path& out, const std::string& source, bool augmented = false) {
  return std::filesystem::absolute(teacher_dir(out, source, augmented) / "teacher.pt");
}
// `pair`: "<source>-<target>".
inline std::filesystem::path centralized_cell(const std::filesystem::path& out, const std::string& pair, int fold,
                                              const std::string& method) {
  return out / "centralized" / pair / ("fold" + std::to_string(fold)) / method;
}
inline std::string job_id(const std::string& method, const std::string& pair, int fold) {
  return method + "-" + pair + "-f" + std::to_string(fold);
}
inline std::filesystem::path shared_consortium(const std::filesystem::path& out) { return out / "federated"; }
inline std::filesystem::path own_consortium(const std::filesystem::path& out, const std::string& cell_id) {
  return out / "federated" / "cells" / cell_id;
}
inline std::filesystem::path federated_job(const std::filesystem::path& out, const std::string& job) {
  return shared_consortium(out) / "jobs" / job;
}

}  // namespace fedda::experiment::layout
