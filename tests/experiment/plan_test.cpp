// The grid spread over an existing engine: `fedda-sim experiment --plan DIR` writes every cell as
// a command, GNU parallel runs the stages, and the report equals the one-process run's.
#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "support/process.h"
#include "support/test_support.h"

namespace fedda {
namespace {

namespace fs = std::filesystem;
using testing::bin;
using testing::run_command;

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream s(text);
  for (std::string line; std::getline(s, line);) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

std::vector<std::string> fields(const std::string& line, char sep) {
  std::vector<std::string> out;
  std::stringstream s(line);
  for (std::string f; std::getline(s, f, sep);) out.push_back(f);
  return out;
}

// Two clinics, one fold, the methods with every kind of dependency (a teacher's; kd-from-ada's on
// ada), both modes: 2 teachers and 2 modes x 2 pairs x 3 methods.
std::string grid_options(const fs::path& data) {
  return " experiment --data " + data.string() +
         " --profile smoke --folds 0 --methods lbound,ada,kd-from-ada --threads 1 --seed 7";
}

TEST(ExperimentPlan, AGridRunThroughGnuParallelGivesTheResultsOfTheOneProcessRun) {
  testing::ScratchDir dir;
  const auto data = dir / "data", whole = dir / "whole", spread = dir / "spread", plan = dir / "plan";
  auto gen = run_command(bin("fedda-sim").string() + " generate --profile smoke --seed 5 --clinics utrecht,singapore --out " +
                         data.string());
  ASSERT_EQ(gen.exit_code, 0) << gen.output;

  auto written = run_command(bin("fedda-sim").string() + grid_options(data) + " --out " + spread.string() + " --plan " +
                             plan.string());
  ASSERT_EQ(written.exit_code, 0) << written.output;
  EXPECT_NE(written.output.find("14 cells in 4 stages"), std::string::npos) << written.output;

  // cells.tsv: every cell once, each in a later stage than every cell it needs, the report last.
  const auto rows = lines_of(read_text(plan / "cells.tsv"));
  ASSERT_EQ(rows.size(), 1u + 14 + 1) << read_text(plan / "cells.tsv");
  EXPECT_EQ(rows[0], "cell\tstage\tneeds\tcost_steps");
  std::map<std::string, int> stage;
  std::map<std::string, std::string> needs;
  for (std::size_t i = 1; i < rows.size(); ++i) {
    const auto f = fields(rows[i], '\t');
    ASSERT_EQ(f.size(), 4u) << rows[i];
    EXPECT_TRUE(stage.emplace(f[0], std::stoi(f[1])).second) << f[0] << " listed twice";
    needs[f[0]] = f[2];
  }
  EXPECT_EQ(stage["teacher-utrecht"], 1);
  EXPECT_EQ(stage["teacher-singapore"], 1);
  EXPECT_EQ(needs["federated-kd-from-ada-utrecht-singapore-f0"], "teacher-utrecht,federated-ada-utrecht-singapore-f0");
  EXPECT_EQ(stage["report"], 4);
  for (const auto& [cell, list] : needs) {
    if (cell == "report") continue;
    for (const auto& need : fields(list == "-" ? "" : list, ',')) {
      ASSERT_TRUE(stage.count(need)) << cell << " needs " << need << ", which the plan lacks";
      EXPECT_LT(stage[need], stage[cell]) << cell << " runs no later than " << need;
    }
  }
  // The stage files hold exactly those cells, one command each, in their stages.
  std::multiset<std::string> in_stages;
  for (int n = 1; n <= 4; ++n) {
    for (const auto& line : lines_of(read_text(plan / ("stage-" + std::to_string(n) + ".txt")))) {
      const auto at = line.rfind(" --cell ");
      ASSERT_NE(at, std::string::npos) << line;
      const auto cell = line.substr(at + 8);
      EXPECT_EQ(stage[cell], n) << cell << " in stage-" << n << ".txt";
      in_stages.insert(cell);
    }
  }
  EXPECT_EQ(in_stages.size(), stage.size());
  EXPECT_EQ(std::set<std::string>(in_stages.begin(), in_stages.end()).size(), stage.size());
  EXPECT_FALSE(fs::exists(plan / "stage-5.txt"));

  // A cell whose teacher has not run is refused naming the teacher's cell; an unknown one naming the plan.
  auto early = run_command(bin("fedda-sim").string() + grid_options(data) + " --out " + spread.string() +
                           " --cell centralized-ada-singapore-utrecht-f0");
  EXPECT_NE(early.exit_code, 0);
  EXPECT_NE(early.output.find("needs cell teacher-singapore, which has not finished"), std::string::npos) << early.output;
  auto unknown = run_command(bin("fedda-sim").string() + grid_options(data) + " --out " + spread.string() +
                             " --cell centralized-kd-utrecht-amsterdam-f0");
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_NE(unknown.output.find("no such cell"), std::string::npos) << unknown.output;
  EXPECT_NE(unknown.output.find(fs::absolute(plan).lexically_normal().string()), std::string::npos) << unknown.output;
  EXPECT_FALSE(fs::exists(spread / "centralized" / "teachers"));  // neither refusal trained anything

  // GNU parallel runs the stages in order, two cells at a time.
  const std::string parallel = "for s in " + plan.string() +
                               "/stage-*.txt; do parallel --halt now,fail=1 -j 2 < \"$s\" || exit 1; done";
  auto ran = run_command("bash -c '" + parallel + "'");
  ASSERT_EQ(ran.exit_code, 0) << ran.output;
  // Federated cells ran on consortia of their own, side by side.
  EXPECT_TRUE(fs::exists(spread / "federated" / "cells" / "federated-ada-utrecht-singapore-f0" / "jobs"));
  EXPECT_FALSE(fs::exists(spread / "federated" / "jobs"));

  // The same grid in one process.
  auto one = run_command(bin("fedda-sim").string() + grid_options(data) + " --out " + whole.string());
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const auto whole_rows = lines_of(read_text(whole / "results.csv"));
  const auto spread_rows = lines_of(read_text(spread / "results.csv"));
  ASSERT_EQ(whole_rows.size(), 1u + 12 * 2);  // header, and two test subjects of each of 12 cells
  EXPECT_EQ(spread_rows, whole_rows);
  // Smoke models segment little, so the scores alone could agree by chance: every cell's trained
  // model is the same bytes too (federated: the coordinator's final model of the cell's job).
  int compared = 0;
  for (const auto& [cell, n] : stage) {
    if (cell == "report" || cell.rfind("teacher-", 0) == 0) continue;
    // cell: MODE-METHOD-SOURCE-TARGET-f0, METHOD may hold '-' (kd-from-ada).
    const auto mode = cell.substr(0, cell.find('-'));
    const auto rest = cell.substr(mode.size() + 1);
    const auto f0 = rest.rfind("-f0");
    const auto target_at = rest.rfind('-', f0 - 1), source_at = rest.rfind('-', target_at - 1);
    const auto method = rest.substr(0, source_at), pair = rest.substr(source_at + 1, f0 - source_at - 1);
    fs::path a, b;
    if (mode == "centralized") {
      a = whole / "centralized" / pair / "fold0" / method / "model.pt";
      b = spread / "centralized" / pair / "fold0" / method / "model.pt";
    } else {
      a = whole / "federated" / "jobs" / (method + "-" + pair + "-f0") / "model.pt";
      b = spread / "federated" / "cells" / cell / "jobs" / (method + "-" + pair + "-f0") / "model.pt";
    }
    ASSERT_TRUE(fs::exists(a) && fs::exists(b)) << a << " / " << b;
    EXPECT_TRUE(read_text(a) == read_text(b)) << cell << ": the models differ";
    ++compared;
  }
  EXPECT_EQ(compared, 12);
  EXPECT_EQ(read_text(spread / "failures.json"), "{}\n");
  EXPECT_TRUE(fs::exists(spread / "report.html"));

  // A line of a stage run again finds its cell done; run-line.sh (Slurm's array task) runs line N.
  auto again = run_command(plan.string() + "/run-line.sh " + (plan / "stage-1.txt").string() + " 1");
  EXPECT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("is done already"), std::string::npos) << again.output;
  auto past = run_command(plan.string() + "/run-line.sh " + (plan / "stage-1.txt").string() + " 9");
  EXPECT_NE(past.exit_code, 0);
  EXPECT_NE(past.output.find("has no line 9"), std::string::npos) << past.output;
  auto syntax = run_command("bash -n " + (plan / "slurm.sh").string());
  EXPECT_EQ(syntax.exit_code, 0) << syntax.output;

  // Snakemake reads the Snakefile and plans every cell once, and the report after them.
  auto snake = run_command("snakemake -n -s " + (plan / "Snakefile").string() + " --cores 2 --forceall 2>&1");
  ASSERT_EQ(snake.exit_code, 0) << snake.output;
  EXPECT_NE(snake.output.find("teacher_utrecht"), std::string::npos) << snake.output;
  std::stringstream table(snake.output);
  int total = -1;
  for (std::string line; std::getline(table, line);) {
    std::stringstream words(line);
    std::string first;
    int count = 0;
    if (words >> first >> count && first == "total") total = count;
  }
  EXPECT_EQ(total, 14 + 2) << snake.output;  // the cells, the report, and the rule all
}

}  // namespace
}  // namespace fedda
