// Runs the real fedda-sim and fedda-agent binaries: train a tiny model centrally, then
// segment a scan with it, as a site administrator would.
#include <fstream>

#include <gtest/gtest.h>

#include "fedda/common/files.h"
#include "fedda/imaging/nifti_io.h"
#include "support/test_support.h"

namespace fedda {
namespace {

using testing::bin;
using testing::run_command;

const char* kTiny = " --teacher-epochs 1 --epochs 1 --steps 2 --batch 2 --width 4 --depth 2 --grid 64 --spacing 3 --threads 2";

TEST(FeddaAgentCli, CentralizedCellThenSegment) {
  testing::ScratchDir dir;
  const auto data = dir / "data";
  auto gen = run_command(bin("fedda-sim").string() + " generate --profile smoke --subjects 2 --clinics utrecht,amsterdam --out " +
                         data.string());
  ASSERT_EQ(gen.exit_code, 0) << gen.output;

  auto cell = run_command(bin("fedda-sim").string() + " centralized --data " + data.string() +
                          " --source utrecht --target amsterdam --method kd --fold 1 --out " + (dir / "cell").string() + kTiny);
  ASSERT_EQ(cell.exit_code, 0) << cell.output;
  const auto csv = files::read_all(dir / "cell/results.csv");
  ASSERT_TRUE(csv);
  EXPECT_EQ(csv->rfind("source,target,fold,method,mode,subject,dsc,h95,avd,recall,f1\n", 0), 0u);
  // Fold 1 tests on the first half of amsterdam's two subjects: subject 100.
  EXPECT_NE(csv->find("utrecht,amsterdam,1,kd,centralized,100,"), std::string::npos) << *csv;
  EXPECT_TRUE(std::filesystem::exists(dir / "cell/teacher.pt"));
  EXPECT_TRUE(std::filesystem::exists(dir / "cell/curve.csv"));

  const auto flair = data / "amsterdam/101/pre/FLAIR.nii.gz";
  auto seg = run_command(bin("fedda-agent").string() + " segment --model " + (dir / "cell/model.pt").string() + " --flair " +
                         flair.string() + " --t1 " + (data / "amsterdam/101/pre/T1.nii.gz").string() + " --out " +
                         (dir / "seg.nii.gz").string());
  ASSERT_EQ(seg.exit_code, 0) << seg.output;
  auto out = imaging::read_label_map(dir / "seg.nii.gz");
  ASSERT_TRUE(out) << out.error().message;
  auto in = imaging::read_geometry(flair);
  ASSERT_TRUE(in);
  EXPECT_TRUE(imaging::same_geometry(out->geometry, *in));
}

TEST(FeddaAgentCli, SegmentRefusesABadModelAndMismatchedScans) {
  testing::ScratchDir dir;
  std::ofstream(dir / "bad.pt") << "no model here";
  imaging::Image a(testing::make_geometry(8, 8, 4)), b(testing::make_geometry(8, 8, 5));
  ASSERT_TRUE(imaging::write_image(dir / "f.nii.gz", a));
  ASSERT_TRUE(imaging::write_image(dir / "t.nii.gz", b));
  auto r = run_command(bin("fedda-agent").string() + " segment --model " + (dir / "bad.pt").string() + " --flair " +
                       (dir / "f.nii.gz").string() + " --t1 " + (dir / "t.nii.gz").string() + " --out " +
                       (dir / "o.nii.gz").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("bad.pt"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "o.nii.gz"));
  auto help = run_command(bin("fedda-agent").string() + " segment --help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.output.find("geometry"), std::string::npos);
}

}  // namespace
}  // namespace fedda
