// A site's data as it already is (subject_index.h): the same simulated clinic written in every
// layout is read back as the same subjects with the same voxels and geometry, the BIDS dataset
// passes the official validator, and what a layout gets wrong is named and skipped.
#include "fedda/imaging/subject_index.h"

#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "fedda/imaging/nifti_io.h"
#include "fedda/simulation/generator.h"
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
    for (const std::string layout : {"bids", "datalist"}) {
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
  static DataSource source(const std::string& layout, const fs::path& path) {
    DataSource s;
    s.layout = layout;
    s.path = path;
    s.clinic = "amsterdam";
    if (layout == "bids") s.bids_labels = "wmh";
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

}  // namespace
}  // namespace fedda::imaging
