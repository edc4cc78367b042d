#include "fedda/imaging/dicom_results.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>

// DCMTK: osconfig.h first, as it requires.
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmfg/fgderimg.h"
#include "dcmtk/dcmfg/fgfracon.h"
#include "dcmtk/dcmfg/fgpixmsr.h"
#include "dcmtk/dcmfg/fgplanor.h"
#include "dcmtk/dcmfg/fgplanpo.h"
#include "dcmtk/dcmiod/iodreferences.h"
#include "dcmtk/dcmiod/modcommoninstanceref.h"
#include "dcmtk/dcmseg/segdoc.h"
#include "dcmtk/dcmseg/segment.h"
#include "dcmtk/dcmsr/cmr/tid1500.h"
#include "dcmtk/dcmsr/codes/ucum.h"
#include "dcmtk/dcmsr/dsrdoc.h"
#include "dcmtk/oflog/oflog.h"

#include "fedda/common/crypto.h"
#include "fedda/common/files.h"
#include "fedda/imaging/png.h"

namespace fedda::imaging {
namespace fs = std::filesystem;

namespace {

// The codes the objects carry (DICOM PS3.16): the segment is a lesion (CID 7150/7159) of the
// cerebral white matter; the report's finding is the DICOM concept of a white matter T2
// hyperintensity (CID 7140).
const char* const kSct = "SCT";
const char* const kDcm = "DCM";

// DCMTK logs its warnings (a dimension check it skips, a value it trims) on stderr; what matters
// comes back as conditions, so only its errors are let through.
void quiet_dcmtk() {
  static const bool once = [] {
    OFLog::configure(OFLogger::ERROR_LOG_LEVEL);
    return true;
  }();
  (void)once;
}

std::string text(DcmItem& item, const DcmTagKey& tag, unsigned long position = 0) {
  OFString value;
  item.findAndGetOFString(tag, value, position);
  return value.c_str();
}

std::array<double, 3> position_of(DcmItem& item) {
  std::array<double, 3> p{0, 0, 0};
  for (unsigned long i = 0; i < 3; ++i) {
    Float64 v = 0;
    item.findAndGetFloat64(DCM_ImagePositionPatient, v, i);
    p[i] = v;
  }
  return p;
}

// An OFCondition that failed, as an error naming what was being done.
Error dcmtk_error(const std::string& what, const OFCondition& c) { return Error{what + ": " + c.text()}; }

// The source slices of a series, loaded and checked, in order along their normal.
struct SourceSlice {
  fs::path file;
  std::unique_ptr<DcmFileFormat> dicom;
  DcmDataset* dataset = nullptr;
  std::array<double, 3> position{0, 0, 0};
  double along_normal = 0;
};

struct SourceSeries {
  std::vector<SourceSlice> slices;
  Uint16 rows = 0, columns = 0;
  std::array<double, 6> orientation{0, 0, 0, 0, 0, 0};
  std::array<double, 2> spacing{0, 0};  // between rows, between columns
};

Result<SourceSeries> load_series(const std::vector<fs::path>& files) {
  quiet_dcmtk();
  if (files.empty()) return make_error("no FLAIR DICOM slices to reference (the subject did not come from DICOM)");
  SourceSeries series;
  for (const auto& file : files) {
    SourceSlice s;
    s.file = file;
    s.dicom = std::make_unique<DcmFileFormat>();
    if (auto c = s.dicom->loadFile(file.c_str()); c.bad()) return dcmtk_error(file.string() + ": cannot read", c);
    s.dataset = s.dicom->getDataset();
    Uint16 rows = 0, columns = 0;
    Float64 orientation[6] = {0, 0, 0, 0, 0, 0}, spacing[2] = {0, 0};
    bool complete = s.dataset->findAndGetUint16(DCM_Rows, rows).good() &&
                    s.dataset->findAndGetUint16(DCM_Columns, columns).good() && rows > 0 && columns > 0;
    for (unsigned long i = 0; complete && i < 6; ++i) complete = s.dataset->findAndGetFloat64(DCM_ImageOrientationPatient, orientation[i], i).good();
    for (unsigned long i = 0; complete && i < 2; ++i) complete = s.dataset->findAndGetFloat64(DCM_PixelSpacing, spacing[i], i).good();
    Float64 any = 0;
    complete = complete && s.dataset->findAndGetFloat64(DCM_ImagePositionPatient, any, 2).good();
    if (!complete) {
      return make_error(file.string() + ": not an image slice with Rows, Columns, ImagePositionPatient, "
                        "ImageOrientationPatient and PixelSpacing");
    }
    if (series.slices.empty()) {
      series.rows = rows;
      series.columns = columns;
      std::copy(orientation, orientation + 6, series.orientation.begin());
      std::copy(spacing, spacing + 2, series.spacing.begin());
    } else if (rows != series.rows || columns != series.columns) {
      return make_error(file.string() + ": " + std::to_string(rows) + "x" + std::to_string(columns) +
                        " pixels where the series' first slice has " + std::to_string(series.rows) + "x" +
                        std::to_string(series.columns));
    } else {
      // One Segmentation's frames share one orientation and pixel spacing.
      for (int i = 0; i < 6; ++i) {
        if (std::abs(orientation[i] - series.orientation[i]) > 1e-4) {
          return make_error(file.string() + ": ImageOrientationPatient differs from the series' first slice");
        }
      }
      for (int i = 0; i < 2; ++i) {
        if (std::abs(spacing[i] - series.spacing[i]) > 1e-4 * std::max(1.0, series.spacing[i])) {
          return make_error(file.string() + ": PixelSpacing differs from the series' first slice");
        }
      }
    }
    s.position = position_of(*s.dataset);
    series.slices.push_back(std::move(s));
  }
  const auto& o = series.orientation;
  const std::array<double, 3> normal = {o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]};
  for (auto& s : series.slices) s.along_normal = s.position[0] * normal[0] + s.position[1] * normal[1] + s.position[2] * normal[2];
  std::sort(series.slices.begin(), series.slices.end(),
            [](const SourceSlice& a, const SourceSlice& b) { return a.along_normal < b.along_normal; });
  for (std::size_t i = 1; i < series.slices.size(); ++i) {
    if (series.slices[i].along_normal - series.slices[i - 1].along_normal < 1e-3) {
      return make_error(series.slices[i].file.string() + " and " + series.slices[i - 1].file.string() +
                        " lie at the same position (echoes or repeats are not one series to segment)");
    }
  }
  return series;
}

// The physical position of pixel (row, column) of a slice at `position` (DICOM: the first three
// orientation cosines are the direction along a row, i.e. of increasing column).
std::array<double, 3> pixel_position(const SourceSeries& series, const std::array<double, 3>& position, std::size_t row,
                                     std::size_t column) {
  const auto& o = series.orientation;
  std::array<double, 3> p{};
  for (int i = 0; i < 3; ++i) {
    p[i] = position[i] + o[i] * series.spacing[1] * static_cast<double>(column) +
           o[3 + i] * series.spacing[0] * static_cast<double>(row);
  }
  return p;
}

// One frame per source slice: 1 where the nearest voxel of `labels` is WMH. Error when a pixel
// falls outside the label map (by more than rounding).
Result<std::vector<std::vector<Uint8>>> sample_frames(const LabelMap& labels, const SourceSeries& series) {
  std::vector<std::vector<Uint8>> frames;
  const auto& size = labels.geometry.size;
  for (const auto& slice : series.slices) {
    std::vector<Uint8> frame(static_cast<std::size_t>(series.rows) * series.columns, 0);
    for (std::size_t r = 0; r < series.rows; ++r) {
      for (std::size_t c = 0; c < series.columns; ++c) {
        const auto i = labels.geometry.to_index(pixel_position(series, slice.position, r, c));
        const long x = std::lround(i[0]), y = std::lround(i[1]), z = std::lround(i[2]);
        if (x < 0 || y < 0 || z < 0 || x >= static_cast<long>(size[0]) || y >= static_cast<long>(size[1]) ||
            z >= static_cast<long>(size[2])) {
          return make_error(slice.file.string() + ": pixel (" + std::to_string(r) + ", " + std::to_string(c) +
                            ") lies outside the segmentation (" + labels.geometry.describe() +
                            "): the label map was not computed on this series");
        }
        frame[r * series.columns + c] = labels.at(x, y, z) == kWmh;
      }
    }
    frames.push_back(std::move(frame));
  }
  return frames;
}

// Binary Pixel Data, frames one after another, bits packed contiguously with the first pixel in
// the lowest bit (PS3.5 8.1.1). Written by fedda rather than left to DCMTK 3.6.7, whose packing
// is wrong when a frame's pixel count is not a multiple of 8 (DCMTK issue #1132, fixed in 3.6.9).
std::vector<Uint8> pack_frames(const std::vector<std::vector<Uint8>>& frames) {
  const std::size_t per_frame = frames.empty() ? 0 : frames.front().size();
  std::vector<Uint8> packed((per_frame * frames.size() + 7) / 8, 0);
  for (std::size_t f = 0; f < frames.size(); ++f) {
    for (std::size_t p = 0; p < per_frame; ++p) {
      if (frames[f][p]) {
        const std::size_t bit = f * per_frame + p;
        packed[bit >> 3] = static_cast<Uint8>(packed[bit >> 3] | (1u << (bit & 7)));
      }
    }
  }
  return packed;
}

// A UID of the 2.25 form (PS3.5 B.2: a UUID written as one decimal integer) derived from
// `name`: the first 128 bits of its SHA-256, with the version and variant bits of an RFC 9562
// UUIDv8. The same result of the same model on the same series gets the same UIDs, so a PACS it
// is stored in again keeps one copy: write-back replaces rather than adds.
std::string derived_uid(const std::string& name) {
  const auto hex = crypto::sha256_hex(name);
  std::array<unsigned, 16> bytes{};
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  bytes[6] = (bytes[6] & 0x0f) | 0x80;  // version 8
  bytes[8] = (bytes[8] & 0x3f) | 0x80;  // variant 10
  std::string digits;
  for (;;) {  // the 128-bit big-endian number divided by 10 until nothing is left
    unsigned remainder = 0;
    bool zero = true;
    for (auto& b : bytes) {
      const unsigned value = remainder * 256 + b;
      b = value / 10;
      remainder = value % 10;
      zero = zero && b == 0;
    }
    digits.insert(digits.begin(), static_cast<char>('0' + remainder));
    if (zero) break;
  }
  return "2.25." + digits;
}

// What a result's UIDs are derived from: its kind, what it was computed from and its content.
std::string result_identity(const std::string& kind, const std::string& source, const ResultProvenance& provenance,
                            const std::string& content) {
  return "fedda " + kind + "|" + source + "|" + provenance.model_sha256 + "|" + provenance.version + "|" +
         crypto::sha256_hex(content);
}

// The object's series and instance UIDs, set to those derived from `identity`.
Status set_derived_uids(DcmDataset& dataset, const std::string& identity, const std::string& what) {
  const auto series = derived_uid(identity + "|series"), instance = derived_uid(identity + "|instance");
  if (dataset.putAndInsertString(DCM_SeriesInstanceUID, series.c_str()).bad() ||
      dataset.putAndInsertString(DCM_SOPInstanceUID, instance.c_str()).bad()) {
    return make_error(what + ": cannot set its UIDs");
  }
  return Status::success();
}

std::string series_number_after(DcmItem& source, int offset) {
  long number = 0;
  try {
    number = std::stol(text(source, DCM_SeriesNumber));
  } catch (...) {
  }
  return std::to_string(number + offset);
}

Result<WrittenObject> save(DcmFileFormat& file, const fs::path& out, std::size_t frames) {
  auto st = files::write_via_temporary(out, [&](const fs::path& temporary) -> Status {
    if (auto c = file.saveFile(temporary.c_str(), EXS_LittleEndianExplicit); c.bad()) return dcmtk_error(out.string() + ": cannot write", c);
    return Status::success();
  });
  if (!st) return st.error();
  WrittenObject w;
  w.sop_instance_uid = text(*file.getDataset(), DCM_SOPInstanceUID);
  w.series_instance_uid = text(*file.getDataset(), DCM_SeriesInstanceUID);
  w.frames = frames;
  return w;
}

// A condition as a Status, naming the step.
#define FEDDA_DCMTK(step, call)                                       \
  do {                                                                \
    if (const OFCondition c_ = (call); c_.bad()) return dcmtk_error(step, c_); \
  } while (0)

}  // namespace

Result<WrittenObject> write_dicom_seg(const LabelMap& labels, const std::vector<fs::path>& flair_series,
                                      const ResultProvenance& provenance, const fs::path& out) {
  auto series = load_series(flair_series);
  if (!series) return series.error();
  auto frames = sample_frames(labels, *series);
  if (!frames) return frames.error();
  DcmDataset& first = *series->slices.front().dataset;
  const std::string what = out.string();

  IODGeneralEquipmentModule::EquipmentInfo equipment(provenance.algorithm.c_str(), "fedda-agent",
                                                     provenance.model_sha256.substr(0, 64).c_str(),
                                                     provenance.version.c_str());
  ContentIdentificationMacro content("1", "WMH", "White matter hyperintensity segmentation", "");
  DcmSegmentation* created = nullptr;
  FEDDA_DCMTK(what + ": creating the Segmentation",
              DcmSegmentation::createBinarySegmentation(created, series->rows, series->columns, equipment, content));
  std::unique_ptr<DcmSegmentation> seg(created);
  FEDDA_DCMTK(what + ": patient, study and frame of reference of " + series->slices.front().file.string(),
              seg->importFromSourceImage(first));
  FEDDA_DCMTK(what, seg->getSeries().setSeriesNumber(series_number_after(first, 1000).c_str()));
  FEDDA_DCMTK(what, seg->getSeries().setSeriesDescription("WMH segmentation (fedda)"));

  DcmSegment* segment = nullptr;
  FEDDA_DCMTK(what + ": the segment",
              DcmSegment::create(segment, "WMH", CodeSequenceMacro("49755003", kSct, "Morphologically Abnormal Structure"),
                                 CodeSequenceMacro("52988006", kSct, "Lesion"), DcmSegTypes::SAT_AUTOMATIC,
                                 provenance.algorithm.c_str()));
  std::unique_ptr<DcmSegment> owned_segment(segment);
  FEDDA_DCMTK(what, segment->setSegmentDescription("White matter hyperintensity"));
  FEDDA_DCMTK(what, segment->getGeneralAnatomyCode().getAnatomicRegion().set("68523003", kSct, "Cerebral white matter"));
  auto& algorithm = segment->getSegmentationAlgorithmIdentification();
  FEDDA_DCMTK(what, algorithm.getAlgorithmFamilyCode().set("123110", kDcm, "Artificial Intelligence"));
  FEDDA_DCMTK(what, algorithm.setAlgorithmName((provenance.algorithm + " " + provenance.model_name).substr(0, 64).c_str()));
  FEDDA_DCMTK(what, algorithm.setAlgorithmVersion(provenance.version.c_str()));
  FEDDA_DCMTK(what, algorithm.setAlgorithmParameters(("model sha256 " + provenance.model_sha256).c_str()));
  std::string segmented;  // the frames' pixels, for the UIDs
  for (const auto& frame : *frames) segmented.append(reinterpret_cast<const char*>(frame.data()), frame.size());
  const auto identity = result_identity("segmentation", text(first, DCM_SeriesInstanceUID), provenance, segmented);
  FEDDA_DCMTK(what, segment->setTrackingID("WMH"));
  FEDDA_DCMTK(what, segment->setTrackingUID(derived_uid(identity + "|tracking").c_str()));
  Uint16 segment_number = 0;
  FEDDA_DCMTK(what + ": adding the segment", seg->addSegment(owned_segment.get(), segment_number));
  owned_segment.release();  // the Segmentation owns it now

  FGPixelMeasures measures;
  FEDDA_DCMTK(what, measures.setPixelSpacing((text(first, DCM_PixelSpacing, 0) + "\\" + text(first, DCM_PixelSpacing, 1)).c_str()));
  const auto thickness = text(first, DCM_SliceThickness);
  if (!thickness.empty()) FEDDA_DCMTK(what, measures.setSliceThickness(thickness.c_str()));
  FEDDA_DCMTK(what, seg->addForAllFrames(measures));
  FGPlaneOrientationPatient orientation;
  FEDDA_DCMTK(what, orientation.setImageOrientationPatient(
                        text(first, DCM_ImageOrientationPatient, 0).c_str(), text(first, DCM_ImageOrientationPatient, 1).c_str(),
                        text(first, DCM_ImageOrientationPatient, 2).c_str(), text(first, DCM_ImageOrientationPatient, 3).c_str(),
                        text(first, DCM_ImageOrientationPatient, 4).c_str(), text(first, DCM_ImageOrientationPatient, 5).c_str()));
  FEDDA_DCMTK(what, seg->addForAllFrames(orientation));

  const OFString organisation = derived_uid(identity + "|dimensions").c_str();
  auto& dimensions = seg->getDimensions();
  FEDDA_DCMTK(what, dimensions.addDimensionIndex(DCM_ReferencedSegmentNumber, organisation, DCM_SegmentIdentificationSequence,
                                                 "ReferencedSegmentNumber"));
  FEDDA_DCMTK(what, dimensions.addDimensionIndex(DCM_ImagePositionPatient, organisation, DCM_PlanePositionSequence,
                                                 "ImagePositionPatient"));

  const CodeSequenceMacro purpose("121322", kDcm, "Source image for image processing operation");
  IODReferences references;
  for (std::size_t i = 0; i < series->slices.size(); ++i) {
    DcmDataset& slice = *series->slices[i].dataset;
    const std::string where = series->slices[i].file.string();
    FGPlanePosPatient position;
    FEDDA_DCMTK(where, position.setImagePositionPatient(text(slice, DCM_ImagePositionPatient, 0).c_str(),
                                                        text(slice, DCM_ImagePositionPatient, 1).c_str(),
                                                        text(slice, DCM_ImagePositionPatient, 2).c_str()));
    FGFrameContent content_of_frame;
    FEDDA_DCMTK(where, content_of_frame.setDimensionIndexValues(segment_number, 0));
    FEDDA_DCMTK(where, content_of_frame.setDimensionIndexValues(static_cast<Uint32>(i + 1), 1));
    FGDerivationImage derivation;
    DerivationImageItem* derivation_item = nullptr;
    FEDDA_DCMTK(where, derivation.addDerivationImageItem(CodeSequenceMacro("113076", kDcm, "Segmentation"), "", derivation_item));
    SourceImageItem* source_item = nullptr;
    FEDDA_DCMTK(where + ": referencing it", derivation_item->addSourceImageItem(&slice, purpose, source_item));
    OFVector<FGBase*> per_frame;
    per_frame.push_back(&position);
    per_frame.push_back(&content_of_frame);
    per_frame.push_back(&derivation);
    FEDDA_DCMTK(where + ": adding its frame", seg->addFrame((*frames)[i].data(), segment_number, per_frame));
    auto reference = std::make_unique<IODImageReference>(
        text(slice, DCM_PatientID).c_str(), text(slice, DCM_StudyInstanceUID).c_str(), text(slice, DCM_SeriesInstanceUID).c_str(),
        text(slice, DCM_SOPInstanceUID).c_str(), text(slice, DCM_SOPClassUID).c_str());
    if (!references.add(reference.get())) return make_error(where + ": its UIDs cannot be referenced (one is empty or invalid)");
    reference.release();  // the references own it now
  }
  if (seg->getCommonInstanceReference().addReferences(references, text(first, DCM_StudyInstanceUID).c_str()) != series->slices.size()) {
    return make_error(what + ": not every slice could be listed in the Common Instance Reference");
  }

  DcmFileFormat file;
  FEDDA_DCMTK(what + ": encoding", seg->writeDataset(*file.getDataset()));
  const auto packed = pack_frames(*frames);
  FEDDA_DCMTK(what + ": pixel data", file.getDataset()->putAndInsertUint8Array(DCM_PixelData, packed.data(),
                                                                               static_cast<unsigned long>(packed.size())));
  if (auto st = set_derived_uids(*file.getDataset(), identity, what); !st) return st.error();
  return save(file, out, frames->size());
}

Result<WrittenObject> write_dicom_sr(const LesionSummary& lesions, const fs::path& seg_path,
                                     const ResultProvenance& provenance, const fs::path& out) {
  quiet_dcmtk();
  const std::string what = out.string();
  DcmFileFormat seg_file;
  if (auto c = seg_file.loadFile(seg_path.c_str()); c.bad()) return dcmtk_error(seg_path.string() + ": cannot read", c);
  DcmDataset& seg = *seg_file.getDataset();
  if (text(seg, DCM_SOPClassUID) != UID_SegmentationStorage) return make_error(seg_path.string() + ": not a DICOM Segmentation");
  // The source series and its instances, from the Segmentation's references.
  DcmItem* referenced_series = nullptr;
  if (seg.findAndGetSequenceItem(DCM_ReferencedSeriesSequence, referenced_series, 0).bad() || !referenced_series) {
    return make_error(seg_path.string() + ": names no referenced series (ReferencedSeriesSequence)");
  }
  const std::string source_series = text(*referenced_series, DCM_SeriesInstanceUID);

  TID1500_MeasurementReport report(CMR_CID7021::ImagingMeasurementReport);
  FEDDA_DCMTK(what, report.setLanguage(CID5000_Languages::English, CID5001_Countries::UnitedStates));
  char value[64];
  std::snprintf(value, sizeof value, "%.3f ml, %u lesions", lesions.volume_ml, lesions.count);
  const auto identity = result_identity("measurement report", text(seg, DCM_SOPInstanceUID), provenance, value);
  FEDDA_DCMTK(what + ": the device observer",
              report.getObservationContext().addDeviceObserver(derived_uid(identity + "|observer").c_str(), "fedda-agent",
                                                               provenance.algorithm.c_str(), "fedda-agent",
                                                               provenance.model_sha256.substr(0, 64).c_str()));
  FEDDA_DCMTK(what, report.addProcedureReported(DSRCodedEntryValue("24590-2", "LN", "MR Brain")));
  auto& volumetric = report.getVolumetricROIMeasurements();
  FEDDA_DCMTK(what, volumetric.setTrackingIdentifier("WMH"));
  FEDDA_DCMTK(what, volumetric.setFinding(DSRBasicCodedEntry("110702", kDcm, "White Matter T2 Hyperintensity")));
  FEDDA_DCMTK(what + ": referencing " + seg_path.string(), volumetric.setReferencedSegment(seg, 1, OFTrue));
  FEDDA_DCMTK(what, volumetric.setSourceSeriesForSegmentation(source_series.c_str()));
  FEDDA_DCMTK(what, volumetric.addFindingSite(DSRBasicCodedEntry("68523003", kSct, "Cerebral white matter")));
  std::snprintf(value, sizeof value, "%.3f", lesions.volume_ml);
  FEDDA_DCMTK(what + ": the volume",
              volumetric.addMeasurement(CMR_CID7469::Volume, CMR_TID1411_in_TID1500::MeasurementValue(
                                                                 value, CMR_CID7181(DSRCodedEntryValue(CODE_UCUM_ml)))));
  FEDDA_DCMTK(what, volumetric.getMeasurement().setAlgorithmIdentification(provenance.algorithm.c_str(), provenance.version.c_str()));
  std::snprintf(value, sizeof value, "%u", lesions.count);
  FEDDA_DCMTK(what + ": the lesion count",
              volumetric.addMeasurement(CMR_CID7469(DSRCodedEntryValue("246206008", kSct, "Number of lesions")),
                                        CMR_TID1411_in_TID1500::MeasurementValue(
                                            value, CMR_CID7181(DSRCodedEntryValue("{lesions}", "UCUM", "lesions")))));
  FEDDA_DCMTK(what, volumetric.getMeasurement().setAlgorithmIdentification(provenance.algorithm.c_str(), provenance.version.c_str()));
  if (!report.isValid()) return make_error(what + ": the measurement report is incomplete (TID 1500 not valid)");

  DSRDocument document;
  FEDDA_DCMTK(what, document.setTreeFromRootTemplate(report, OFTrue));
  FEDDA_DCMTK(what + ": patient and study of " + seg_path.string(), document.readStudyData(seg));
  document.createNewSeries();
  FEDDA_DCMTK(what, document.setSeriesNumber(series_number_after(seg, 1).c_str()));
  FEDDA_DCMTK(what, document.setSeriesDescription("WMH measurements (fedda)"));
  FEDDA_DCMTK(what, document.setManufacturer(provenance.algorithm.c_str()));
  auto& evidence = document.getCurrentRequestedProcedureEvidence();
  FEDDA_DCMTK(what, evidence.addItem(seg));
  const std::string study = text(seg, DCM_StudyInstanceUID);
  DcmItem* instance = nullptr;
  for (unsigned long i = 0; referenced_series->findAndGetSequenceItem(DCM_ReferencedInstanceSequence, instance, i).good() && instance; ++i) {
    FEDDA_DCMTK(what + ": evidence", evidence.addItem(study.c_str(), source_series.c_str(), text(*instance, DCM_ReferencedSOPClassUID).c_str(),
                                                      text(*instance, DCM_ReferencedSOPInstanceUID).c_str()));
  }
  DcmFileFormat file;
  FEDDA_DCMTK(what + ": encoding", document.write(*file.getDataset()));
  if (auto st = set_derived_uids(*file.getDataset(), identity, what); !st) return st.error();
  return save(file, out, 0);
}

Result<SegmentationRead> read_dicom_seg(const fs::path& path) {
  quiet_dcmtk();
  DcmFileFormat file;
  if (auto c = file.loadFile(path.c_str()); c.bad()) return dcmtk_error(path.string() + ": cannot read", c);
  DcmDataset& dataset = *file.getDataset();
  SegmentationRead out;
  Uint16 rows = 0, columns = 0;
  dataset.findAndGetUint16(DCM_Rows, rows);
  dataset.findAndGetUint16(DCM_Columns, columns);
  out.rows = rows;
  out.columns = columns;
  out.series_instance_uid = text(dataset, DCM_SeriesInstanceUID);
  out.study_instance_uid = text(dataset, DCM_StudyInstanceUID);
  out.frame_of_reference_uid = text(dataset, DCM_FrameOfReferenceUID);
  DcmSegmentation* loaded = nullptr;
  const OFCondition condition = DcmSegmentation::loadDataset(dataset, loaded);
  std::unique_ptr<DcmSegmentation> seg(loaded);  // handed back even when reading it failed
  if (condition.bad()) return dcmtk_error(path.string() + ": not a DICOM Segmentation DCMTK reads", condition);
  if (seg->getSegmentationType() != DcmSegTypes::ST_BINARY) return make_error(path.string() + ": not a binary Segmentation");
  if (auto* segment = seg->getSegment(1)) {
    OFString label;
    segment->getSegmentLabel(label);
    out.segment_label = label.c_str();
  }
  const Uint8* pixels = nullptr;
  unsigned long bytes = 0;
  FEDDA_DCMTK(path.string() + ": pixel data", dataset.findAndGetUint8Array(DCM_PixelData, pixels, &bytes));
  const std::size_t per_frame = static_cast<std::size_t>(rows) * columns, count = seg->getNumberOfFrames();
  if (bytes * 8 < per_frame * count) return make_error(path.string() + ": pixel data shorter than its frames");
  auto& groups = seg->getFunctionalGroups();
  if (auto* measures = dynamic_cast<FGPixelMeasures*>(groups.get(0, DcmFGTypes::EFG_PIXELMEASURES))) {
    for (unsigned long i = 0; i < 2; ++i) measures->getPixelSpacing(out.pixel_spacing[i], i);
  }
  if (auto* orientation = dynamic_cast<FGPlaneOrientationPatient*>(groups.get(0, DcmFGTypes::EFG_PLANEORIENTPATIENT))) {
    auto& o = out.orientation;
    orientation->getImageOrientationPatient(o[0], o[1], o[2], o[3], o[4], o[5]);
  }
  for (std::size_t f = 0; f < count; ++f) {
    SegFrame frame;
    if (auto* position = dynamic_cast<FGPlanePosPatient*>(groups.get(static_cast<Uint32>(f), DcmFGTypes::EFG_PLANEPOSPATIENT))) {
      position->getImagePositionPatient(frame.position[0], frame.position[1], frame.position[2]);
    }
    if (auto* derivation = dynamic_cast<FGDerivationImage*>(groups.get(static_cast<Uint32>(f), DcmFGTypes::EFG_DERIVATIONIMAGE))) {
      auto& items = derivation->getDerivationImageItems();
      if (!items.empty() && !items.front()->getSourceImageItems().empty()) {
        OFString sop;
        items.front()->getSourceImageItems().front()->getImageSOPInstanceReference().getReferencedSOPInstanceUID(sop);
        frame.referenced_sop_instance_uid = sop.c_str();
      }
    }
    frame.pixels.resize(per_frame);
    for (std::size_t p = 0; p < per_frame; ++p) {
      const std::size_t bit = f * per_frame + p;
      frame.pixels[p] = (pixels[bit >> 3] >> (bit & 7)) & 1u;
    }
    out.frames.push_back(std::move(frame));
  }
  return out;
}

Result<std::size_t> render_seg_over_series(const fs::path& seg_path, const std::vector<fs::path>& flair_series,
                                           const fs::path& png, int slices) {
  auto seg = read_dicom_seg(seg_path);
  if (!seg) return seg.error();
  auto series = load_series(flair_series);
  if (!series) return series.error();
  std::map<std::string, const SourceSlice*> by_uid;
  for (const auto& slice : series->slices) by_uid[text(*slice.dataset, DCM_SOPInstanceUID)] = &slice;
  if (seg->rows != series->rows || seg->columns != series->columns) {
    return make_error(seg_path.string() + ": " + std::to_string(seg->rows) + "x" + std::to_string(seg->columns) +
                      " pixels where its FLAIR series has " + std::to_string(series->rows) + "x" + std::to_string(series->columns));
  }
  // The frames with the most segmented pixels, drawn in the series' order.
  std::vector<std::pair<std::size_t, const SegFrame*>> ranked;
  for (const auto& frame : seg->frames) {
    if (!by_uid.count(frame.referenced_sop_instance_uid)) {
      return make_error(seg_path.string() + ": a frame references " + frame.referenced_sop_instance_uid +
                        ", which is not a slice of the FLAIR series given");
    }
    ranked.emplace_back(static_cast<std::size_t>(std::count(frame.pixels.begin(), frame.pixels.end(), 1)), &frame);
  }
  std::stable_sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  ranked.resize(std::min<std::size_t>(ranked.size(), static_cast<std::size_t>(std::max(1, slices))));
  const auto along = [&](const SegFrame* f) { return by_uid.at(f->referenced_sop_instance_uid)->along_normal; };
  std::sort(ranked.begin(), ranked.end(), [&](const auto& a, const auto& b) { return along(a.second) < along(b.second); });
  if (ranked.empty()) return make_error(seg_path.string() + ": has no frames");

  const std::size_t rows = seg->rows, columns = seg->columns;
  RgbPicture picture(columns * ranked.size(), rows);
  std::size_t drawn = 0;
  for (std::size_t k = 0; k < ranked.size(); ++k) {
    const auto& frame = *ranked[k].second;
    DcmDataset& slice = *by_uid.at(frame.referenced_sop_instance_uid)->dataset;
    const auto where = by_uid.at(frame.referenced_sop_instance_uid)->file.string();
    Uint16 bits = 0, representation = 0;
    slice.findAndGetUint16(DCM_BitsAllocated, bits);
    slice.findAndGetUint16(DCM_PixelRepresentation, representation);
    const Uint16* raw = nullptr;
    unsigned long count = 0;
    if (bits != 16 || slice.findAndGetUint16Array(DCM_PixelData, raw, &count).bad() || count < rows * columns) {
      return make_error(where + ": not uncompressed 16-bit pixel data (the rendering reads no other)");
    }
    std::vector<double> values(rows * columns);
    for (std::size_t p = 0; p < values.size(); ++p) {
      values[p] = representation == 1 ? static_cast<double>(static_cast<Sint16>(raw[p])) : static_cast<double>(raw[p]);
    }
    auto sorted = values;  // windowed to the slice's 1st to 99th percentile, as a viewer's automatic window
    std::sort(sorted.begin(), sorted.end());
    const double low = sorted[sorted.size() / 100], high = std::max(low + 1e-6, sorted[sorted.size() * 99 / 100]);
    for (std::size_t y = 0; y < rows; ++y) {
      for (std::size_t x = 0; x < columns; ++x) {
        const double grey = std::clamp((values[y * columns + x] - low) / (high - low), 0.0, 1.0) * 255.0;
        const auto g = static_cast<std::uint8_t>(std::lround(grey));
        if (frame.pixels[y * columns + x]) {  // the segment in red, the FLAIR showing through
          picture.set(k * columns + x, y, static_cast<std::uint8_t>(std::lround(0.35 * grey + 0.65 * 255)),
                      static_cast<std::uint8_t>(std::lround(0.35 * grey)), static_cast<std::uint8_t>(std::lround(0.35 * grey)));
          ++drawn;
        } else {
          picture.set(k * columns + x, y, g, g, g);
        }
      }
    }
  }
  if (auto st = write_png(png, picture); !st) return st.error();
  return drawn;
}

}  // namespace fedda::imaging
