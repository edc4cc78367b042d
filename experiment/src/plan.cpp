// The grid as a plan for an existing engine (experiment.h, write_experiment_plan): stage files
// for GNU parallel, a Snakefile for Snakemake and an array script for Slurm. fedda schedules
// nothing itself here: the engines exist, and each cell is a command that refuses to start
// before the cells it needs have finished.
#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include "fedda/common/files.h"
#include "grid.h"

namespace fedda::experiment::detail {
namespace fs = std::filesystem;

namespace {

// Stage of every cell: 1 for a cell that needs nothing, else one more than the latest it needs.
Result<std::map<std::string, int>> stages_of(const Grid& grid) {
  std::map<std::string, int> stage;
  for (const auto& c : grid.cells) {  // a cell comes after every cell it needs (plan_grid's order)
    int s = 1;
    for (const auto& need : cell_dependencies(c)) {
      const auto it = stage.find(need);
      if (it == stage.end()) return make_error("cell " + c.id() + " needs cell " + need + ", which the grid does not plan");
      s = std::max(s, it->second + 1);
    }
    if (!stage.emplace(c.id(), s).second) return make_error("cell " + c.id() + " is planned twice");
  }
  return stage;
}

// A Python string literal for Snakemake's shell directive (its braces are format fields).
std::string snake_string(const std::string& text) {
  std::string out = "\"";
  for (char ch : text) {
    if (ch == '\\' || ch == '"') out += '\\';
    if (ch == '{' || ch == '}') out += ch;
    out += ch;
  }
  return out + "\"";
}

std::string marker(const std::string& id) { return snake_string("done/" + id); }

struct PlannedCell {
  const Cell* cell;
  int stage;
};

std::string snakefile(const fs::path& dir, const std::vector<PlannedCell>& cells,
                      const std::function<std::string(const std::string&)>& command, int threads) {
  std::ostringstream s;
  s << "# fedda-sim experiment's plan for Snakemake: one rule per cell; a rule's input is the markers of\n"
       "# the cells it needs, its output its own marker in done/. Run it with\n"
       "#   snakemake -s " << (dir / "Snakefile").string() << " --cores N\n"
       "# (N cores in all; each cell takes its --threads). Written by fedda-sim; do not edit.\n"
       "workdir: " << snake_string(dir.string()) << "\n\n"
       "rule all:\n    input: " << marker(kReportCell) << "\n";
  std::set<std::string> names{"all", kReportCell};
  std::string every;
  for (std::size_t i = 0; i < cells.size(); ++i) {
    const Cell& c = *cells[i].cell;
    std::string name = c.id();
    std::replace(name.begin(), name.end(), '-', '_');
    if (!names.insert(name).second) names.insert(name += "_" + std::to_string(i));  // clinics with '_' can meet
    s << "\nrule " << name << ":\n";
    const auto needs = cell_dependencies(c);
    if (!needs.empty()) {
      s << "    input:";
      for (std::size_t k = 0; k < needs.size(); ++k) s << (k ? ", " : " ") << marker(needs[k]);
      s << "\n";
    }
    s << "    output: touch(" << marker(c.id()) << ")\n";
    if (threads > 0) s << "    threads: " << threads << "\n";
    s << "    shell: " << snake_string(command(c.id())) << "\n";
    every += (every.empty() ? "" : ", ") + marker(c.id());
  }
  s << "\nrule " << kReportCell << ":\n    input: " << every << "\n    output: touch(" << marker(kReportCell)
    << ")\n    shell: " << snake_string(command(kReportCell)) << "\n";
  return s.str();
}

std::string run_line_script() {
  return "#!/bin/sh\n"
         "# Runs one line of a stage file of fedda-sim experiment's plan: line N, from the second argument\n"
         "# or from SLURM_ARRAY_TASK_ID (slurm.sh submits each stage as an array job of this script).\n"
         "set -eu\n"
         "stage=\"${1:?usage: run-line.sh STAGE-FILE [LINE]}\"\n"
         "n=\"${2:-${SLURM_ARRAY_TASK_ID:?run-line.sh: no LINE given and SLURM_ARRAY_TASK_ID is not set}}\"\n"
         "line=\"$(sed -n \"${n}p\" \"$stage\")\"\n"
         "[ -n \"$line\" ] || { echo \"run-line.sh: $stage has no line $n\" >&2; exit 2; }\n"
         "exec sh -c \"$line\"\n";
}

std::string slurm_script(int stages, int threads) {
  std::ostringstream s;
  s << "#!/bin/bash\n"
       "# Submits fedda-sim experiment's plan to Slurm: one array job per stage (one task per line),\n"
       "# each stage after every task of the one before it succeeded (afterok). The cells share the\n"
       "# grid's output folder, so it must be on a file system every node mounts.\n"
       "# Options for every sbatch (partition, time, account) in FEDDA_SBATCH_OPTIONS, e.g.\n"
       "#   FEDDA_SBATCH_OPTIONS=\"--partition=cpu --time=04:00:00\" ./slurm.sh\n"
       "# Written by fedda-sim; do not edit.\n"
       "set -euo pipefail\n"
       "plan=\"$(cd \"$(dirname \"$0\")\" && pwd)\"\n"
       "mkdir -p \"$plan/slurm-logs\"\n"
       "after=\"\"\n"
       "for n in $(seq 1 " << stages << "); do\n"
       "  stage=\"$plan/stage-$n.txt\"\n"
       "  tasks=$(grep -c . \"$stage\")\n"
       "  # shellcheck disable=SC2086 # FEDDA_SBATCH_OPTIONS is a list of options\n"
       "  id=$(sbatch --parsable ${FEDDA_SBATCH_OPTIONS:-}" << (threads > 0 ? " --cpus-per-task=" + std::to_string(threads) : "")
    << " ${after:+--dependency=afterok:$after} \\\n"
       "       --job-name=\"fedda-stage-$n\" --array=\"1-$tasks\" --output=\"$plan/slurm-logs/stage-$n-%a.log\" \\\n"
       "       \"$plan/run-line.sh\" \"$stage\")\n"
       "  id=\"${id%%;*}\"  # --parsable prints ID or ID;CLUSTER\n"
       "  echo \"stage $n: Slurm job $id, $tasks task(s)\"\n"
       "  after=\"$id\"\n"
       "done\n";
  return s.str();
}

Status write_executable(const fs::path& file, const std::string& text) {
  if (auto st = files::write_atomically(file, text); !st) return st;
  std::error_code ec;
  fs::permissions(file, fs::perms::owner_exec | fs::perms::group_exec | fs::perms::others_exec, fs::perm_options::add, ec);
  if (ec) return make_error(file.string() + ": cannot make it executable: " + ec.message());
  return Status::success();
}

}  // namespace

Result<ExperimentPlan> write_plan_files(const Grid& grid, const fs::path& out_dir,
                                        const std::function<std::string(const std::string&)>& command, int threads) {
  const fs::path dir = fs::absolute(out_dir).lexically_normal();
  auto stage = stages_of(grid);
  if (!stage) return stage.error();
  std::vector<PlannedCell> cells;
  int last = 0;
  for (const auto& c : grid.cells) {
    cells.push_back({&c, stage->at(c.id())});
    last = std::max(last, cells.back().stage);
  }
  // Within a stage the costliest cells first, so that an engine filling its slots in order ends sooner.
  std::stable_sort(cells.begin(), cells.end(), [](const PlannedCell& a, const PlannedCell& b) {
    return a.stage != b.stage ? a.stage < b.stage : a.cell->cost > b.cell->cost;
  });
  ExperimentPlan plan;
  plan.cells = static_cast<int>(cells.size());
  plan.stages = last + 1;
  plan.dir = dir;
  std::vector<std::string> stage_text(plan.stages);
  std::string tsv = "cell\tstage\tneeds\tcost_steps\n";
  for (const auto& p : cells) {
    stage_text[p.stage - 1] += command(p.cell->id()) + "\n";
    std::string needs;
    for (const auto& n : cell_dependencies(*p.cell)) needs += (needs.empty() ? "" : ",") + n;
    tsv += p.cell->id() + "\t" + std::to_string(p.stage) + "\t" + (needs.empty() ? "-" : needs) + "\t" +
           std::to_string(static_cast<long>(p.cell->cost)) + "\n";
  }
  stage_text.back() = command(kReportCell) + "\n";
  tsv += std::string(kReportCell) + "\t" + std::to_string(plan.stages) + "\t(every cell)\t0\n";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return make_error(dir.string() + ": cannot create: " + ec.message());
  // A plan written here before for a larger grid may have left later stages.
  for (int n = plan.stages + 1; fs::exists(dir / ("stage-" + std::to_string(n) + ".txt")); ++n) {
    if (auto st = files::remove_durably(dir / ("stage-" + std::to_string(n) + ".txt")); !st) return st.error();
  }
  for (int n = 1; n <= plan.stages; ++n) {
    if (auto st = files::write_atomically(dir / ("stage-" + std::to_string(n) + ".txt"), stage_text[n - 1]); !st) {
      return st.error();
    }
  }
  if (auto st = files::write_atomically(dir / "cells.tsv", tsv); !st) return st.error();
  if (auto st = files::write_atomically(dir / "Snakefile", snakefile(dir, cells, command, threads)); !st) return st.error();
  if (auto st = write_executable(dir / "run-line.sh", run_line_script()); !st) return st.error();
  if (auto st = write_executable(dir / "slurm.sh", slurm_script(plan.stages, threads)); !st) return st.error();
  return plan;
}

}  // namespace fedda::experiment::detail
