#pragma once
// What the experiment's files share of its cells (private to the experiment library): the
// budget's derived settings (budget.cpp), a centralized cell's run (centralized_cells.cpp), and
// the rows of a results.csv.

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "fedda/common/files.h"
#include "fedda/common/result.h"
#include "fedda/experiment/experiment.h"
#include "grid.h"

namespace fedda::experiment::detail {

// The student's budget (kd, kd-from-ada): its own, or the adaptations'.
int kd_epochs(const ExperimentBudget& b);
double kd_lr(const ExperimentBudget& b);
bool is_kd(const std::string& method);  // kd, kd-from-ada, kd-noisy
// The budget as experiment.json records it (a resumed run must have the same).
nlohmann::json budget_json(const ExperimentBudget& b);

// Where a centralized cell writes (run_layout.h), and its run: the rows of its results.csv (none
// for a teacher cell).
std::filesystem::path centralized_dir(const std::filesystem::path& out, const Cell& c);
Result<std::string> run_centralized_cell(const ExperimentOptions& o, const ExperimentBudget& b, const Cell& c);

// Rows of a results.csv after its header ("" when the file is missing).
inline std::string csv_rows(const std::filesystem::path& csv) {
  auto text = files::read_all(csv);
  if (!text) return {};
  const auto body = text->find('\n');
  return body == std::string::npos ? std::string() : text->substr(body + 1);
}

}  // namespace fedda::experiment::detail
