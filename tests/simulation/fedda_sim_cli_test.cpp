// Runs the real fedda-sim binary, as a user would.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "fedda/imaging/metrics.h"
#include "fedda/imaging/nifti_io.h"
#include "support/process.h"
#include "support/test_support.h"

namespace fedda {
namespace {

using testing::bin;
using testing::run_command;

std::string sim() { return bin("fedda-sim").string(); }

TEST(FeddaSimCli, EveryCommandAnswersItsHelpAndAWordThatIsNoCommandIsNamed) {
  const std::vector<std::string> commands = {"evaluate", "generate", "preview", "threshold-baseline", "centralized",
                                             "recipe", "consortium", "experiment"};
  auto top = run_command(sim() + " --help");
  EXPECT_EQ(top.exit_code, 0);
  for (const auto& cmd : commands) {
    EXPECT_NE(top.output.find("\n  " + cmd + " "), std::string::npos) << cmd << " not listed:\n" << top.output;
    auto r = run_command(sim() + " " + cmd + " --help");
    EXPECT_EQ(r.exit_code, 0) << cmd << ": " << r.output;
    EXPECT_NE(r.output.find("Usage: "), std::string::npos) << cmd;
    EXPECT_NE(r.output.find(" " + cmd + " [OPTIONS]"), std::string::npos) << cmd << ": " << r.output;
  }
  // A misspelt command is named, with the commands there are; none at all says one is needed.
  auto wrong = run_command(sim() + " --log-level warn genrate --profile smoke");
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_NE(wrong.output.find("fedda-sim: unknown command 'genrate' (evaluate, generate, preview, threshold-baseline"),
            std::string::npos) << wrong.output;
  auto none = run_command(sim());
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.output.find("A subcommand is required"), std::string::npos) << none.output;
  EXPECT_EQ(none.output.find("unknown command"), std::string::npos) << none.output;
}

// A script tells a usage error from a failure by its exit code: 64 (sysexits' EX_USAGE) from every
// executable, whatever CLI11 names the mistake; --help and --version are not errors.
TEST(FeddaSimCli, EveryExecutableExitsWithEX_USAGEOnAUsageErrorOnly) {
  const std::vector<std::pair<std::string, std::string>> tools = {
      {"fedda-sim", "generate"}, {"fedda-agent", "run"}, {"fedda-coordinator", "serve"}, {"fedda-admin", "provision"}};
  for (const auto& [tool, command] : tools) {
    const auto exe = bin(tool).string();
    EXPECT_EQ(run_command(exe + " --help").exit_code, 0) << tool;
    auto version = run_command(exe + " --version");
    EXPECT_EQ(version.exit_code, 0) << tool << ": " << version.output;
    EXPECT_NE(version.output.find(tool + " "), std::string::npos) << version.output;
    for (const auto& args : {std::string(), std::string(" no-such-command"), std::string(" --no-such-option"),
                             " " + command + " --no-such-option", " --log-level loud " + command}) {
      auto r = run_command(exe + args);
      EXPECT_EQ(r.exit_code, 64) << tool << args << ": " << r.output;
    }
  }
  // A failure that is not about the command line keeps its own code.
  auto missing = run_command(sim() + " evaluate --truth /nonexistent/a.nii.gz --pred /nonexistent/b.nii.gz");
  EXPECT_NE(missing.exit_code, 0) << missing.output;
  EXPECT_NE(missing.exit_code, 64) << missing.output;
}

TEST(FeddaSimCli, GenerateEvaluateAndPreviewEndToEnd) {
  testing::ScratchDir dir;
  auto gen = run_command(sim() + " generate --profile smoke --subjects 1 --clinics amsterdam --seed 9 --out " +
                         (dir / "data").string());
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  const auto truth = dir / "data/amsterdam/100/wmh.nii.gz";
  ASSERT_TRUE(std::filesystem::exists(truth)) << gen.output;

  // A prediction: the truth with one slice of lesions erased.
  auto labels = imaging::read_label_map(truth);
  ASSERT_TRUE(labels);
  imaging::LabelMap pred = *labels;
  const auto& n = pred.geometry.size;
  std::size_t best_z = 0, best = 0;
  for (std::size_t z = 0; z < n[2]; ++z) {
    std::size_t c = 0;
    for (std::size_t i = 0; i < n[0] * n[1]; ++i) c += pred.voxels[z * n[0] * n[1] + i] == 1;
    if (c > best) {
      best = c;
      best_z = z;
    }
  }
  for (std::size_t i = 0; i < n[0] * n[1]; ++i) pred.voxels[best_z * n[0] * n[1] + i] = 0;
  for (auto& v : pred.voxels) v = v == 1;
  ASSERT_TRUE(imaging::write_label_map(dir / "pred.nii.gz", pred));

  // stdout only: the JSON object is the whole of it (run_command merges stderr otherwise).
  auto eval = run_command("(" + sim() + " evaluate --json --truth " + truth.string() + " --pred " +
                          (dir / "pred.nii.gz").string() + " 2>/dev/null)");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  const auto j = nlohmann::json::parse(eval.output);
  const auto expected = imaging::evaluate_case(*labels, pred);
  ASSERT_TRUE(expected);
  EXPECT_NEAR(j["dsc"].get<double>(), expected->dsc, 1e-9);
  EXPECT_LT(j["dsc"].get<double>(), 1.0);
  EXPECT_NEAR(j["recall"].get<double>(), expected->recall, 1e-9);
  EXPECT_NEAR(j["f1"].get<double>(), expected->f1, 1e-9);
  EXPECT_NEAR(j["avd"].get<double>(), expected->avd, 1e-9);

  auto preview = run_command(sim() + " preview --data " + (dir / "data").string() + " --out " + (dir / "p.png").string());
  ASSERT_EQ(preview.exit_code, 0) << preview.output;
  EXPECT_GT(std::filesystem::file_size(dir / "p.png"), 1000u);
}

// A local consortium whose clinics were written in different layouts: each agent reads its own
// folder through the site's subject index (utrecht in the WMH layout, amsterdam as DICOM series).
TEST(FeddaSimCli, AConsortiumOfClinicsInDifferentLayoutsRunsAJob) {
  testing::ScratchDir dir;
  const auto data = dir / "data";
  auto gen = testing::run_command(sim() + " generate --profile smoke --subjects 2 --clinics utrecht --out " + data.string());
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  gen = testing::run_command(sim() + " generate --profile smoke --subjects 2 --clinics amsterdam --layout dicom --out " + data.string());
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  std::ofstream(dir / "teacher.yaml") << "id: teacher-small\ntype: teacher\nsource: utrecht\nsites: [utrecht]\n"
                                         "evaluation_sites: [amsterdam]\nfold: 0\nrounds: 1\nlocal_steps: 2\nbatch_size: 4\n"
                                         "min_sites: 1\nround_deadline_s: 300\nseed: 1\n"
                                         "model:\n  width: 4\n  depth: 2\n  grid_size: 32\n  grid_spacing: 6\n";
  auto run = testing::run_command(sim() + " consortium --data " + data.string() + " --job " + (dir / "teacher.yaml").string() +
                                  " --out " + (dir / "out").string() + " --threads 1");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(testing::read_text(dir / "out" / "sites" / "amsterdam.yaml").find("data_layout: dicom"), std::string::npos);
  EXPECT_NE(testing::read_text(dir / "out" / "sites" / "utrecht.yaml").find("data_layout: wmh"), std::string::npos);
  // amsterdam scored the teacher on its DICOM subjects: its rows are in the results.
  const auto results = testing::read_text(dir / "out" / "results.csv");
  EXPECT_NE(results.find("utrecht,amsterdam,0,"), std::string::npos) << results;
}

TEST(FeddaSimCli, BadInputGivesNonZeroExitAndNamesTheFile) {
  testing::ScratchDir dir;
  std::ofstream(dir / "junk.nii.gz") << "not a nifti";
  imaging::LabelMap ok(testing::make_geometry(4, 4, 4));
  ASSERT_TRUE(imaging::write_label_map(dir / "ok.nii.gz", ok));
  auto r = run_command(sim() + " evaluate --json --truth " + (dir / "ok.nii.gz").string() + " --pred " +
                       (dir / "junk.nii.gz").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("junk.nii.gz"), std::string::npos) << r.output;

  auto bad_profile = run_command(sim() + " generate --profile huge --out " + (dir / "x").string());
  EXPECT_NE(bad_profile.exit_code, 0);
  EXPECT_NE(bad_profile.output.find("smoke"), std::string::npos) << bad_profile.output;

  auto both = run_command(sim() + " evaluate --truth a --data b");
  EXPECT_NE(both.exit_code, 0);

  auto level = run_command(sim() + " --log-level loud evaluate --truth a --pred b");
  EXPECT_NE(level.exit_code, 0);
  EXPECT_NE(level.output.find("loud"), std::string::npos) << level.output;
}

}  // namespace
}  // namespace fedda
