#pragma once
// A segmentation as a hospital's systems read it: the lesion load in numbers, a DICOM
// Segmentation object on the slices of the FLAIR series it was computed on, and a DICOM
// Structured Report (TID 1500 measurement report) of the lesion volume and count that
// references it. DCMTK (dcmseg, dcmsr) stays inside the .cpp. Thread-compatible: no shared state
// beyond DCMTK's UID generator.
//
// The objects' own UIDs (series, instance, the segment's tracking UID) are derived from what the
// result is (the source series, the model's SHA-256, fedda's version and the result's content), in
// the 2.25 form: the same result written again is the same object, so storing it back in a PACS
// again replaces rather than adds.

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/imaging/metrics.h"
#include "fedda/imaging/volume.h"

namespace fedda::imaging {

// What made a result: written into the objects' equipment, algorithm and observer entries.
struct ResultProvenance {
  std::string algorithm = "fedda";  // algorithm and software name
  std::string version;              // fedda's version
  std::string model_sha256;         // of the model file that segmented the scan
  std::string model_name;           // the model file's name, as a person would recognise it
};

struct WrittenObject {
  std::string sop_instance_uid;
  std::string series_instance_uid;
  std::size_t frames = 0;  // a Segmentation's frames (one per source slice); 0 for a report
};

// Writes a binary DICOM Segmentation (one segment: white matter hyperintensity, automatic) of the
// WMH voxels of `labels` onto the slices of `flair_series` (its DICOM files, any order): one frame
// per source slice, its pixels sampled from `labels` by physical position (nearest voxel), so
// `labels` may be in any grid that covers the series, such as the one dcm2niix converted it to.
// Patient, study and frame of reference are the series'; each frame references its source
// slice. Refused, naming the file, when a slice is not an image with position and orientation,
// the slices differ in size, or the label map does not cover them. Written through a temporary
// name.
Result<WrittenObject> write_dicom_seg(const LabelMap& labels, const std::vector<std::filesystem::path>& flair_series,
                                      const ResultProvenance& provenance, const std::filesystem::path& out);

// Writes a TID 1500 measurement report (Enhanced SR) for the segment of the Segmentation at
// `seg`: its total volume in mL and its lesion count, with the device that measured them as the
// observer, in the Segmentation's patient and study. Written through a temporary name.
Result<WrittenObject> write_dicom_sr(const LesionSummary& lesions, const std::filesystem::path& seg,
                                     const ResultProvenance& provenance, const std::filesystem::path& out);

// A Segmentation read back: for each frame, the source slice it references, its plane position
// and its pixels (0 or 1, row by row).
struct SegFrame {
  std::string referenced_sop_instance_uid;
  std::array<double, 3> position{0, 0, 0};  // ImagePositionPatient of the frame
  std::vector<std::uint8_t> pixels;
};
struct SegmentationRead {
  std::string series_instance_uid;
  std::string study_instance_uid;
  std::string frame_of_reference_uid;
  std::size_t rows = 0, columns = 0;
  std::array<double, 2> pixel_spacing{0, 0};       // between rows, between columns (mm)
  std::array<double, 6> orientation{0, 0, 0, 0, 0, 0};  // ImageOrientationPatient
  std::string segment_label;
  std::vector<SegFrame> frames;
};
Result<SegmentationRead> read_dicom_seg(const std::filesystem::path& seg);

// A picture of the Segmentation at `seg` over the FLAIR slices it references (`flair_series`,
// its DICOM files), as a viewer overlays it: the `slices` frames with the most segmented pixels
// side by side in the series' order, each FLAIR slice windowed to its 1st to 99th percentile in
// grey and the segment in red over it; written as PNG (through a temporary name). Returns the
// segmented pixels drawn. Error naming the file when a frame references a slice not in the
// series, the sizes differ, or a slice's pixel data is not uncompressed 16-bit.
Result<std::size_t> render_seg_over_series(const std::filesystem::path& seg,
                                           const std::vector<std::filesystem::path>& flair_series,
                                           const std::filesystem::path& png, int slices = 3);

}  // namespace fedda::imaging
