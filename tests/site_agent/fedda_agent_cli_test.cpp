// Runs the real fedda-sim and fedda-agent binaries: train a tiny model centrally, then
// segment a scan with it, as a site administrator would.
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include "fedda/common/files.h"
#include "fedda/common/protocol.h"
#include "fedda/imaging/dicom_results.h"
#include "fedda/imaging/metrics.h"
#include "fedda/imaging/nifti_io.h"
#include "support/orthanc.h"
#include "support/process.h"
#include "support/test_support.h"

namespace fedda {
namespace {

namespace fs = std::filesystem;
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
  // As a radiologist's viewer reads it: a Segmentation and a measurement report beside the NIfTI,
  // the lesion load they state the NIfTI's, both clean under dciodvfy.
  seg = run_command(bin("fedda-agent").string() + " segment --model " + (dir / "cell/model.pt").string() + " --dicom " +
                    (dir / "dicom/amsterdam/101").string() + " --out " + (dir / "seg-dicom.nii.gz").string() +
                    " --dicom-seg " + (dir / "seg.dcm").string() + " --dicom-sr " + (dir / "sr.dcm").string() +
                    " --dicom-preview " + (dir / "seg-over-flair.png").string() + " --json");
  ASSERT_EQ(seg.exit_code, 0) << seg.output;
  const auto json_start = seg.output.find("{\n");
  ASSERT_NE(json_start, std::string::npos) << seg.output;
  const auto report = nlohmann::json::parse(seg.output.substr(json_start));
  const auto lesions = imaging::summarize_lesions(*from_dicom);
  EXPECT_EQ(report["wmh_voxels"].get<std::size_t>(), lesions.voxels);
  EXPECT_EQ(report["lesions"].get<unsigned>(), lesions.count);
  EXPECT_NEAR(report["wmh_volume_ml"].get<double>(), lesions.volume_ml, 1e-9);
  std::size_t slices = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir / "dicom/amsterdam/101/FLAIR")) slices += e.is_regular_file();
  EXPECT_EQ(report["dicom_seg"]["frames"].get<std::size_t>(), slices);
  // The Segmentation read back and drawn over its FLAIR slices (kept as the test's artefact; docs/ has one).
  EXPECT_TRUE(fs::exists(dir / "seg-over-flair.png"));
  EXPECT_EQ(report["dicom_preview"]["segmented_pixels"].get<std::size_t>() > 0, lesions.voxels > 0) << report.dump();
  const auto artefacts = bin("").parent_path().parent_path() / "artefacts";
  fs::create_directories(artefacts);
  fs::copy_file(dir / "seg-over-flair.png", artefacts / "seg-over-flair.png", fs::copy_options::overwrite_existing);
  for (const auto* object : {"seg.dcm", "sr.dcm"}) {
    auto verify = run_command("dciodvfy " + (dir / object).string());
    EXPECT_EQ(verify.output.find("Error"), std::string::npos) << object << ":\n" << verify.output;
    EXPECT_NE(verify.exit_code, 127) << "dciodvfy (dicom3tools) is not installed";
  }
  auto plain = run_command(bin("fedda-agent").string() + " segment --model " + (dir / "cell/model.pt").string() + " --flair " +
                           flair.string() + " --t1 " + (data / "amsterdam/101/pre/T1.nii.gz").string() + " --out " +
                           (dir / "seg-plain.nii.gz").string() + " --dicom-seg " + (dir / "no.dcm").string());
  EXPECT_NE(plain.exit_code, 0);
  EXPECT_NE(plain.output.find("--dicom-seg requires --dicom"), std::string::npos) << plain.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "no.dcm"));
  auto none = run_command(bin("fedda-agent").string() + " segment --model " + (dir / "cell/model.pt").string() + " --dicom " +
                          (dir / "dicom/amsterdam").string() + " --out " + (dir / "seg-two.nii.gz").string());
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.output.find("2 subjects (PatientIDs) found; --dicom takes one subject's folder"), std::string::npos) << none.output;

  // A whole DICOM site at once, one subject's FLAIR broken: named and skipped, the other written.
  fs::remove(dir / "dicom/amsterdam/100/FLAIR/IM0003.dcm");
  std::ofstream(dir / "all.yaml") << "site_id: amsterdam\ncoordinator: tcp://127.0.0.1:1\ndata: " << (dir / "dicom/amsterdam").string()
                                  << "\ndata_layout: dicom\ncache_dir: " << (dir / "cache-all").string() << "\n";
  auto all = run_command(bin("fedda-agent").string() + " segment --model " + (dir / "cell/model.pt").string() + " --all --config " +
                         (dir / "all.yaml").string() + " --with-dicom --out " + (dir / "all").string());
  EXPECT_EQ(all.exit_code, 0) << all.output;  // the broken subject is left out by the layout itself
  EXPECT_NE(all.output.find("subject 100 skipped: series 3 'AX T2 FLAIR'"), std::string::npos) << all.output;
  EXPECT_NE(all.output.find("1 of 1 subjects segmented"), std::string::npos) << all.output;
  EXPECT_TRUE(fs::exists(dir / "all/101.nii.gz") && fs::exists(dir / "all/101.seg.dcm") && fs::exists(dir / "all/101.sr.dcm"));
  const auto loads = files::read_all(dir / "all/lesions.csv");
  ASSERT_TRUE(loads);
  EXPECT_EQ(loads->rfind("subject,wmh_volume_ml,lesions,wmh_voxels,segmentation,dicom_seg,dicom_sr\n101,", 0), 0u) << *loads;

  // The same site in its PACS (a real Orthanc on loopback): results go back there only when the
  // site's policy says write_back: true.
  testing::Orthanc orthanc(dir / "orthanc");
  ASSERT_TRUE(orthanc.up()) << testing::read_text(orthanc.log());
  ASSERT_GT(orthanc.upload(dir / "dicom/amsterdam/101"), 0);
  ASSERT_TRUE(files::write_secret(dir / "pacs.credentials", std::string(testing::Orthanc::kUser) + ":" + testing::Orthanc::kPassword + "\n"));
  const auto pacs_site = [&](bool write_back) {
    const auto path = dir / (write_back ? "pacs-back.yaml" : "pacs.yaml");
    std::ofstream(path) << "site_id: amsterdam\ncoordinator: tcp://127.0.0.1:1\ndata_layout: pacs\npacs:\n  dicomweb: "
                        << orthanc.dicomweb() << "\n  credentials_file: pacs.credentials\ncache_dir: " << (dir / "cache-pacs").string()
                        << "\npolicy: {write_back: " << (write_back ? "true" : "false") << "}\n";
    return path.string();
  };
  const auto modalities = [&]() {
    auto c = orthanc.client();
    std::multiset<std::string> found;
    auto studies = c.Get("/dicom-web/studies?PatientID=101");
    if (!studies) return found;
    for (const auto& study : nlohmann::json::parse(studies->body)) {
      auto series = c.Get("/dicom-web/studies/" + study["0020000D"]["Value"][0].get<std::string>() + "/series");
      for (const auto& s : nlohmann::json::parse(series->body)) found.insert(s["00080060"]["Value"][0].get<std::string>());
    }
    return found;
  };
  auto kept = run_command(bin("fedda-agent").string() + " segment --model " + (dir / "cell/model.pt").string() + " --all --config " +
                          pacs_site(false) + " --with-dicom --out " + (dir / "pacs-out").string());
  ASSERT_EQ(kept.exit_code, 0) << kept.output;
  EXPECT_NE(kept.output.find("the site's policy has no write_back: true"), std::string::npos) << kept.output;
  EXPECT_NE(kept.output.find("0 objects stored in the PACS"), std::string::npos) << kept.output;
  EXPECT_EQ(modalities(), (std::multiset<std::string>{"MR", "MR"}));
  auto back = run_command(bin("fedda-agent").string() + " segment --model " + (dir / "cell/model.pt").string() + " --all --config " +
                          pacs_site(true) + " --with-dicom --out " + (dir / "pacs-out").string());
  ASSERT_EQ(back.exit_code, 0) << back.output;
  EXPECT_NE(back.output.find("2 objects stored in the PACS"), std::string::npos) << back.output;
  EXPECT_EQ(modalities(), (std::multiset<std::string>{"MR", "MR", "SEG", "SR"}));
  // The same results written back again replace what is there instead of adding a second copy:
  // their UIDs derive from the source series, the model and the result itself (issue 31).
  const auto series_of = [](const fs::path& file) {
    auto read = imaging::read_dicom_seg(file);
    return read ? read->series_instance_uid : std::string("unreadable: ") + read.error().message;
  };
  const auto seg_file = dir / "pacs-out" / "101.seg.dcm";
  const auto first_uid = series_of(seg_file);
  EXPECT_EQ(first_uid.rfind("2.25.", 0), 0u) << first_uid;
  auto again = run_command(bin("fedda-agent").string() + " segment --model " + (dir / "cell/model.pt").string() + " --all --config " +
                           pacs_site(true) + " --with-dicom --out " + (dir / "pacs-out").string());
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(series_of(seg_file), first_uid);
  EXPECT_EQ(modalities(), (std::multiset<std::string>{"MR", "MR", "SEG", "SR"})) << again.output;
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
  EXPECT_NE(check.output.find("1 of 1 subjects usable; "), std::string::npos) << check.output;
  EXPECT_NE(check.output.find(" left out (ignored: above)"), std::string::npos) << check.output;  // counted, not only listed

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

  std::ofstream(dir / "wrong.yaml") << "site_id: amsterdam\ncoordinator: tcp://127.0.0.1:1\ndata: x\ndata_layout: omr\n";
  check = run_command(bin("fedda-agent").string() + " check --config " + (dir / "wrong.yaml").string());
  EXPECT_NE(check.exit_code, 0);
  EXPECT_NE(check.output.find("data_layout 'omr' (choose wmh, bids, datalist, dicom or pacs)"), std::string::npos) << check.output;
}

// Regression (first-month issue): `fedda-agent run` on a data folder with no usable subject
// joined silently and looked ready. It refuses to start, naming the folder and `check`; with
// --allow-no-subjects it starts and says so.
TEST(FeddaAgentCli, RunRefusesADataFolderWithNoUsableSubject) {
  testing::ScratchDir dir;
  std::filesystem::create_directories(dir / "empty");
  std::ofstream(dir / "site.yaml") << "site_id: amsterdam\ncoordinator: tcp://127.0.0.1:1\ndata: " << (dir / "empty").string()
                                   << "\ncache_dir: " << (dir / "cache").string() << "\nreconnect_min_ms: 100\n";
  auto refused = run_command(bin("fedda-agent").string() + " run --config " + (dir / "site.yaml").string());
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.output.find("no usable subject in " + (dir / "empty").string() + " (wmh layout"), std::string::npos)
      << refused.output;
  EXPECT_NE(refused.output.find("fedda-agent check --config"), std::string::npos) << refused.output;
  testing::Process joined({bin("fedda-agent").string(), "run", "--config", (dir / "site.yaml").string(), "--allow-no-subjects"},
                          dir / "joined.log");
  EXPECT_TRUE(testing::wait_for_text(dir / "joined.log", "joining anyway (--allow-no-subjects)", std::chrono::seconds(20)))
      << testing::read_text(dir / "joined.log");
  EXPECT_TRUE(joined.running());
}

std::vector<std::map<std::string, std::string>> read_csv(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);
  const auto header = protocol::csv_fields(line);
  std::vector<std::map<std::string, std::string>> rows;
  while (std::getline(in, line)) {
    const auto cells = protocol::csv_fields(line);
    std::map<std::string, std::string> row;
    for (std::size_t i = 0; i < header.size() && i < cells.size(); ++i) row[header[i]] = cells[i];
    rows.push_back(row);
  }
  return rows;
}

// A site without labels: a labelled site fits the estimator into the model file (calibrate),
// the target site monitors its scans with it, once to set its baseline and again after a
// mid-study scanner change (fedda-sim generate --scanner-change). The changed scans, and only
// they, drift; a clinic generated without the change does not; per-scan values stay in the
// report while summary.json holds aggregates only.
TEST(FeddaAgentCli, MonitorEstimatesWithoutLabelsAndFlagsAScannerChange) {
  testing::ScratchDir dir;
  const auto sim = bin("fedda-sim").string(), agent = bin("fedda-agent").string();
  auto gen = run_command(sim + " generate --profile smoke --subjects 8 --clinics utrecht,amsterdam --scanner-change utrecht:5 --out " +
                         (dir / "data").string());
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  gen = run_command(sim + " generate --profile smoke --subjects 8 --clinics utrecht --out " + (dir / "unchanged").string());
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  auto clinic = nlohmann::json::parse(*files::read_all(dir / "data/utrecht/clinic.json"));
  std::set<std::string> changed, all;
  for (const auto& s : clinic["subjects"]) {
    all.insert(s["subject"].get<std::string>());
    if (s["scanner_changed"].get<bool>()) changed.insert(s["subject"].get<std::string>());
  }
  ASSERT_EQ(changed.size(), 3u);
  ASSERT_EQ(clinic["scanner_change"]["flair_gamma"].get<double>(), 1.3);

  auto cell = run_command(sim + " centralized --data " + (dir / "data").string() +
                          " --source amsterdam --target utrecht --method kd --fold 0 --out " + (dir / "cell").string() + kTiny);
  ASSERT_EQ(cell.exit_code, 0) << cell.output;
  const std::string model = (dir / "cell/model.pt").string(), teacher = (dir / "cell/teacher.pt").string();

  auto calibrate = run_command(agent + " calibrate --model " + model + " --teacher " + teacher + " --data " +
                               (dir / "data/amsterdam").string() + " --out " + (dir / "calibrated.pt").string());
  ASSERT_EQ(calibrate.exit_code, 0) << calibrate.output;
  EXPECT_NE(calibrate.output.find("fitted on 8 labelled scans of amsterdam"), std::string::npos) << calibrate.output;
  {  // the model's own Dice on the samples is said, and warned about exactly when it is near 0
    std::smatch m;
    ASSERT_TRUE(std::regex_search(calibrate.output, m, std::regex("the model's mean Dice ([0-9.e+-]+)"))) << calibrate.output;
    const bool warned = calibrate.output.find("segments almost nothing on its labelled scans") != std::string::npos;
    EXPECT_EQ(warned, std::stod(m[1]) < 0.05) << calibrate.output;
  }
  // 8 scans, each as it is, under the 7 fixed changes and under 8 random scanner changes.
  EXPECT_NE(calibrate.output.find("under 7 acquisition changes and 8 random scanner changes"), std::string::npos)
      << calibrate.output;
  EXPECT_NE(calibrate.output.find("128 samples"), std::string::npos) << calibrate.output;
  {  // the number of scanner changes is the caller's
    auto more = run_command(agent + " calibrate --model " + model + " --teacher " + teacher + " --data " +
                            (dir / "data/amsterdam").string() + " --scanner-changes 2 --out " + (dir / "more.pt").string());
    ASSERT_EQ(more.exit_code, 0) << more.output;
    EXPECT_NE(more.output.find("under 7 acquisition changes and 2 random scanner changes"), std::string::npos) << more.output;
    EXPECT_NE(more.output.find("80 samples"), std::string::npos) << more.output;
    auto bad = run_command(agent + " calibrate --model " + model + " --data " + (dir / "data/amsterdam").string() +
                           " --scanner-changes -1 --out " + (dir / "bad.pt").string());
    EXPECT_EQ(bad.exit_code, 64) << bad.output;
    EXPECT_NE(bad.output.find("--scanner-changes"), std::string::npos) << bad.output;
    EXPECT_FALSE(std::filesystem::exists(dir / "bad.pt"));
  }
  const std::string calibrated = (dir / "calibrated.pt").string();

  // Fitted with the teacher's agreement: monitoring without the teacher is refused, by name.
  auto refused = run_command(agent + " monitor --model " + calibrated + " --data " + (dir / "data/utrecht").string() +
                             " --out " + (dir / "nope").string());
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.output.find("pass the same teacher with --teacher"), std::string::npos) << refused.output;

  // The baseline: the scans before the change.
  std::filesystem::create_directories(dir / "early/utrecht");
  for (const auto& s : all) {
    if (!changed.count(s)) std::filesystem::create_directory_symlink(dir / "data/utrecht" / s, dir / "early/utrecht" / s);
  }
  auto base = run_command(agent + " monitor --model " + calibrated + " --teacher " + teacher + " --data " +
                          (dir / "early/utrecht").string() + " --out " + (dir / "base").string());
  ASSERT_EQ(base.exit_code, 0) << base.output;
  ASSERT_TRUE(std::filesystem::exists(dir / "base/site-profile.json"));
  // The baseline holds image statistics and the model grid, no subject ids.
  const auto profile = nlohmann::json::parse(testing::read_text(dir / "base/site-profile.json"));
  EXPECT_EQ(profile["scans"].size(), all.size() - changed.size());
  EXPECT_EQ(profile["grid"], "64x64 at 3x3 mm");
  for (const auto& scan : profile["scans"]) {
    std::set<std::string> fields;
    for (const auto& [k, v] : scan.items()) fields.insert(k);
    EXPECT_EQ(fields, (std::set<std::string>{"histogram", "t1_histogram", "noise"}));
  }

  auto later = run_command(agent + " monitor --model " + calibrated + " --teacher " + teacher + " --data " +
                           (dir / "data/utrecht").string() + " --out " + (dir / "later").string() + " --baseline " +
                           (dir / "base/site-profile.json").string() + " --score");
  ASSERT_EQ(later.exit_code, 0) << later.output;
  EXPECT_NE(later.output.find("3 drifted from the baseline: SITE DRIFTED"), std::string::npos) << later.output;
  const auto header = testing::read_text(dir / "later/estimates.csv");
  EXPECT_EQ(header.rfind("subject,clinic,estimated_dsc,dsc_low,dsc_high,flagged,reasons,", 0), 0u) << header;
  const auto rows = read_csv(dir / "later/estimates.csv");
  ASSERT_EQ(rows.size(), all.size());
  int flagged = 0;
  for (const auto& r : rows) {
    const double est = std::stod(r.at("estimated_dsc")), low = std::stod(r.at("dsc_low")), high = std::stod(r.at("dsc_high"));
    EXPECT_TRUE(0 <= low && low <= est && est <= high && high <= 1) << r.at("subject");
    EXPECT_FALSE(r.at("true_dsc").empty()) << "--score with labels present gives the true Dice";
    EXPECT_FALSE(r.at("teacher_dice").empty());
    const bool drifted = r.at("reasons").find("drifted from the baseline") != std::string::npos;
    EXPECT_EQ(drifted, changed.count(r.at("subject")) == 1) << r.at("subject") << ": " << r.at("reasons");
    EXPECT_EQ(r.at("flagged") == "1", !r.at("reasons").empty());
    if (r.at("flagged") == "1") {
      ++flagged;
      EXPECT_TRUE(std::filesystem::exists(dir / "later/thumbnails" / ("utrecht-" + r.at("subject") + ".png"))) << r.at("subject");
    }
  }
  const auto report = testing::read_text(dir / "later/report.html");
  EXPECT_NE(report.find("3 of 8 scans drifted from the baseline"), std::string::npos);
  EXPECT_NE(report.find("thumbnails/utrecht-"), std::string::npos);

  // Only aggregates in summary.json: its keys, and no per-scan value of the table.
  const auto summary = nlohmann::json::parse(testing::read_text(dir / "later/summary.json"));
  std::set<std::string> keys;
  for (const auto& [k, v] : summary.items()) keys.insert(k);
  EXPECT_EQ(keys, (std::set<std::string>{"scans", "skipped", "flagged", "drifted", "site_drifted", "estimated_dsc_median",
                                         "estimated_dsc_q1", "estimated_dsc_q3"}));
  EXPECT_EQ(summary["scans"], 8);
  EXPECT_EQ(summary["drifted"], 3);
  EXPECT_EQ(summary["flagged"], flagged);
  EXPECT_TRUE(summary["site_drifted"].get<bool>());

  // The same clinic without the change: nothing drifts, though five of its scans are not in the baseline.
  auto control = run_command(agent + " monitor --model " + calibrated + " --teacher " + teacher + " --data " +
                             (dir / "unchanged/utrecht").string() + " --out " + (dir / "control").string() + " --baseline " +
                             (dir / "base/site-profile.json").string());
  ASSERT_EQ(control.exit_code, 0) << control.output;
  EXPECT_NE(control.output.find("0 drifted from the baseline"), std::string::npos) << control.output;
  EXPECT_EQ(nlohmann::json::parse(testing::read_text(dir / "control/summary.json"))["drifted"], 0);

  // A model without an estimator: the line says no estimates were made and why, not "0 flagged".
  auto plain = run_command(agent + " monitor --model " + model + " --data " + (dir / "unchanged/utrecht").string() +
                           " --out " + (dir / "plain").string());
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  EXPECT_NE(plain.output.find("no Dice estimates: " + model + " carries no quality estimator"), std::string::npos)
      << plain.output;
  EXPECT_EQ(plain.output.find(" flagged"), std::string::npos) << plain.output;
  const auto plain_report = testing::read_text(dir / "plain/report.html");
  EXPECT_LT(plain_report.find("No Dice estimates were made"), plain_report.find("Model <code>")) << "said first";
  EXPECT_EQ(plain_report.find("Flagged: <b>"), std::string::npos) << plain_report;
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
