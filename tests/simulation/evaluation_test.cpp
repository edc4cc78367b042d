#include "fedda/simulation/evaluation.h"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "fedda/imaging/nifti_io.h"
#include "support/test_support.h"

namespace fedda::simulation {
namespace {

using imaging::LabelMap;

LabelMap cube_labels(std::size_t lo, std::size_t hi) {
  LabelMap m(testing::make_geometry(10, 10, 4, {1, 1, 3}));
  for (std::size_t z = 1; z < 3; ++z)
    for (std::size_t y = lo; y <= hi; ++y)
      for (std::size_t x = lo; x <= hi; ++x) m.at(x, y, z) = imaging::kWmh;
  return m;
}

void write_subject(const std::filesystem::path& root, const std::string& clinic, const std::string& subject,
                   const LabelMap& labels) {
  const auto dir = root / clinic / subject;
  imaging::Image flair(labels.geometry, 1.0f);
  ASSERT_TRUE(imaging::write_image(dir / "pre" / "FLAIR.nii.gz", flair));
  ASSERT_TRUE(imaging::write_image(dir / "pre" / "T1.nii.gz", flair));
  ASSERT_TRUE(imaging::write_label_map(dir / "wmh.nii.gz", labels));
}

TEST(Evaluation, JsonHasTheFiveKeysAndNullForUndefined) {
  imaging::CaseMetrics m{0.5, std::numeric_limits<double>::quiet_NaN(), 12.5, 1.0, 0.75};
  const auto j = nlohmann::json::parse(metrics_json(m));
  EXPECT_EQ(j.size(), 5u);
  EXPECT_DOUBLE_EQ(j["dsc"].get<double>(), 0.5);
  EXPECT_TRUE(j["h95"].is_null());
  EXPECT_DOUBLE_EQ(j["avd"].get<double>(), 12.5);
  EXPECT_DOUBLE_EQ(j["recall"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(j["f1"].get<double>(), 0.75);
}

TEST(Evaluation, FolderScoresEverySubjectAndReportsMissingOnes) {
  testing::ScratchDir data, preds;
  write_subject(data.path(), "utrecht", "0", cube_labels(2, 5));
  write_subject(data.path(), "utrecht", "1", cube_labels(3, 6));
  write_subject(data.path(), "singapore", "50", cube_labels(2, 5));
  ASSERT_TRUE(imaging::write_label_map(preds / "utrecht/0/result.nii.gz", cube_labels(2, 5)));
  ASSERT_TRUE(imaging::write_label_map(preds / "utrecht/1.nii.gz", cube_labels(4, 6)));

  auto report = evaluate_folder(data.path(), preds.path());
  ASSERT_TRUE(report) << report.error().message;
  ASSERT_EQ(report->cases.size(), 2u);
  EXPECT_DOUBLE_EQ(report->cases[0].metrics.dsc, 1.0);
  // 4x4 truth vs 3x3 prediction inside it, 2 slices: 2*18/(32+18)
  EXPECT_NEAR(report->cases[1].metrics.dsc, 36.0 / 50.0, 1e-12);
  ASSERT_EQ(report->problems.size(), 1u);
  EXPECT_NE(report->problems[0].find("singapore/50"), std::string::npos);

  const std::string csv = evaluation_csv(*report);
  EXPECT_EQ(csv.rfind("clinic,subject,dsc,h95,avd,recall,f1\n", 0), 0u);
  EXPECT_NE(csv.find("utrecht,0,1,0,0,1,1\n"), std::string::npos) << csv;
  EXPECT_NE(csv.find("utrecht,mean,0.86,"), std::string::npos) << csv;
  EXPECT_NE(csv.find("all,mean,0.86,"), std::string::npos) << csv;
}

TEST(Evaluation, PredictionOnAnotherGridIsRefusedUnlessAllowed) {
  testing::ScratchDir dir;
  LabelMap truth = cube_labels(2, 5);
  LabelMap shifted = truth;
  shifted.geometry.origin = {5, 0, 0};
  ASSERT_TRUE(imaging::write_label_map(dir / "t.nii.gz", truth));
  ASSERT_TRUE(imaging::write_label_map(dir / "p.nii.gz", shifted));
  auto refused = evaluate_files(dir / "t.nii.gz", dir / "p.nii.gz");
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("p.nii.gz"), std::string::npos);
  EXPECT_NE(refused.error().message.find("--allow-geometry-mismatch"), std::string::npos);
  EvaluateOptions allow;
  allow.allow_geometry_mismatch = true;
  auto scored = evaluate_files(dir / "t.nii.gz", dir / "p.nii.gz", allow);
  ASSERT_TRUE(scored) << scored.error().message;
  EXPECT_DOUBLE_EQ(scored->dsc, 1.0);
}

TEST(Evaluation, MissingDataFolderIsAnError) {
  testing::ScratchDir preds;
  auto r = evaluate_folder("/nonexistent/data", preds.path());
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("/nonexistent/data"), std::string::npos);
}

}  // namespace
}  // namespace fedda::simulation
