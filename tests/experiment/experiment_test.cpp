// The experiment grid: its statistics, and the smoke grid end to end through the real fedda-sim
// binary (federated cells on a real local consortium), checked for shape, not for numbers.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "fedda/experiment/experiment.h"
#include "support/process.h"
#include "support/test_support.h"

namespace fedda {
namespace {

namespace fs = std::filesystem;
using testing::bin;
using testing::run_command;

// Reference values: the two-sided tail of Student's t density, integrated numerically.
TEST(PairedTTest, MatchesReferenceValues) {
  auto t = experiment::paired_t_test({2, 3, 4, 5, 6}, {1, 1, 1, 1, 1});  // differences 1..5
  ASSERT_TRUE(t);
  EXPECT_EQ(t->n, 5);
  EXPECT_NEAR(t->mean_difference, 3.0, 1e-12);
  EXPECT_NEAR(t->t, 4.242640687, 1e-8);
  EXPECT_NEAR(t->p, 0.0132356, 1e-6);

  t = experiment::paired_t_test({0.61, 0.55, 0.72, 0.48, 0.66, 0.59, 0.70}, {0.58, 0.50, 0.69, 0.49, 0.60, 0.55, 0.64});
  ASSERT_TRUE(t);
  EXPECT_NEAR(t->t, 4.044111609, 1e-8);
  EXPECT_NEAR(t->p, 0.0067711, 1e-6);

  // Symmetric in the order of the methods, but for the sign.
  auto r = experiment::paired_t_test({0.58, 0.50, 0.69, 0.49, 0.60, 0.55, 0.64}, {0.61, 0.55, 0.72, 0.48, 0.66, 0.59, 0.70});
  ASSERT_TRUE(r);
  EXPECT_NEAR(r->t, -t->t, 1e-12);
  EXPECT_NEAR(r->p, t->p, 1e-12);
}

// What each cell of the paper-cpu grid trains with: the paper's student from scratch gets the
// teacher's whole budget and recipe; the methods beyond the paper add heavy augmentation.
TEST(CellTraining, GivesEachMethodItsBudgetAndRecipe) {
  using experiment::cell_training;
  auto b = experiment::experiment_budget("paper-cpu").value();
  const auto lbound = cell_training(b, "lbound", 1, "cpu", "auto", 2);
  EXPECT_EQ(lbound.teacher.epochs, 100);
  EXPECT_EQ(lbound.teacher.recipe.optimizer, "adam");
  EXPECT_EQ(lbound.teacher.recipe.schedule, "poly");
  EXPECT_EQ(lbound.teacher.recipe.patch_size, 64);
  const auto kd = cell_training(b, "kd", 1, "cpu", "auto", 2);
  EXPECT_EQ(kd.adaptation.epochs, b.adapt_epochs);  // from the teacher: the adaptation's budget
  EXPECT_EQ(kd.adaptation.recipe.optimizer, "adam");
  EXPECT_DOUBLE_EQ(kd.adaptation.learning_rate, 1e-4);
  b.student_init = protocol::StudentInit::scratch;
  const auto scratch = cell_training(b, "kd", 1, "cpu", "auto", 2);
  EXPECT_EQ(scratch.adaptation.kd_init, protocol::StudentInit::scratch);
  EXPECT_EQ(scratch.adaptation.epochs, 100);
  EXPECT_DOUBLE_EQ(scratch.adaptation.learning_rate, 1e-3);
  EXPECT_EQ(models::to_json(scratch.adaptation.recipe), models::to_json(lbound.teacher.recipe));
  const auto aug = cell_training(b, "lbound-aug", 1, "cpu", "auto", 2);
  EXPECT_EQ(aug.teacher.recipe.bias_field_probability, models::recipe_preset("heavy")->bias_field_probability);
  EXPECT_EQ(aug.teacher.recipe.patch_size, 64);  // the teacher's own optimiser and patches
  const auto noisy = cell_training(b, "kd-noisy", 1, "cpu", "auto", 2);
  EXPECT_EQ(noisy.adaptation.recipe.gamma_max, models::recipe_preset("heavy")->gamma_max);
  EXPECT_EQ(noisy.adaptation.kd_init, protocol::StudentInit::scratch);
}

TEST(PairedTTest, LeavesOutUndefinedScoresAndNeedsTwoPairs) {
  auto t = experiment::paired_t_test({2, NAN, 3, 4, 5, 6}, {1, 1, 1, 1, 1, 1});
  ASSERT_TRUE(t);
  EXPECT_EQ(t->n, 5);
  EXPECT_NEAR(t->p, 0.0132356, 1e-6);
  EXPECT_FALSE(experiment::paired_t_test({0.5}, {0.4}));
  EXPECT_FALSE(experiment::paired_t_test({0.5, NAN}, {0.4, 0.3}));
  auto same = experiment::paired_t_test({0.5, 0.6}, {0.5, 0.6});
  ASSERT_TRUE(same);
  EXPECT_EQ(same->p, 1.0);
}

std::vector<std::vector<std::string>> csv_rows(const fs::path& file, std::string& header) {
  std::ifstream in(file);
  std::getline(in, header);
  std::vector<std::vector<std::string>> rows;
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    if (!line.empty() && line.back() == ',') f.emplace_back();
    rows.push_back(f);
  }
  return rows;
}

bool is_png(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  char magic[8] = {};
  in.read(magic, 8);
  return in && std::string(magic + 1, 3) == "PNG" && fs::file_size(file) > 1000;
}

TEST(ExperimentCli, SmokeGridWritesEveryOutputAndResumes) {
  testing::ScratchDir dir;
  const auto data = dir / "data", out = dir / "out";
  auto gen = run_command(bin("fedda-sim").string() + " generate --profile smoke --seed 5 --out " + data.string());
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  const std::string command =
      bin("fedda-sim").string() + " experiment --data " + data.string() + " --profile smoke --out " + out.string();
  auto run = run_command(command);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  // Progress: cells done of all, elapsed and time left, the cell.
  EXPECT_NE(run.output.find("[1/171 cells | "), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("left] federated kd "), std::string::npos);

  // results.csv: every cell of both modes, two test subjects each (smoke: 4 subjects per clinic).
  std::string header;
  const auto rows = csv_rows(out / "results.csv", header);
  EXPECT_EQ(header, "source,target,fold,method,mode,subject,dsc,h95,avd,recall,f1");
  std::map<std::tuple<std::string, std::string, std::string, std::string, std::string>, std::set<std::string>> cells;
  for (const auto& r : rows) {
    ASSERT_EQ(r.size(), 11u);
    EXPECT_NE(r[0], r[1]);
    EXPECT_TRUE(r[4] == "federated" || r[4] == "centralized") << r[4];
    if (!r[6].empty()) {
      const double dsc = std::stod(r[6]);
      EXPECT_GE(dsc, 0.0);
      EXPECT_LE(dsc, 1.0);
    }
    cells[{r[4], r[0], r[1], r[2], r[3]}].insert(r[5]);
  }
  EXPECT_EQ(cells.size(), 2u * 6 * 2 * 7);  // modes x ordered pairs x folds x methods
  for (const auto& [cell, subjects] : cells) EXPECT_EQ(subjects.size(), 2u) << std::get<4>(cell);
  EXPECT_EQ(rows.size(), 2u * 6 * 2 * 7 * 2);

  // Federated cells ran on a consortium: the coordinator's log, the jobs' rounds at both sites, kits.
  EXPECT_TRUE(fs::exists(out / "federated/logs/coordinator.log"));
  EXPECT_TRUE(fs::exists(out / "federated/kits/coordinator"));
  const auto rounds = testing::read_text(out / "federated/jobs/kd-utrecht-singapore-f1/rounds.jsonl");
  EXPECT_NE(rounds.find("\"site\":\"utrecht\""), std::string::npos) << rounds;
  EXPECT_NE(rounds.find("\"site\":\"singapore\""), std::string::npos) << rounds;
  int otf_jobs = 0;  // on the fly: one job per test subject
  for (const auto& e : fs::directory_iterator(out / "federated/jobs")) {
    otf_jobs += e.path().filename().string().rfind("otf-ada-amsterdam-utrecht-f0-", 0) == 0;
  }
  EXPECT_EQ(otf_jobs, 2);

  // Tables: six pairs per mode, the KD-vs-ADA p-value column; the on-the-fly table.
  const auto t2 = testing::read_text(out / "table2.md"), t3 = testing::read_text(out / "table3.md");
  for (const char* pair : {"utrecht → singapore", "singapore → utrecht", "amsterdam → utrecht", "utrecht → amsterdam",
                           "singapore → amsterdam", "amsterdam → singapore"}) {
    EXPECT_NE(t2.find(pair), std::string::npos) << pair;
    EXPECT_NE(t3.find(pair), std::string::npos) << pair;
  }
  EXPECT_NE(t2.find("p (KD vs ADA)"), std::string::npos);
  EXPECT_NE(t2.find("## Federated against centralized"), std::string::npos);
  EXPECT_NE(t3.find("KD on the fly"), std::string::npos);

  // Plots and report.
  for (const char* png : {"dice-federated.png", "dice-centralized.png", "federated-vs-centralized.png",
                          "learning-curves.png", "test-curves.png"}) {
    EXPECT_TRUE(is_png(out / "plots" / png)) << png;
  }
  int overlays = 0;
  for (const auto& e : fs::directory_iterator(out / "plots")) {
    if (e.path().filename().string().rfind("overlay-", 0) == 0 && is_png(e.path())) ++overlays;
  }
  EXPECT_EQ(overlays, 2);
  const auto html = testing::read_text(out / "report.html");
  EXPECT_NE(html.find("<table>"), std::string::npos);
  EXPECT_NE(html.find("<img src=\"plots/dice-federated.png\""), std::string::npos);
  EXPECT_NE(html.find("Timings"), std::string::npos);
  EXPECT_TRUE(fs::exists(out / "report.md"));
  // The verdict: each of the paper's findings from this run, beside the paper's figure.
  const auto md = testing::read_text(out / "report.md");
  EXPECT_NE(md.find("## Verdict"), std::string::npos);
  // Smoke teachers (2 epochs of a 4-channel U-Net) learn nothing of their source: the verdict says
  // so instead of counting pairs (ExperimentReport.* checks a verdict with numbers).
  bool any_learned = false;
  for (const std::string clinic : {"amsterdam", "singapore", "utrecht"}) {
    const auto summary = nlohmann::json::parse(testing::read_text(out / "centralized/teachers" / clinic / "summary.json"));
    any_learned |= summary.at("learned").get<bool>();
  }
  if (any_learned) {
    EXPECT_NE(md.find("share of the L-bound → U-bound gap closed by KD"), std::string::npos) << md;
  } else {
    EXPECT_NE(md.find("None: no teacher learned its source"), std::string::npos) << md;
  }
  EXPECT_EQ(md.find("Plots incomplete"), std::string::npos) << md;
  // Learning curves on the test half: centralized per epoch (curve.csv's test_dsc).
  EXPECT_NE(testing::read_text(out / "centralized" / "utrecht-amsterdam" / "fold0" / "kd" / "curve.csv").find("test_dsc"),
            std::string::npos);

  // A rerun finds every cell done, trains nothing and writes the same results.
  const auto before = testing::read_text(out / "results.csv");
  auto again = run_command(command);
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("171 already done"), std::string::npos) << again.output;
  EXPECT_EQ(again.output.find("running "), std::string::npos) << again.output;
  EXPECT_EQ(testing::read_text(out / "results.csv"), before);

  // Another configuration in the same folder is refused, naming what differs.
  auto clash = run_command(command + " --seed 2");
  EXPECT_NE(clash.exit_code, 0);
  EXPECT_NE(clash.output.find("another seed"), std::string::npos) << clash.output;

  // Without the methods on the fly the Dice plots are still drawn (a column of no values used to
  // fail gnuplot's histogram and leave the report without plots).
  const auto subset = dir / "subset";
  auto partial = run_command(bin("fedda-sim").string() + " experiment --data " + data.string() + " --profile smoke --out " +
                             subset.string() + " --modes centralized --folds 0 --methods lbound,ubound,ada,kd,kd-from-ada");
  ASSERT_EQ(partial.exit_code, 0) << partial.output;
  EXPECT_TRUE(is_png(subset / "plots" / "dice-centralized.png"));
  EXPECT_EQ(testing::read_text(subset / "report.md").find("Plots incomplete"), std::string::npos)
      << testing::read_text(subset / "report.md");

  // Federated KD under secure aggregation: every pair's rounds ran through the masked sum.
  const auto secure = dir / "secure";
  auto masked = run_command(bin("fedda-sim").string() + " experiment --data " + data.string() + " --profile smoke --out " +
                            secure.string() + " --modes federated --folds 0 --methods kd --secure-aggregation");
  ASSERT_EQ(masked.exit_code, 0) << masked.output;
  const auto coordinator_log = testing::read_text(secure / "federated/logs/coordinator.log");
  EXPECT_NE(coordinator_log.find("job kd-utrecht-singapore-f0: round 1: secure aggregation among 2 sites"), std::string::npos)
      << coordinator_log;
  EXPECT_NE(coordinator_log.find("unmasking the sum of 2 sites"), std::string::npos);
  std::string secure_header;
  EXPECT_EQ(csv_rows(secure / "results.csv", secure_header).size(), 6u * 2);  // 6 pairs, 2 test subjects each
}

// lbound-aug and kd-noisy, in both modes: lbound-aug's teachers are their own cells, kd-noisy's
// federated jobs carry the heavy recipe to the sites, and the report sets both beside the paper's.
TEST(ExperimentCli, MethodsBeyondThePaperRunInBothModesAndTheirJobsCarryTheirRecipe) {
  testing::ScratchDir dir;
  const auto data = dir / "data", out = dir / "out";
  auto gen = run_command(bin("fedda-sim").string() + " generate --profile smoke --seed 5 --out " + data.string());
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  auto run = run_command(bin("fedda-sim").string() + " experiment --data " + data.string() + " --profile smoke --out " +
                         out.string() + " --folds 0 --methods lbound,kd,lbound-aug,kd-noisy");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  for (const std::string clinic : {"amsterdam", "singapore", "utrecht"}) {
    EXPECT_TRUE(fs::exists(out / "centralized/teachers-aug" / clinic / "teacher.pt")) << clinic;
  }
  std::string header;
  const auto rows = csv_rows(out / "results.csv", header);
  std::map<std::string, int> per_method_mode;
  for (const auto& r : rows) ++per_method_mode[r.at(3) + "/" + r.at(4)];
  for (const std::string m : {"lbound-aug", "kd-noisy", "lbound", "kd"}) {
    EXPECT_EQ((per_method_mode[m + "/federated"]), 6 * 2) << m;  // 6 pairs, 2 test subjects each
    EXPECT_EQ((per_method_mode[m + "/centralized"]), 6 * 2) << m;
  }
  // The noisy student's job file carries the heavy augmentation; the plain student's none.
  const auto noisy = testing::read_text(out / "federated/job-files/kd-noisy-utrecht-singapore-f0.yaml");
  EXPECT_NE(noisy.find("recipe: {"), std::string::npos) << noisy;
  EXPECT_NE(noisy.find("\"bias_field_probability\":0.5"), std::string::npos) << noisy;
  const auto plain = testing::read_text(out / "federated/job-files/kd-utrecht-singapore-f0.yaml");
  EXPECT_EQ(plain.find("recipe:"), std::string::npos) << plain;
  EXPECT_NE(testing::read_text(out / "table2.md").find("### Beyond the paper (centralized)"), std::string::npos);
}

// The report from a run's files: a source whose teacher never learned (its summary.json says so)
// is named in the Teachers table and its pairs leave the verdict; the others are counted.
TEST(ExperimentReport, PairsWhoseTeacherNeverLearnedLeaveTheVerdictAndTheRestAreCounted) {
  testing::ScratchDir dir;
  const auto out = dir / "run";
  const std::vector<std::string> clinics{"amsterdam", "singapore", "utrecht"};
  nlohmann::json config = {{"profile", "quick"}, {"seed", 1}, {"data", (dir / "data").string()}, {"clinics", clinics},
                           {"device", "cpu"}, {"budget", {{"temperature", 2.0}, {"teacher_draws", 3}}}};
  fs::create_directories(out);
  std::ofstream(out / "experiment.json") << config.dump(2);
  // Per pair, 4 test subjects: KD above L-bound everywhere but on singapore's pairs, where every
  // method scores (almost) nothing and L-bound is the highest.
  std::string csv = "source,target,fold,method,mode,subject,dsc,h95,avd,recall,f1\n";
  for (const auto& source : clinics) {
    for (const auto& target : clinics) {
      if (source == target) continue;
      const bool dead = source == "singapore";
      const std::map<std::string, double> dice =
          dead ? std::map<std::string, double>{{"lbound", 0.02}, {"ubound", 0.01}, {"ada", 0.0}, {"kd", 0.0}, {"kd-from-ada", 0.0}}
               : std::map<std::string, double>{{"lbound", 0.30}, {"ubound", 0.50}, {"ada", 0.35}, {"kd", 0.40}, {"kd-from-ada", 0.45}};
      for (const auto& [method, d] : dice) {
        for (int i = 0; i < 4; ++i) {
          csv += source + "," + target + ",0," + method + ",centralized,s" + std::to_string(i) + "," +
                 std::to_string(d + 0.01 * i * (method == "kd" ? 2 : 1)) + ",1,1,1,1\n";
        }
      }
    }
  }
  std::ofstream(out / "results.csv") << csv;
  const auto teacher = [&](const std::string& clinic, const nlohmann::json& summary) {
    fs::create_directories(out / "centralized/teachers" / clinic);
    std::ofstream(out / "centralized/teachers" / clinic / "summary.json") << summary.dump(2);
  };
  const auto draw = [](int n, double dice) {
    return nlohmann::json{{"draw", n}, {"seed", 1000 + n}, {"final_loss", 0.5 + n}, {"source_dice", dice}};
  };
  teacher("amsterdam", {{"learned", true}, {"source_dice", 0.51}, {"kept_draw", 1}, {"draws_allowed", 3},
                        {"draws", {draw(1, 0.51)}}});
  teacher("singapore", {{"learned", false}, {"source_dice", 0.02}, {"kept_draw", 2}, {"draws_allowed", 3},
                        {"draws", {draw(1, 0.0), draw(2, 0.02), draw(3, 0.01)}}});
  // NaN Dice is written as null: read as "–", not a crash.
  teacher("utrecht", {{"learned", true}, {"source_dice", 0.4}, {"kept_draw", 2}, {"draws_allowed", 3},
                      {"draws", {draw(1, NAN), draw(2, 0.4)}}});
  ASSERT_TRUE(experiment::write_experiment_report(out, dir / "data", "cpu"));
  const auto md = testing::read_text(out / "report.md");
  EXPECT_NE(md.find("| singapore | 3 (0.000, 0.020, 0.010) | 2 | 1002 | 2.500 | **no** |"), std::string::npos) << md;
  EXPECT_NE(md.find("| amsterdam | 1 (0.510) | 1 | 1001 | 1.500 | yes |"), std::string::npos) << md;
  EXPECT_NE(md.find("| utrecht | 2 (–, 0.400) | 2 | 1002 | 2.500 | yes |"), std::string::npos) << md;
  EXPECT_NE(md.find("up to 3 draws in all"), std::string::npos) << md;
  EXPECT_NE(md.find("No draw learned its source for: singapore."), std::string::npos) << md;
  EXPECT_NE(md.find("Over the 4 of 6 pairs whose teacher learned its source"), std::string::npos) << md;
  // Counted over the four pairs (with singapore's, L-bound above KD there, it would read 4 of 6).
  EXPECT_NE(md.find("| KD above L-bound (pairs) | 6 of 6 | 4 of 4 ("), std::string::npos) << md;
  EXPECT_NE(md.find("| KD above ADA (pairs) | 5 of 6 | 4 of 4 ("), std::string::npos) << md;
  // The tables still show singapore's pairs.
  EXPECT_NE(testing::read_text(out / "table2.md").find("singapore → amsterdam"), std::string::npos);
}

// A teacher whose Dice on its own training scans stays under kTeacherLearnedDice is trained again
// from another draw; one that never learns is named in the report and its pairs leave the
// verdict. Smoke teachers (2 epochs of a 4-channel U-Net) learn nothing, so every branch runs.
TEST(ExperimentCli, ATeacherThatLearnsNothingIsDrawnAgainAndItsPairsLeaveTheVerdict) {
  testing::ScratchDir dir;
  const auto data = dir / "data", out = dir / "out";
  auto gen = run_command(bin("fedda-sim").string() + " generate --profile smoke --seed 5 --out " + data.string());
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  const std::string command = bin("fedda-sim").string() + " experiment --data " + data.string() +
                              " --profile smoke --modes centralized --methods lbound --folds 0 --seed 3 --out " +
                              out.string();
  auto run = run_command(command + " --teacher-draws 2");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  std::set<std::string> failed;
  for (const std::string clinic : {"amsterdam", "singapore", "utrecht"}) {
    const auto teacher = out / "centralized" / "teachers" / clinic;
    const auto summary = nlohmann::json::parse(testing::read_text(teacher / "summary.json"));
    const auto& draws = summary.at("draws");
    ASSERT_GE(draws.size(), 1u) << clinic;
    ASSERT_LE(draws.size(), 2u) << clinic;
    // The kept draw is the best one (the last, unless none learned).
    double best = -1;
    for (const auto& d : draws) best = std::max(best, d.at("source_dice").get<double>());
    const auto kept = summary.at("kept_draw").get<std::size_t>();
    ASSERT_TRUE(kept >= 1 && kept <= draws.size()) << clinic;
    EXPECT_EQ(draws[kept - 1].at("source_dice").get<double>(), best) << clinic;
    EXPECT_EQ(summary.at("source_dice").get<double>(), best) << clinic;
    EXPECT_EQ(summary.at("learned").get<bool>(), best >= experiment::kTeacherLearnedDice) << clinic;
    EXPECT_FALSE(fs::exists(teacher / "teacher-best-draw.pt")) << clinic;
    EXPECT_EQ(draws[0].at("seed").get<std::uint64_t>(), 3u) << clinic;  // the first draw is the grid's seed
    // Another draw only after a teacher that learned nothing, and from another seed.
    EXPECT_EQ(draws.size() == 2, draws[0].at("source_dice").get<double>() < experiment::kTeacherLearnedDice) << clinic;
    const auto curve = testing::read_text(teacher / "curve.csv");
    if (draws.size() == 2) {
      EXPECT_NE(draws[1].at("seed"), draws[0].at("seed")) << clinic;
      EXPECT_NE(curve.find("discarded-draw-" + std::to_string(3 - kept) + ","), std::string::npos) << curve;
      EXPECT_NE(run.output.find("teacher " + clinic + " (draw 1): mean Dice"), std::string::npos) << run.output;
    }
    EXPECT_NE(curve.find("\nteacher,"), std::string::npos) << curve;
    if (!summary.at("learned").get<bool>()) failed.insert(clinic);
  }
  ASSERT_FALSE(failed.empty()) << "the smoke teachers were expected to learn nothing; this test needs one that does not";
  const auto md = testing::read_text(out / "report.md");
  EXPECT_NE(md.find("## Teachers"), std::string::npos) << md;
  for (const auto& clinic : failed) {
    const auto row = md.find("| " + clinic + " | 2 (");
    ASSERT_NE(row, std::string::npos) << md;
    EXPECT_NE(md.substr(row, md.find('\n', row) - row).find("**no**"), std::string::npos) << md;
  }
  if (failed.size() == 3) {
    EXPECT_NE(md.find("None: no teacher learned its source"), std::string::npos) << md;
  } else {
    const auto counted = std::to_string(6 - 2 * failed.size());
    EXPECT_NE(md.find("Over the " + counted + " of 6 pairs whose teacher learned its source"), std::string::npos) << md;
  }
  EXPECT_EQ(md.find("Plots incomplete"), std::string::npos) << md;  // a grid of L-bound alone draws its plots

  // Another number of draws is another budget. A run from before teacher_draws did one draw: it
  // resumes with one, not with more...
  auto clash = run_command(command + " --teacher-draws 3");
  EXPECT_NE(clash.exit_code, 0);
  EXPECT_NE(clash.output.find("another budget"), std::string::npos) << clash.output;
  auto config = nlohmann::json::parse(testing::read_text(out / "experiment.json"));
  config["budget"].erase("teacher_draws");
  // ... and one from before the recipes' weight_average key, without averaging.
  for (const char* recipe : {"teacher_recipe", "adapt_recipe", "noisy_augmentation"}) {
    ASSERT_EQ(config["budget"][recipe].erase("weight_average"), 1u) << recipe;
  }
  std::ofstream(out / "experiment.json") << config.dump(2);
  clash = run_command(command + " --teacher-draws 2");
  EXPECT_NE(clash.exit_code, 0);
  EXPECT_NE(clash.output.find("another budget"), std::string::npos) << clash.output;
  auto resumed = run_command(command + " --teacher-draws 1");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("9 already done"), std::string::npos) << resumed.output;
}

TEST(ExperimentCli, BadArgumentsAreNamed) {
  testing::ScratchDir dir;
  auto r = run_command(bin("fedda-sim").string() + " experiment --data " + (dir / "missing").string() + " --out " +
                       (dir / "out").string() + " --profile smoke");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("missing"), std::string::npos) << r.output;
  r = run_command(bin("fedda-sim").string() + " experiment --data " + dir.path().string() + " --out " +
                  (dir / "out").string() + " --methods kd,magic");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("magic"), std::string::npos) << r.output;
  // fedda-sim centralized: a recipe the grid cannot train, and an unknown key, are named.
  r = run_command(bin("fedda-sim").string() + " centralized --data " + dir.path().string() + " --out " +
                  (dir / "out").string() + " --source a --target a --method lbound --profile paper-cpu " +
                  "--recipe-set patch_size=100");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("patch_size 100 is not a multiple of the U-Net's stride 16"), std::string::npos) << r.output;
  r = run_command(bin("fedda-sim").string() + " centralized --data " + dir.path().string() + " --out " +
                  (dir / "out").string() + " --source a --target a --method lbound --recipe-set gama_probability=1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("unknown recipe key 'gama_probability'"), std::string::npos) << r.output;
  r = run_command(bin("fedda-sim").string() + " centralized --data " + dir.path().string() + " --out " +
                  (dir / "out").string() + " --source a --target a --method lbound --recipe nnunet2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("unknown recipe preset 'nnunet2'"), std::string::npos) << r.output;
  r = run_command(bin("fedda-sim").string() + " experiment --data " + dir.path().string() + " --out " +
                  (dir / "out").string() + " --profile huge");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("standard"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace fedda
