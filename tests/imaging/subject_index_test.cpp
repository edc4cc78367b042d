// A site's data as it already is (subject_index.h): the same simulated clinic written in every
// layout is read back as the same subjects with the same voxels and geometry, the BIDS dataset
// passes the official validator, and what a layout gets wrong is named and skipped.
#include "fedda/imaging/subject_index.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>

#include <iostream>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "fedda/imaging/dicom.h"
#include "fedda/imaging/dicom_results.h"
#include "fedda/imaging/metrics.h"
#include "fedda/imaging/nifti_io.h"
#include "fedda/simulation/generator.h"
#include "support/orthanc.h"
#include "support/test_support.h"

namespace fedda::imaging {
namespace {
namespace fs = std::filesystem;

class SubjectIndexTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = new testing::ScratchDir();
    simulation::GenerateOptions o;
    o.profile = simulation::Profile::kSmoke;
    o.subjects = 4;  // smoke: two labelled (adaptation half) and two more
    o.clinics = {"amsterdam"};
    o.out = data_->path() / "wmh";
    auto generated = simulation::generate(o);
    ASSERT_TRUE(generated) << generated.error().message;
    for (const std::string layout : {"bids", "datalist", "dicom"}) {
      auto st = write_layout(wmh(), layout, data_->path() / layout);
      ASSERT_TRUE(st) << st.error().message;
    }
  }
  static void TearDownTestSuite() {
    delete data_;
    data_ = nullptr;
  }
  static fs::path wmh() { return data_->path() / "wmh" / "amsterdam"; }
  static fs::path bids() { return data_->path() / "bids"; }
  static fs::path datalist() { return data_->path() / "datalist" / "dataset.json"; }
  static fs::path dicom() { return data_->path() / "dicom"; }
  static DataSource source(const std::string& layout, const fs::path& path) {
    DataSource s;
    s.layout = layout;
    s.path = path;
    s.clinic = "amsterdam";
    if (layout == "bids") s.bids_labels = "wmh";
    if (layout == "dicom") {
      s.dicom_labels = path / "labels";
      s.cache = path.parent_path() / (path.filename().string() + "-cache");
    }
    return s;
  }
  // A copy of the BIDS dataset to spoil.
  fs::path bids_copy() {
    const auto copy = dir_ / "bids";
    fs::copy(bids(), copy, fs::copy_options::recursive);
    return copy;
  }
  static std::string ignored_text(const SubjectIndex& index) {
    std::string all;
    for (const auto& i : index.ignored) all += i.path.string() + ": " + i.reason + "\n";
    return all;
  }

  // The PACS's subjects are the folder's: the same ids, voxels (the same bytes through the PACS)
  // and geometry.
  static void expect_same_subjects(const SubjectIndex& folder, const SubjectIndex& index) {
    EXPECT_TRUE(index.ignored.empty()) << ignored_text(index);
    ASSERT_EQ(index.subjects.size(), folder.subjects.size());
    for (std::size_t n = 0; n < index.subjects.size(); ++n) {
      const auto& a = folder.subjects[n];
      const auto& b = index.subjects[n];
      EXPECT_EQ(a.subject, b.subject);
      EXPECT_EQ(a.labels.has_value(), b.labels.has_value()) << a.subject;
      EXPECT_EQ(b.flair_dicom.size(), a.flair_dicom.size()) << a.subject;
      auto x = read_subject(a.flair, a.t1, a.labels);
      auto y = read_subject(b.flair, b.t1, b.labels);
      ASSERT_TRUE(x && y) << a.subject;
      EXPECT_TRUE(same_geometry(x->flair.geometry, y->flair.geometry, 1e-4)) << geometry_difference(x->flair.geometry, y->flair.geometry, 1e-4);
      EXPECT_EQ(x->flair.voxels, y->flair.voxels) << a.subject;
      EXPECT_EQ(x->t1.voxels, y->t1.voxels) << a.subject;
      if (x->labels) EXPECT_EQ(x->labels->voxels, y->labels->voxels) << a.subject;
    }
  }
  // A PACS source of the DICOM layout's rules and labels, caching into `cache`.
  DataSource pacs_source(const fs::path& cache) const {
    DataSource pacs;
    pacs.layout = "pacs";
    pacs.clinic = "amsterdam";
    pacs.cache = cache;
    pacs.dicom_labels = dicom() / "labels";
    return pacs;
  }
  // The source's selection asked of the PACS again, into the cache its index filled.
  static Result<PacsRetrieval> retrieve_again(const DataSource& pacs) {
    return retrieve_from_pacs(pacs.pacs, {std::regex("flair", std::regex::icase), std::regex("t1", std::regex::icase)},
                              pacs.cache / "pacs");
  }
  static std::size_t files_under(const fs::path& folder) {
    std::size_t n = 0;
    for (const auto& e : fs::recursive_directory_iterator(folder)) n += e.is_regular_file();
    return n;
  }

  // A Segmentation and its report for `subject`, stored with store_to_pacs: Orthanc lists them
  // (SEG, SR) beside the MR series in the subject's one study.
  void expect_results_stored(testing::Orthanc& orthanc, const PacsSource& pacs, const SubjectFiles& subject) const {
    LabelMap lesion(read_geometry(subject.flair).value());
    lesion.at(lesion.geometry.size[0] / 2, lesion.geometry.size[1] / 2, lesion.geometry.size[2] / 2) = kWmh;
    ResultProvenance provenance;
    provenance.version = "test";
    provenance.model_sha256 = std::string(64, 'b');
    ASSERT_TRUE(write_dicom_seg(lesion, subject.flair_dicom, provenance, dir_ / "seg.dcm"));
    ASSERT_TRUE(write_dicom_sr(summarize_lesions(lesion), dir_ / "seg.dcm", provenance, dir_ / "sr.dcm"));
    auto stored = store_to_pacs(pacs, {dir_ / "seg.dcm", dir_ / "sr.dcm"});
    ASSERT_TRUE(stored) << stored.error().message;
    auto c = orthanc.client();
    auto found = c.Get("/dicom-web/studies?PatientID=" + subject.subject);
    ASSERT_TRUE(found);
    const auto studies = nlohmann::json::parse(found->body);
    ASSERT_EQ(studies.size(), 1u) << studies.dump();
    const std::string study_uid = studies[0]["0020000D"]["Value"][0];
    auto series = c.Get("/dicom-web/studies/" + study_uid + "/series");
    ASSERT_TRUE(series);
    std::set<std::string> modalities;
    for (const auto& s : nlohmann::json::parse(series->body)) modalities.insert(s["00080060"]["Value"][0].get<std::string>());
    EXPECT_EQ(modalities, (std::set<std::string>{"MR", "SEG", "SR"}));
  }

  static inline testing::ScratchDir* data_ = nullptr;
  testing::ScratchDir dir_;
};

TEST_F(SubjectIndexTest, EveryLayoutYieldsTheSameSubjectsVoxelsAndGeometry) {
  auto reference = index_subjects(source("wmh", wmh()));
  ASSERT_TRUE(reference) << reference.error().message;
  ASSERT_EQ(reference->subjects.size(), 4u);
  for (const std::string layout : {"bids", "datalist"}) {
    auto index = index_subjects(source(layout, layout == "bids" ? bids() : datalist()));
    ASSERT_TRUE(index) << layout << ": " << index.error().message;
    EXPECT_TRUE(index->ignored.empty()) << layout << ": " << ignored_text(*index);
    ASSERT_EQ(index->subjects.size(), reference->subjects.size()) << layout;
    for (std::size_t i = 0; i < index->subjects.size(); ++i) {
      const auto& a = reference->subjects[i];
      const auto& b = index->subjects[i];
      EXPECT_EQ(a.subject, b.subject) << layout;
      EXPECT_EQ(a.clinic, b.clinic) << layout;
      ASSERT_EQ(a.labels.has_value(), b.labels.has_value()) << layout << " " << a.subject;
      EXPECT_NE(a.flair, b.flair);  // really read from the other layout's files
      auto x = read_subject(a.flair, a.t1, a.labels);
      auto y = read_subject(b.flair, b.t1, b.labels);
      ASSERT_TRUE(x && y) << layout << " " << a.subject;
      EXPECT_TRUE(same_geometry(x->flair.geometry, y->flair.geometry, 1e-6)) << layout << " " << a.subject;
      EXPECT_EQ(x->flair.voxels, y->flair.voxels) << layout << " " << a.subject;
      EXPECT_EQ(x->t1.voxels, y->t1.voxels) << layout << " " << a.subject;
      if (x->labels) EXPECT_EQ(x->labels->voxels, y->labels->voxels) << layout << " " << a.subject;
    }
  }
}

TEST_F(SubjectIndexTest, TheBidsDatasetPassesTheOfficialValidator) {
  const fs::path validator = "/opt/fedda-tools/node_modules/.bin/bids-validator";  // scripts/install-deps.sh
  ASSERT_TRUE(fs::exists(validator)) << "run scripts/install-deps.sh (it installs npm's bids-validator there)";
  const auto r = testing::run_command(validator.string() + " --json " + bids().string());
  const auto start = r.output.find('{');
  ASSERT_NE(start, std::string::npos) << r.output;
  const auto report = nlohmann::json::parse(r.output.substr(start));
  EXPECT_TRUE(report["issues"]["errors"].empty()) << report["issues"]["errors"].dump(2);
  EXPECT_EQ(report["summary"]["subjects"].size(), 4u) << report["summary"].dump();
  EXPECT_EQ(r.exit_code, 0) << r.output.substr(0, 2000);
  // And a broken dataset does not pass: the validator is really looking.
  const auto broken = bids_copy();
  fs::remove(broken / "dataset_description.json");
  EXPECT_NE(testing::run_command(validator.string() + " --json " + broken.string()).exit_code, 0);
}

TEST_F(SubjectIndexTest, BidsProblemsAreNamedAndOnlyTheSubjectAtFaultIsSkipped) {
  const auto root = bids_copy();
  auto subjects = index_subjects(source("bids", root)).value().subjects;
  ASSERT_EQ(subjects.size(), 4u);
  const auto a = subjects[0].subject, b = subjects[1].subject;
  // a: FLAIR but no T1w. b: a second FLAIR (another acquisition).
  fs::remove(root / ("sub-" + a) / "anat" / ("sub-" + a + "_T1w.nii.gz"));
  const auto b_anat = root / ("sub-" + b) / "anat";
  fs::rename(b_anat / ("sub-" + b + "_FLAIR.nii.gz"), b_anat / ("sub-" + b + "_acq-3D_FLAIR.nii.gz"));
  fs::copy_file(b_anat / ("sub-" + b + "_acq-3D_FLAIR.nii.gz"), b_anat / ("sub-" + b + "_acq-2D_FLAIR.nii.gz"));
  fs::rename(b_anat / ("sub-" + b + "_T1w.nii.gz"), b_anat / ("sub-" + b + "_acq-3D_T1w.nii.gz"));
  std::ofstream(b_anat / ("sub-" + b + "_T2w.nii.gz")) << "";  // a suffix fedda does not use

  auto index = index_subjects(source("bids", root));
  ASSERT_TRUE(index) << index.error().message;
  const auto text = ignored_text(*index);
  EXPECT_EQ(index->subjects.size(), 2u) << text;
  EXPECT_NE(text.find("subject " + a + " skipped: no T1w image"), std::string::npos) << text;
  EXPECT_NE(text.find("subject " + b + " skipped: 2 FLAIR images (sub-" + b + "_acq-2D_FLAIR.nii.gz, sub-" + b +
                      "_acq-3D_FLAIR.nii.gz): set bids_filters"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("suffix T2w"), std::string::npos) << text;

  // The filter chooses: b comes back with its 3D acquisition, the 2D one named as left out.
  auto filtered_source = source("bids", root);
  filtered_source.bids_filters = {{"acq", "3D"}};
  auto filtered = index_subjects(filtered_source);
  ASSERT_TRUE(filtered) << filtered.error().message;
  // Only b has an acq entity: the others' images do not match the filter and are left out, named.
  ASSERT_EQ(filtered->subjects.size(), 1u) << ignored_text(*filtered);
  EXPECT_EQ(filtered->subjects[0].subject, b);
  EXPECT_EQ(filtered->subjects[0].flair.filename(), "sub-" + b + "_acq-3D_FLAIR.nii.gz");
  EXPECT_NE(ignored_text(*filtered).find("acq-2D is not bids_filters' acq: 3D"), std::string::npos) << ignored_text(*filtered);

  auto unknown = source("bids", root);
  unknown.bids_filters = {{"echo", "1"}};
  auto refused = index_subjects(unknown);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("'echo'"), std::string::npos);
  fs::remove(root / "dataset_description.json");
  refused = index_subjects(source("bids", root));
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("not a BIDS dataset"), std::string::npos);
}

TEST_F(SubjectIndexTest, SessionsAreSubjectsUnlessAFilterPicksOne) {
  const auto root = bids_copy();
  auto subjects = index_subjects(source("bids", root)).value().subjects;
  const auto id = subjects[0].subject;
  const auto sub = root / ("sub-" + id);
  // Two sessions of the first subject, with labels for the first session only.
  for (const std::string ses : {"1", "2"}) {
    fs::create_directories(sub / ("ses-" + ses) / "anat");
    for (const std::string suffix : {"FLAIR", "T1w"}) {
      fs::copy_file(sub / "anat" / ("sub-" + id + "_" + suffix + ".nii.gz"),
                    sub / ("ses-" + ses) / "anat" / ("sub-" + id + "_ses-" + ses + "_" + suffix + ".nii.gz"));
    }
  }
  const auto labels = root / "derivatives" / "wmh" / ("sub-" + id);
  fs::create_directories(labels / "ses-1" / "anat");
  if (fs::exists(labels / "anat" / ("sub-" + id + "_desc-WMH_mask.nii.gz"))) {
    fs::copy_file(labels / "anat" / ("sub-" + id + "_desc-WMH_mask.nii.gz"),
                  labels / "ses-1" / "anat" / ("sub-" + id + "_ses-1_desc-WMH_mask.nii.gz"));
  }
  fs::remove_all(sub / "anat");
  auto index = index_subjects(source("bids", root)).value();
  ASSERT_EQ(index.subjects.size(), 5u) << ignored_text(index);
  EXPECT_EQ(index.subjects[0].subject, id + "_ses-1");
  EXPECT_EQ(index.subjects[1].subject, id + "_ses-2");
  EXPECT_EQ(index.subjects[0].labels.has_value(), subjects[0].labels.has_value());
  EXPECT_FALSE(index.subjects[1].labels.has_value());
  auto one = source("bids", root);
  one.bids_filters = {{"ses", "2"}};
  index = index_subjects(one).value();
  // The filter chooses among a subject's sessions; subjects without sessions keep their one anat/.
  ASSERT_EQ(index.subjects.size(), 4u) << ignored_text(index);
  EXPECT_EQ(index.subjects[0].subject, id);
  EXPECT_NE(index.subjects[0].flair.string().find("ses-2"), std::string::npos);
  EXPECT_NE(ignored_text(index).find("session 1 is not bids_filters' ses: 2"), std::string::npos);
}

TEST_F(SubjectIndexTest, DatalistProblemsAreNamedAndOnlyTheEntryAtFaultIsSkipped) {
  const auto copy = dir_ / "datalist";
  fs::copy(datalist().parent_path(), copy, fs::copy_options::recursive);
  std::ifstream in(copy / "dataset.json");
  auto doc = nlohmann::json::parse(in);
  const auto first = doc["training"][0]["subject"].get<std::string>();
  doc["training"][0]["image"][1] = "imagesTr/missing_0001.nii.gz";
  doc["training"].push_back(doc["training"][1]);  // listed twice
  doc["test"].push_back({{"image", "only-one.nii.gz"}});
  // Explicit flair / t1 keys and channel order swapped by channel_names are read as well.
  doc["channel_names"] = {{"0", "T1"}, {"1", "FLAIR"}};
  for (auto* list : {&doc["training"], &doc["test"]}) {
    for (auto& e : *list) {
      if (e["image"].is_array()) e["image"] = {e["image"][1], e["image"][0]};
    }
  }
  std::ofstream(copy / "dataset.json") << doc.dump(2);
  DataSource s = source("datalist", copy / "dataset.json");
  auto index = index_subjects(s);
  ASSERT_TRUE(index) << index.error().message;
  const auto text = ignored_text(*index);
  EXPECT_EQ(index->subjects.size(), 3u) << text;
  EXPECT_NE(text.find("subject " + first + " skipped: missing"), std::string::npos) << text;
  EXPECT_NE(text.find("missing_0001.nii.gz"), std::string::npos) << text;
  EXPECT_NE(text.find("listed twice"), std::string::npos) << text;
  EXPECT_NE(text.find("'image' must list the FLAIR and the T1"), std::string::npos) << text;
  for (const auto& subject : index->subjects) EXPECT_NE(subject.flair.filename().string().find("_0000"), std::string::npos);

  std::ofstream(copy / "broken.json") << "{\"training\": [";
  auto broken = index_subjects(source("datalist", copy / "broken.json"));
  ASSERT_FALSE(broken);
  EXPECT_NE(broken.error().message.find("broken.json: not JSON"), std::string::npos) << broken.error().message;
  auto absent = index_subjects(source("datalist", copy / "absent.json"));
  ASSERT_FALSE(absent);
  EXPECT_NE(absent.error().message.find("absent.json: datalist file not found"), std::string::npos);
}

// The voxel of `b` at the physical position of voxel (x, y, z) of `a`: the DICOM round trip may
// store rows or slices in another order, so voxels are compared where they are, not by index.
float at_same_place(const Image& a, const Image& b, std::size_t x, std::size_t y, std::size_t z) {
  const auto i = b.geometry.to_index(a.geometry.to_physical(static_cast<double>(x), static_cast<double>(y), static_cast<double>(z)));
  return b.at(std::lround(i[0]), std::lround(i[1]), std::lround(i[2]));
}

TEST_F(SubjectIndexTest, DicomSeriesComeBackAsTheSameScansWithinTheirStoredPrecision) {
  auto reference = index_subjects(source("wmh", wmh())).value();
  auto index = index_subjects(source("dicom", dicom()));
  ASSERT_TRUE(index) << index.error().message;
  EXPECT_TRUE(index->ignored.empty()) << ignored_text(*index);
  ASSERT_EQ(index->subjects.size(), reference.subjects.size());
  for (std::size_t n = 0; n < reference.subjects.size(); ++n) {
    const auto& a = reference.subjects[n];
    const auto& b = index->subjects[n];
    EXPECT_EQ(a.subject, b.subject);
    ASSERT_EQ(a.labels.has_value(), b.labels.has_value()) << a.subject;
    auto x = read_subject(a.flair, a.t1, a.labels);
    auto y = read_subject(b.flair, b.t1, b.labels);  // FLAIR, T1 and labels on one grid
    ASSERT_TRUE(x) << x.error().message;
    ASSERT_TRUE(y) << a.subject << ": " << y.error().message;
    // Same physical box: spacing, and the set of voxel centres, to float precision.
    const auto& ga = x->flair.geometry;
    const auto& gb = y->flair.geometry;
    ASSERT_EQ(ga.voxel_count(), gb.voxel_count()) << geometry_difference(ga, gb);
    // Turned to the simulator's orientation after dcm2niix (which keeps the scanner's row order).
    EXPECT_TRUE(same_geometry(ga, gb, 1e-4)) << a.subject << ": " << geometry_difference(ga, gb, 1e-4);
    for (const auto corner : {std::array<double, 3>{0, 0, 0}, std::array<double, 3>{double(ga.size[0] - 1), double(ga.size[1] - 1), double(ga.size[2] - 1)}}) {
      const auto i = gb.to_index(ga.to_physical(corner[0], corner[1], corner[2]));
      for (int d = 0; d < 3; ++d) EXPECT_NEAR(i[d], std::round(i[d]), 1e-3) << a.subject << " corner axis " << d;
    }
    for (const auto* pair : {&x->flair, &x->t1}) {
      const Image& original = *pair;
      const Image& round_trip = pair == &x->flair ? y->flair : y->t1;
      const auto [lo, hi] = std::minmax_element(original.voxels.begin(), original.voxels.end());
      const double step = (*hi - *lo) / 65535.0;  // the 16-bit rescale slope write_dicom_series used
      double worst = 0;
      for (std::size_t z = 0; z < ga.size[2]; ++z)
        for (std::size_t yy = 0; yy < ga.size[1]; ++yy)
          for (std::size_t xx = 0; xx < ga.size[0]; ++xx)
            worst = std::max(worst, std::abs(double(original.at(xx, yy, z)) - at_same_place(original, round_trip, xx, yy, z)));
      EXPECT_LE(worst, step * 0.51 + 1e-3) << a.subject;
    }
    if (x->labels) {
      std::size_t differ = 0;
      for (std::size_t z = 0; z < ga.size[2]; ++z)
        for (std::size_t yy = 0; yy < ga.size[1]; ++yy)
          for (std::size_t xx = 0; xx < ga.size[0]; ++xx) {
            const auto i = y->labels->geometry.to_index(ga.to_physical(double(xx), double(yy), double(z)));
            differ += x->labels->at(xx, yy, z) != y->labels->at(std::lround(i[0]), std::lround(i[1]), std::lround(i[2]));
          }
      EXPECT_EQ(differ, 0u) << a.subject;
    }
  }
  // Converted once: a second index reuses the NIfTI files; a changed series is converted again.
  const auto converted = index->subjects[0].flair;
  const auto before = fs::last_write_time(converted);
  ASSERT_TRUE(index_subjects(source("dicom", dicom())));
  EXPECT_EQ(fs::last_write_time(converted), before);
  const auto slice = dicom() / index->subjects[0].subject / "FLAIR" / "IM0001.dcm";
  fs::last_write_time(slice, fs::last_write_time(slice) + std::chrono::seconds(5));
  ASSERT_TRUE(index_subjects(source("dicom", dicom())));
  EXPECT_NE(fs::last_write_time(converted), before);
}

TEST_F(SubjectIndexTest, DicomProblemsAreNamedAndOnlyTheSubjectAtFaultIsSkipped) {
  const auto root = dir_ / "dicom";
  fs::copy(dicom(), root, fs::copy_options::recursive);
  auto subjects = index_subjects(source("dicom", root)).value().subjects;
  ASSERT_EQ(subjects.size(), 4u);
  const auto a = subjects[0].subject, b = subjects[1].subject, c = subjects[2].subject;
  // a: a slice missing from the middle of its FLAIR.
  const auto flair_a = root / a / "FLAIR";
  std::size_t slices = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(flair_a)) ++slices;
  char middle[32];
  std::snprintf(middle, sizeof(middle), "IM%04zu.dcm", slices / 2);
  fs::remove(flair_a / middle);
  // b: a second FLAIR series (a repeat the technologist took).
  auto image = read_image(subjects[1].flair).value();
  DicomSeriesTags tags;
  tags.patient_id = b;
  tags.series_description = "AX T2 FLAIR repeat";
  tags.series_number = 7;
  ASSERT_TRUE(write_dicom_series(image, root / b / "FLAIR-repeat", tags));
  // c: its T1 with uneven spacing (its first two slices gone: a gap of three spacings).
  fs::remove(root / c / "T1" / "IM0002.dcm");
  fs::remove(root / c / "T1" / "IM0003.dcm");
  // And a series no rule takes, for a subject that is otherwise fine.
  tags.patient_id = subjects[3].subject;
  tags.series_description = "SAG DWI";
  tags.series_number = 9;
  ASSERT_TRUE(write_dicom_series(image, root / subjects[3].subject / "DWI", tags));

  auto index = index_subjects(source("dicom", root));
  ASSERT_TRUE(index) << index.error().message;
  const auto text = ignored_text(*index);
  ASSERT_EQ(index->subjects.size(), 1u) << text;
  EXPECT_EQ(index->subjects[0].subject, subjects[3].subject);
  EXPECT_NE(text.find("subject " + a + " skipped: series 3 'AX T2 FLAIR': a slice is missing between instances"), std::string::npos) << text;
  EXPECT_NE(text.find("subject " + b + " skipped: 2 series match dicom_flair (series 3 'AX T2 FLAIR', series 7 'AX T2 FLAIR repeat')"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("subject " + c + " skipped: series 5 'AX T1 3D': the slice spacing varies"), std::string::npos) << text;
  EXPECT_NE(text.find("series 9 'SAG DWI' matches neither dicom_flair"), std::string::npos) << text;

  // A stricter rule takes the original FLAIR of b back.
  auto strict = source("dicom", root);
  strict.dicom_flair = "^AX T2 FLAIR$";
  index = index_subjects(strict);
  ASSERT_TRUE(index) << index.error().message;
  EXPECT_EQ(index->subjects.size(), 2u) << ignored_text(*index);
  EXPECT_NE(ignored_text(*index).find("series 7 'AX T2 FLAIR repeat' matches neither"), std::string::npos);
}

// A PACS (a real Orthanc on loopback) holding the DICOM layout's series: indexed with data_layout
// pacs, the same subjects with the same voxels and geometry as the folder, each instance
// retrieved once; a filter, wrong credentials and a PACS that went away are each named.
TEST_F(SubjectIndexTest, APacsOverDicomWebGivesTheSameSubjectsAsTheFolderItWasLoadedFrom) {
  testing::Orthanc orthanc(dir_ / "orthanc");
  ASSERT_TRUE(orthanc.up()) << testing::read_text(orthanc.log());
  const int files = orthanc.upload(dicom());
  ASSERT_GT(files, 0) << testing::read_text(orthanc.log());
  auto folder = index_subjects(source("dicom", dicom()));
  ASSERT_TRUE(folder) << folder.error().message;

  DataSource pacs;
  pacs.layout = "pacs";
  pacs.clinic = "amsterdam";
  pacs.cache = dir_ / "cache";
  pacs.dicom_labels = dicom() / "labels";
  pacs.pacs.dicomweb = orthanc.dicomweb();
  pacs.pacs.user = testing::Orthanc::kUser;
  pacs.pacs.password = testing::Orthanc::kPassword;
  const auto started = std::chrono::steady_clock::now();
  auto index = index_subjects(pacs);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  ASSERT_TRUE(index) << index.error().message;
  std::cout << "indexed " << index->subjects.size() << " subjects (" << files << " instances) from Orthanc in " << seconds << " s\n";
  expect_same_subjects(*folder, *index);
  // Indexed again: nothing retrieved twice.
  auto again = retrieve_again(pacs);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->retrieved, 0);
  EXPECT_EQ(again->instances, files);

  // One study by its accession number.
  auto one = pacs;
  one.cache = dir_ / "cache-one";
  one.pacs.accession_numbers = {"A" + folder->subjects[1].subject};
  auto only = index_subjects(one);
  ASSERT_TRUE(only) << only.error().message;
  ASSERT_EQ(only->subjects.size(), 1u);
  EXPECT_EQ(only->subjects[0].subject, folder->subjects[1].subject);
  // The selection narrowed to another study: the one it no longer selects leaves the cache.
  one.pacs.accession_numbers = {"A" + folder->subjects[2].subject};
  only = index_subjects(one);
  ASSERT_TRUE(only) << only.error().message;
  ASSERT_EQ(only->subjects.size(), 1u);
  EXPECT_EQ(only->subjects[0].subject, folder->subjects[2].subject);
  int studies_cached = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(one.cache / "pacs")) ++studies_cached;
  EXPECT_EQ(studies_cached, 1);

  // A password in the URL is refused before anything is sent, and not repeated.
  auto in_url = pacs;
  in_url.pacs.dicomweb = "http://fedda:hunter2@127.0.0.1:1/dicom-web";
  auto url_refused = index_subjects(in_url);
  ASSERT_FALSE(url_refused);
  EXPECT_NE(url_refused.error().message.find("put them in credentials_file"), std::string::npos) << url_refused.error().message;
  EXPECT_EQ(url_refused.error().message.find("hunter2"), std::string::npos) << url_refused.error().message;

  // Wrong credentials: the PACS's 401, named.
  auto wrong = pacs;
  wrong.cache = dir_ / "cache-wrong";
  wrong.pacs.password = "not-it";
  auto refused = index_subjects(wrong);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("answered 401 (wrong or missing credentials)"), std::string::npos) << refused.error().message;
  EXPECT_NE(refused.error().message.find(orthanc.dicomweb() + "/studies"), std::string::npos) << refused.error().message;

  // Results stored back (STOW-RS): a Segmentation and its report land in the subject's study.
  expect_results_stored(orthanc, pacs.pacs, index->subjects[0]);
  // Refused by the PACS: named (Orthanc refuses a file that is not DICOM).
  std::ofstream(dir_ / "junk.dcm") << std::string(200, 'x');
  auto junk = store_to_pacs(pacs.pacs, {dir_ / "junk.dcm"});
  ASSERT_FALSE(junk);
  EXPECT_NE(junk.error().message.find("pacs " + orthanc.dicomweb() + "/studies: "), std::string::npos) << junk.error().message;

  // The PACS gone: named after its retries, the retrieved series untouched.
  const auto cached_files = [&] { return files_under(pacs.cache / "pacs"); };
  const auto before = cached_files();
  EXPECT_EQ(before, static_cast<std::size_t>(files));
  orthanc.stop();
  auto gone = pacs;
  gone.pacs.attempts = 2;
  auto down = index_subjects(gone);
  ASSERT_FALSE(down);
  EXPECT_NE(down.error().message.find("cannot reach the PACS"), std::string::npos) << down.error().message;
  EXPECT_EQ(cached_files(), before);
}

// The same PACS over DIMSE: C-FIND finds the studies, series and instances, C-GET brings them
// (on the agent's own association: it opens no port), C-STORE takes the results back; the
// subjects are the folder's. A caller the PACS does not know, and a PACS gone, are named.
TEST_F(SubjectIndexTest, APacsOverDimseGivesTheSameSubjectsAsTheFolderItWasLoadedFrom) {
  testing::Orthanc orthanc(dir_ / "orthanc");
  ASSERT_TRUE(orthanc.up()) << testing::read_text(orthanc.log());
  const int files = orthanc.upload(dicom());
  ASSERT_GT(files, 0) << testing::read_text(orthanc.log());
  auto folder = index_subjects(source("dicom", dicom()));
  ASSERT_TRUE(folder) << folder.error().message;

  auto pacs = pacs_source(dir_ / "cache");
  pacs.pacs.dimse = orthanc.dimse();
  pacs.pacs.calling_ae = "FEDDA";
  const auto started = std::chrono::steady_clock::now();
  auto index = index_subjects(pacs);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  ASSERT_TRUE(index) << index.error().message;
  std::cout << "indexed " << index->subjects.size() << " subjects (" << files << " instances) over DIMSE in " << seconds << " s\n";
  expect_same_subjects(*folder, *index);
  // What C-GET brought is cached as DICOM files proper (preamble, DICM, meta header), as WADO-RS's are.
  std::size_t part10 = 0;
  for (const auto& e : fs::recursive_directory_iterator(pacs.cache / "pacs")) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    std::string head(132, '\0');
    in.read(head.data(), 132);
    part10 += head.compare(128, 4, "DICM") == 0;
  }
  EXPECT_EQ(part10, static_cast<std::size_t>(files));
  auto again = retrieve_again(pacs);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->retrieved, 0);
  EXPECT_EQ(again->instances, files);
  // Two instances lost from the cache: only those two are asked for and brought back.
  std::vector<fs::path> cached;
  for (const auto& e : fs::recursive_directory_iterator(pacs.cache / "pacs")) {
    if (e.is_regular_file()) cached.push_back(e.path());
  }
  std::sort(cached.begin(), cached.end());
  fs::remove(cached[3]);
  fs::remove(cached[5]);
  again = retrieve_again(pacs);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->retrieved, 2);
  EXPECT_TRUE(fs::exists(cached[3]) && fs::exists(cached[5]));
  EXPECT_EQ(files_under(pacs.cache / "pacs"), static_cast<std::size_t>(files));

  // A calling AE title Orthanc does not know: refused, and the refusal says where to look.
  auto stranger = pacs;
  stranger.cache = dir_ / "cache-stranger";
  stranger.pacs.calling_ae = "STRANGER";
  auto refused = index_subjects(stranger);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("pacs dimse " + orthanc.dimse() + ": "), std::string::npos) << refused.error().message;
  EXPECT_NE(refused.error().message.find("STRANGER"), std::string::npos) << refused.error().message;

  // Results stored back with C-STORE: a Segmentation and its report land in the subject's study.
  expect_results_stored(orthanc, pacs.pacs, index->subjects[0]);
  // A file that is not DICOM is refused before any association.
  std::ofstream(dir_ / "junk.dcm") << std::string(200, 'x');
  auto junk = store_to_pacs(pacs.pacs, {dir_ / "junk.dcm"});
  ASSERT_FALSE(junk);
  EXPECT_NE(junk.error().message.find("junk.dcm: not a DICOM file"), std::string::npos) << junk.error().message;

  // The PACS gone: named after its retries, the retrieved series untouched.
  const auto before = files_under(pacs.cache / "pacs");
  EXPECT_EQ(before, static_cast<std::size_t>(files));
  orthanc.stop();
  pacs.pacs.attempts = 2;
  auto down = index_subjects(pacs);
  ASSERT_FALSE(down);
  EXPECT_NE(down.error().message.find("pacs dimse " + orthanc.dimse() + ": cannot reach the PACS"), std::string::npos)
      << down.error().message;
  EXPECT_EQ(files_under(pacs.cache / "pacs"), before);
}

// DICOMweb over https (stunnel with a certificate for 127.0.0.1 in front of Orthanc), QIDO-RS
// asked a few matches at a time: the folder's subjects. A certificate that does not chain to
// ca_file, or to the system's CAs when there is none, is refused and named.
TEST_F(SubjectIndexTest, APacsBehindTlsIsReadInPagesAndItsCertificateChecked) {
  testing::Orthanc orthanc(dir_ / "orthanc");
  ASSERT_TRUE(orthanc.up()) << testing::read_text(orthanc.log());
  const int files = orthanc.upload(dicom());
  ASSERT_GT(files, 0);
  ASSERT_TRUE(testing::make_loopback_certificate(dir_ / "tls", "pacs")) << testing::read_text(dir_ / "tls" / "pacs.log");
  ASSERT_TRUE(testing::make_loopback_certificate(dir_ / "tls", "other"));
  testing::TlsProxy tls(dir_ / "tls", dir_ / "tls" / "pacs-key.pem", orthanc.http_port());
  ASSERT_TRUE(tls.up()) << testing::read_text(tls.log());
  auto folder = index_subjects(source("dicom", dicom()));
  ASSERT_TRUE(folder) << folder.error().message;

  auto pacs = pacs_source(dir_ / "cache");
  pacs.pacs.dicomweb = "https://127.0.0.1:" + std::to_string(tls.port()) + "/dicom-web";
  pacs.pacs.user = testing::Orthanc::kUser;
  pacs.pacs.password = testing::Orthanc::kPassword;
  pacs.pacs.ca_file = (dir_ / "tls" / "pacs.pem").string();
  pacs.pacs.page_size = 3;  // fewer than the studies and than a series' instances: every list takes pages
  ASSERT_GT(folder->subjects.size(), 3u);
  auto index = index_subjects(pacs);
  ASSERT_TRUE(index) << index.error().message;
  expect_same_subjects(*folder, *index);
  auto again = retrieve_again(pacs);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->instances, files);
  EXPECT_EQ(again->studies, static_cast<int>(folder->subjects.size()));

  // Another certificate as the CA: refused, nothing retrieved.
  auto other = pacs;
  other.cache = dir_ / "cache-other";
  other.pacs.ca_file = (dir_ / "tls" / "other.pem").string();
  auto untrusted = index_subjects(other);
  ASSERT_FALSE(untrusted);
  EXPECT_NE(untrusted.error().message.find("the PACS's TLS certificate is not trusted (checked against ca_file " + other.pacs.ca_file),
            std::string::npos)
      << untrusted.error().message;
  // No ca_file: the system's CAs, which do not hold a self-signed certificate.
  other.pacs.ca_file.clear();
  untrusted = index_subjects(other);
  ASSERT_FALSE(untrusted);
  EXPECT_NE(untrusted.error().message.find("checked against the system's CA certificates"), std::string::npos) << untrusted.error().message;
  EXPECT_FALSE(fs::exists(other.cache / "pacs") && files_under(other.cache / "pacs") > 0);
}

}  // namespace
}  // namespace fedda::imaging
