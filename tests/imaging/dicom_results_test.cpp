// Results as DICOM (dicom_results.h): a Segmentation written on a series' own slices holds, pixel
// for pixel, the label map the series was segmented into, wherever dcm2niix put its axes; the
// Segmentation and the measurement report pass dicom3tools' dciodvfy without an error; what
// cannot be referenced is refused by name.
#include "fedda/imaging/dicom_results.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"

#include "fedda/common/files.h"
#include "fedda/imaging/dicom.h"
#include "fedda/imaging/metrics.h"
#include "fedda/imaging/nifti_io.h"
#include "support/test_support.h"

namespace fedda::imaging {
namespace {
namespace fs = std::filesystem;

// 13 x 11 pixels (a frame's pixel count not a multiple of 8), 6 slices, the rows running
// posterior to anterior and the slices inferior to superior, in a grid dcm2niix stores otherwise.
Geometry scanner_grid() {
  Geometry g;
  g.size = {13, 11, 6};
  g.spacing = {1.5, 2.0, 3.0};
  g.origin = {-10.0, 20.0, -7.5};
  g.direction = {1, 0, 0, 0, -1, 0, 0, 0, 1};
  return g;
}

// The truth, on the scanner's grid: voxel (x, y, z) of slice z, column x, row y.
bool lesion_at(std::size_t x, std::size_t y, std::size_t z) { return (x * 7 + y * 3 + z * 5) % 11 < 3 && z != 4; }

std::string attribute(const fs::path& file, const DcmTagKey& tag) {
  DcmFileFormat f;
  if (f.loadFile(file.c_str()).bad()) return "";
  OFString v;
  f.getDataset()->findAndGetOFString(tag, v);
  return v.c_str();
}

// The lines dciodvfy starts with "Error", and whether it ran.
std::string dciodvfy_errors(const fs::path& file) {
  auto r = testing::run_command("dciodvfy " + file.string());
  if (r.exit_code == 127) return "dciodvfy is not installed (Debian's dicom3tools)";
  std::string errors;
  std::istringstream lines(r.output);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("Error", 0) == 0) errors += line + "\n";
  }
  return errors;
}

// Every numeric item of an SR content tree: concept name meaning -> value.
void numeric_items(DcmItem& item, std::map<std::string, std::string>& out) {
  DcmItem* child = nullptr;
  for (unsigned long i = 0; item.findAndGetSequenceItem(DCM_ContentSequence, child, i).good() && child; ++i) {
    DcmItem* concept_name = nullptr;
    DcmItem* measured = nullptr;
    if (child->findAndGetSequenceItem(DCM_ConceptNameCodeSequence, concept_name).good() &&
        child->findAndGetSequenceItem(DCM_MeasuredValueSequence, measured).good()) {
      OFString meaning, value;
      concept_name->findAndGetOFString(DCM_CodeMeaning, meaning);
      measured->findAndGetOFString(DCM_NumericValue, value);
      out[meaning.c_str()] = value.c_str();
    }
    numeric_items(*child, out);
  }
}

class DicomResults : public ::testing::Test {
 protected:
  void SetUp() override {
    Image flair(scanner_grid());
    for (std::size_t i = 0; i < flair.voxels.size(); ++i) flair.voxels[i] = static_cast<float>(i % 97);
    DicomSeriesTags tags;
    tags.patient_id = "p7";
    tags.series_description = "AX T2 FLAIR";
    ASSERT_TRUE(write_dicom_series(flair, dir_ / "dicom", tags));
    auto series = scan_dicom(dir_ / "dicom");
    ASSERT_TRUE(series) << series.error().message;
    ASSERT_EQ(series->size(), 1u);
    files_ = series->front().files;
    // The label map as fedda-agent segment writes it: on the grid dcm2niix converted the series to.
    ASSERT_TRUE(convert_dicom_series(series->front(), dir_ / "FLAIR.nii.gz"));
    auto converted = read_geometry(dir_ / "FLAIR.nii.gz");
    ASSERT_TRUE(converted) << converted.error().message;
    labels_ = LabelMap(*converted);
    const auto truth = scanner_grid();
    for (std::size_t z = 0; z < converted->size[2]; ++z) {
      for (std::size_t y = 0; y < converted->size[1]; ++y) {
        for (std::size_t x = 0; x < converted->size[0]; ++x) {
          const auto i = truth.to_index(converted->to_physical(double(x), double(y), double(z)));
          labels_.at(x, y, z) = lesion_at(std::lround(i[0]), std::lround(i[1]), std::lround(i[2])) ? kWmh : kBackground;
        }
      }
    }
    provenance_.version = "test";
    provenance_.model_sha256 = std::string(64, 'a');
    provenance_.model_name = "model.pt";
  }

  testing::ScratchDir dir_;
  std::vector<fs::path> files_;
  LabelMap labels_;
  ResultProvenance provenance_;
};

TEST_F(DicomResults, TheSegmentationOnTheFlairSlicesIsTheLabelMapPixelForPixel) {
  auto written = write_dicom_seg(labels_, files_, provenance_, dir_ / "seg.dcm");
  ASSERT_TRUE(written) << written.error().message;
  EXPECT_EQ(written->frames, 6u);
  EXPECT_EQ(dciodvfy_errors(dir_ / "seg.dcm"), "");

  auto seg = read_dicom_seg(dir_ / "seg.dcm");
  ASSERT_TRUE(seg) << seg.error().message;
  EXPECT_EQ(seg->segment_label, "WMH");
  EXPECT_EQ(seg->rows, 11u);
  EXPECT_EQ(seg->columns, 13u);
  EXPECT_EQ(seg->study_instance_uid, attribute(files_.front(), DCM_StudyInstanceUID));
  EXPECT_EQ(seg->frame_of_reference_uid, attribute(files_.front(), DCM_FrameOfReferenceUID));
  EXPECT_NEAR(seg->pixel_spacing[0], 2.0, 1e-6);  // between rows
  EXPECT_NEAR(seg->pixel_spacing[1], 1.5, 1e-6);
  ASSERT_EQ(seg->frames.size(), 6u);

  // Each frame sits on its source slice, references it, and holds that slice's truth.
  std::map<std::string, std::size_t> slice_of_sop;
  for (std::size_t k = 0; k < files_.size(); ++k) {
    slice_of_sop[attribute(files_[k], DCM_SOPInstanceUID)] = std::stoul(attribute(files_[k], DCM_InstanceNumber)) - 1;
  }
  const auto truth = scanner_grid();
  std::size_t lesion_pixels = 0, wrong = 0;
  for (const auto& frame : seg->frames) {
    ASSERT_TRUE(slice_of_sop.count(frame.referenced_sop_instance_uid)) << frame.referenced_sop_instance_uid;
    const std::size_t k = slice_of_sop[frame.referenced_sop_instance_uid];
    const auto origin = truth.to_physical(0, 0, double(k));
    for (int i = 0; i < 3; ++i) EXPECT_NEAR(frame.position[i], origin[i], 1e-3) << "slice " << k;
    for (std::size_t r = 0; r < seg->rows; ++r) {
      for (std::size_t c = 0; c < seg->columns; ++c) {
        const bool in_seg = frame.pixels[r * seg->columns + c] != 0;
        wrong += in_seg != lesion_at(c, r, k);
        lesion_pixels += in_seg;
      }
    }
  }
  EXPECT_EQ(wrong, 0u);
  EXPECT_EQ(lesion_pixels, summarize_lesions(labels_).voxels);
  EXPECT_GT(lesion_pixels, 0u);
}

TEST_F(DicomResults, TheMeasurementReportGivesTheVolumeAndCountAndReferencesTheSegmentation) {
  auto seg = write_dicom_seg(labels_, files_, provenance_, dir_ / "seg.dcm");
  ASSERT_TRUE(seg) << seg.error().message;
  const auto lesions = summarize_lesions(labels_);
  auto sr = write_dicom_sr(lesions, dir_ / "seg.dcm", provenance_, dir_ / "sr.dcm");
  ASSERT_TRUE(sr) << sr.error().message;
  EXPECT_EQ(dciodvfy_errors(dir_ / "sr.dcm"), "");
  EXPECT_EQ(attribute(dir_ / "sr.dcm", DCM_StudyInstanceUID), attribute(files_.front(), DCM_StudyInstanceUID));
  EXPECT_EQ(attribute(dir_ / "sr.dcm", DCM_PatientID), "p7");
  EXPECT_NE(sr->series_instance_uid, seg->series_instance_uid);

  DcmFileFormat report;
  ASSERT_TRUE(report.loadFile((dir_ / "sr.dcm").c_str()).good());
  std::map<std::string, std::string> numbers;
  numeric_items(*report.getDataset(), numbers);
  ASSERT_TRUE(numbers.count("Volume")) << numbers.size();
  EXPECT_NEAR(std::stod(numbers["Volume"]), lesions.volume_ml, 1e-3);
  EXPECT_EQ(numbers["Number of lesions"], std::to_string(lesions.count));
  // The Segmentation is among the evidence, by its SOP instance.
  DcmItem* evidence = nullptr;
  ASSERT_TRUE(report.getDataset()->findAndGetSequenceItem(DCM_CurrentRequestedProcedureEvidenceSequence, evidence).good());
  bool found = false;
  DcmItem* series = nullptr;
  for (unsigned long i = 0; evidence->findAndGetSequenceItem(DCM_ReferencedSeriesSequence, series, i).good() && series; ++i) {
    DcmItem* instance = nullptr;
    for (unsigned long j = 0; series->findAndGetSequenceItem(DCM_ReferencedSOPSequence, instance, j).good() && instance; ++j) {
      OFString uid;
      instance->findAndGetOFString(DCM_ReferencedSOPInstanceUID, uid);
      found = found || uid.c_str() == seg->sop_instance_uid;
    }
  }
  EXPECT_TRUE(found);
}

TEST_F(DicomResults, WhatCannotBeReferencedIsRefusedByName) {
  // A label map of another place: its pixels fall outside.
  auto elsewhere = labels_;
  elsewhere.geometry.origin[2] += 100;
  auto r = write_dicom_seg(elsewhere, files_, provenance_, dir_ / "seg.dcm");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("lies outside the segmentation"), std::string::npos) << r.error().message;
  EXPECT_FALSE(fs::exists(dir_ / "seg.dcm"));
  // No DICOM slices (a subject from NIfTI), and a file that is not DICOM.
  r = write_dicom_seg(labels_, {}, provenance_, dir_ / "seg.dcm");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("no FLAIR DICOM slices"), std::string::npos);
  std::ofstream(dir_ / "notes.txt") << "not dicom\n";
  auto with_text = files_;
  with_text.push_back(dir_ / "notes.txt");
  r = write_dicom_seg(labels_, with_text, provenance_, dir_ / "seg.dcm");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("notes.txt: cannot read"), std::string::npos) << r.error().message;
  // The same slice twice (an echo or a repeat is not one series to segment).
  auto twice = files_;
  twice.push_back(files_.front());
  r = write_dicom_seg(labels_, twice, provenance_, dir_ / "seg.dcm");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("lie at the same position"), std::string::npos) << r.error().message;
  // A report needs a Segmentation to reference.
  auto sr = write_dicom_sr(summarize_lesions(labels_), files_.front(), provenance_, dir_ / "sr.dcm");
  ASSERT_FALSE(sr);
  EXPECT_NE(sr.error().message.find("not a DICOM Segmentation"), std::string::npos) << sr.error().message;
  EXPECT_FALSE(fs::exists(dir_ / "sr.dcm"));
}

// The Segmentation read back and drawn over its FLAIR slices (issue 31: what a viewer shows): the
// frames with most lesion pixels, every segmented pixel of them red, a PNG of their size.
TEST_F(DicomResults, TheSegmentationIsDrawnOverTheFlairSlicesItReferences) {
  ASSERT_TRUE(write_dicom_seg(labels_, files_, provenance_, dir_ / "seg.dcm"));
  auto drawn = render_seg_over_series(dir_ / "seg.dcm", files_, dir_ / "overlay.png", 2);
  ASSERT_TRUE(drawn) << drawn.error().message;
  // The two slices with most lesion voxels in the truth.
  std::vector<std::size_t> per_slice;
  const auto g = scanner_grid();
  for (std::size_t z = 0; z < g.size[2]; ++z) {
    std::size_t n = 0;
    for (std::size_t y = 0; y < g.size[1]; ++y) {
      for (std::size_t x = 0; x < g.size[0]; ++x) n += lesion_at(x, y, z) ? 1 : 0;
    }
    per_slice.push_back(n);
  }
  std::sort(per_slice.rbegin(), per_slice.rend());
  EXPECT_EQ(*drawn, per_slice[0] + per_slice[1]);
  // A PNG two frames wide: its IHDR says 26 x 11.
  const auto read = files::read_all(dir_ / "overlay.png");
  ASSERT_TRUE(read) << read.error().message;
  const std::string& bytes = *read;
  ASSERT_GT(bytes.size(), 24u);
  EXPECT_EQ(bytes.substr(1, 3), "PNG");
  const auto be32 = [&](std::size_t at) {
    return (std::uint32_t(std::uint8_t(bytes[at])) << 24) | (std::uint32_t(std::uint8_t(bytes[at + 1])) << 16) |
           (std::uint32_t(std::uint8_t(bytes[at + 2])) << 8) | std::uint32_t(std::uint8_t(bytes[at + 3]));
  };
  EXPECT_EQ(be32(16), 26u);
  EXPECT_EQ(be32(20), 11u);
  // A series that is not the one the Segmentation references is refused by name.
  Image other(scanner_grid());
  DicomSeriesTags tags;
  tags.patient_id = "p8";
  ASSERT_TRUE(write_dicom_series(other, dir_ / "other", tags));
  const auto others = scan_dicom(dir_ / "other");
  ASSERT_TRUE(others);
  auto refused = render_seg_over_series(dir_ / "seg.dcm", others->front().files, dir_ / "wrong.png");
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("which is not a slice of the FLAIR series given"), std::string::npos)
      << refused.error().message;
}

}  // namespace
}  // namespace fedda::imaging
