#pragma once
// The experiment grid's cells and how they depend on each other (private to the experiment
// library): what run_experiment runs in one process, and what write_experiment_plan spreads
// over the stages of a plan (experiment.h).

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/experiment/experiment.h"

namespace fedda::experiment::detail {

// One cell of the grid. Teachers are cells too (method "teacher" or "teacher-aug", target empty).
struct Cell {
  std::string mode, source, target, method;
  int fold = 0;
  std::vector<std::string> subjects;  // on the fly: the fold's test subjects, one job each
  double cost = 0;                    // estimated, in training steps, for the time-left display

  bool is_teacher() const { return method == "teacher" || method == "teacher-aug"; }
  std::string pair() const { return source + "-" + target; }
  // For people: "centralized kd utrecht->singapore fold 0", "teacher utrecht".
  std::string name() const;
  // For command lines, file names and engines' rule names: "centralized-kd-utrecht-singapore-f0",
  // "teacher-utrecht". Letters, digits and '-' only (clinic names are checked when planned).
  std::string id() const;
  // Federated job ids of the cell, in the order they run. On-the-fly jobs are numbered by the
  // subject's place in the fold: a subject id never leaves its site, not even in a job id.
  std::vector<std::string> jobs() const;
};

struct Grid {
  std::vector<Cell> cells;  // teachers first, then the grid's order
  std::vector<std::string> clinics;
};

// The grid of `o` under budget `b` (the clinics of o.data, o.modes, o.methods, o.folds).
Result<Grid> plan_grid(const ExperimentOptions& o, const ExperimentBudget& b);

// The ids of the cells `c` needs finished before it starts: its source's teacher (lbound-aug:
// the augmented teacher), and for kd-from-ada the ada cell of its mode, pair and fold.
std::vector<std::string> cell_dependencies(const Cell& c);

// The id a plan reserves for its last step: merge every finished cell and write the report.
inline constexpr const char* kReportCell = "report";

// Writes the plan's files for `grid` into `dir` (experiment.h, write_experiment_plan); `threads`:
// the cores each cell takes (Snakemake's threads, Slurm's cpus-per-task), 0 when not stated.
Result<ExperimentPlan> write_plan_files(const Grid& grid, const std::filesystem::path& dir,
                                        const std::function<std::string(const std::string&)>& command, int threads);

}  // namespace fedda::experiment::detail
