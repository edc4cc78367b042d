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

  // The same subject as DICOM series straight from the scanner: the same segmentation, in the
  // same place, but for DICOM's 16-bit storage of the intensities.
  auto dicom = run_command(bin("fedda-sim").string() + " generate --profile smoke --subjects 2 --clinics amsterdam --layout dicom --out " +
                           (dir / "dicom").string());
  ASSERT_EQ(dicom.exit_code, 0) << dicom.output;
  seg = run_command(bin("fedda-agent").string() + " segment --model " + (dir / "cell/model.pt").string() + " --dicom " +
                    (dir / "dicom/amsterdam/101").string() + " --out " + (dir / "seg-dicom.nii.gz").string());
  ASSERT_EQ(seg.exit_code, 0) << seg.output;
  auto from_dicom = imaging::read_label_map(dir / "seg-dicom.nii.gz");
  ASSERT_TRUE(from_dicom) << from_dicom.error().message;
  EXPECT_TRUE(imaging::same_geometry(from_dicom->geometry, *in, 1e-4)) << imaging::geometry_difference(from_dicom->geometry, *in, 1e-4);
  std::size_t differ = 0;
  for (std::size_t i = 0; i < out->voxels.size(); ++i) differ += out->voxels[i] != from_dicom->voxels[i];
  EXPECT_LE(differ, out->voxels.size() / 1000) << differ << " voxels differ";
  auto none = run_command(bin("fedda-agent").string() + " segment --model " + (dir / "cell/model.pt").string() + " --dicom " +
                          (dir / "dicom/amsterdam").string() + " --out " + (dir / "seg-two.nii.gz").string());
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.output.find("2 subjects (PatientIDs) found; --dicom takes one subject's folder"), std::string::npos) << none.output;
}

// Sites whose scans are a BIDS dataset, a datalist and DICOM series, as fedda-sim writes them:
// check lists every subject, names what it leaves out, and still passes.
TEST(FeddaAgentCli, CheckReadsBidsDatalistAndDicomSitesAndNamesWhatItLeavesOut) {
  testing::ScratchDir dir;
  for (const std::string layout : {"bids", "datalist"}) {
    auto gen = run_command(bin("fedda-sim").string() + " generate --profile smoke --subjects 2 --clinics amsterdam --layout " +
                           layout + " --out " + (dir / layout).string());
    ASSERT_EQ(gen.exit_code, 0) << gen.output;
    EXPECT_FALSE(std::filesystem::exists(dir / layout / ".wmh-staging"));
  }
  const auto root = dir / "bids" / "amsterdam";
  ASSERT_TRUE(std::filesystem::exists(root / "dataset_description.json"));
  std::ofstream(root / "sub-100" / "anat" / "sub-100_T2w.nii.gz") << "";  // not used: named
  std::ofstream(dir / "bids.yaml") << "site_id: amsterdam\ncoordinator: tcp://127.0.0.1:1\ndata: bids/amsterdam\n"
                                      "data_layout: bids\nbids_labels: wmh\ncache_dir: cache-bids\n";
  auto check = run_command(bin("fedda-agent").string() + " check --config " + (dir / "bids.yaml").string());
  EXPECT_EQ(check.exit_code, 0) << check.output;
  EXPECT_NE(check.output.find("(bids layout)"), std::string::npos) << check.output;
  EXPECT_NE(check.output.find("subject 100: " + (root / "sub-100/anat/sub-100_FLAIR.nii.gz").string()), std::string::npos)
      << check.output;
  EXPECT_NE(check.output.find("labels " + (root / "derivatives/wmh/sub-100/anat/sub-100_desc-WMH_mask.nii.gz").string()),
            std::string::npos)
      << check.output;
  EXPECT_NE(check.output.find("ignored: " + (root / "sub-100/anat/sub-100_T2w.nii.gz").string() + ": suffix T2w"),
            std::string::npos)
      << check.output;
  EXPECT_NE(check.output.find("2 of 2 subjects usable"), std::string::npos) << check.output;

  // Its T1w gone, subject 101 is skipped by name and the site still has one usable subject.
  std::filesystem::remove(root / "sub-101" / "anat" / "sub-101_T1w.nii.gz");
  check = run_command(bin("fedda-agent").string() + " check --config " + (dir / "bids.yaml").string());
  EXPECT_NE(check.output.find("subject 101 skipped: no T1w image"), std::string::npos) << check.output;
  EXPECT_NE(check.output.find("1 of 1 subjects usable"), std::string::npos) << check.output;

  std::ofstream(dir / "datalist.yaml") << "site_id: amsterdam\ncoordinator: tcp://127.0.0.1:1\n"
                                          "data: datalist/amsterdam/dataset.json\ndata_layout: datalist\ncache_dir: cache-dl\n";
  check = run_command(bin("fedda-agent").string() + " check --config " + (dir / "datalist.yaml").string());
  EXPECT_EQ(check.exit_code, 0) << check.output;
  EXPECT_NE(check.output.find("subject 100: " + (dir / "datalist/amsterdam/imagesTr/100_0000.nii.gz").string()),
            std::string::npos)
      << check.output;
  EXPECT_NE(check.output.find("2 of 2 subjects usable"), std::string::npos) << check.output;

  // DICOM series: checked, converted once into the cache, labels from NIfTI.
  auto gen = run_command(bin("fedda-sim").string() + " generate --profile smoke --subjects 2 --clinics amsterdam --layout dicom --out " +
                         (dir / "dicom").string());
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  std::ofstream(dir / "dicom.yaml") << "site_id: amsterdam\ncoordinator: tcp://127.0.0.1:1\ndata: dicom/amsterdam\n"
                                       "data_layout: dicom\ndicom_labels: dicom/amsterdam/labels\ncache_dir: cache-dicom\n";
  check = run_command(bin("fedda-agent").string() + " check --config " + (dir / "dicom.yaml").string());
  EXPECT_EQ(check.exit_code, 0) << check.output;
  EXPECT_NE(check.output.find("(dicom layout)"), std::string::npos) << check.output;
  EXPECT_NE(check.output.find("subject 100: " + (dir / "cache-dicom/dicom/100/FLAIR.nii.gz").string()), std::string::npos)
      << check.output;
  EXPECT_NE(check.output.find("2 of 2 subjects usable"), std::string::npos) << check.output;

  std::ofstream(dir / "wrong.yaml") << "site_id: amsterdam\ncoordinator: tcp://127.0.0.1:1\ndata: x\ndata_layout: pacs\n";
  check = run_command(bin("fedda-agent").string() + " check --config " + (dir / "wrong.yaml").string());
  EXPECT_NE(check.exit_code, 0);
  EXPECT_NE(check.output.find("data_layout 'pacs' (choose wmh, bids, datalist or dicom)"), std::string::npos) << check.output;
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
