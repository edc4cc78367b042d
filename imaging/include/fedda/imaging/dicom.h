#pragma once
// DICOM series as a scanner exports them: written (for the simulator), found and checked (for a
// site's data_layout: dicom), and converted once to NIfTI with Debian's dcm2niix. GDCM (through
// ITK) stays inside the .cpp.

#include <filesystem>
#include <string>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/imaging/volume.h"

namespace fedda::imaging {

struct DicomSeriesTags {
  std::string patient_id;          // also the subject id a site's index gives the series
  std::string patient_name;        // PatientName (PN, e.g. "AMSTERDAM^100"); empty: the patient id
  std::string study_uid;           // empty: one is made (give a subject's series one, new_dicom_uid())
  std::string accession_number;    // AccessionNumber of the study, as a PACS finds it (empty: none)
  std::string frame_of_reference_uid;  // empty: one is made (a subject's series in one space share one)
  std::string series_description;  // what site.yaml's rules match (e.g. "AX FLAIR", "T1 MPRAGE")
  int series_number = 1;
  std::string manufacturer;        // e.g. "GE MEDICAL SYSTEMS"
  std::string model;               // e.g. "Signa HDxt"
  double field_strength_t = 0;     // MagneticFieldStrength
  // The acquisition, as MR Image Storage requires it: ScanningSequence and SequenceVariant
  // (defined terms), MRAcquisitionType, and times in ms (0: the inversion time is not sent).
  std::string scanning_sequence = "SE";
  std::string sequence_variant = "NONE";
  std::string acquisition_type = "2D";
  double repetition_time_ms = 500, echo_time_ms = 15, inversion_time_ms = 0;
};

// A new DICOM UID (GDCM's generator, under its root).
std::string new_dicom_uid();

// Writes `image` as an MR series, one file per slice along its third axis (IM0001.dcm, ...),
// 16-bit with a rescale slope and intercept (values come back within half a slope), with the
// image's spacing, slice thickness, origin and direction in the position and orientation tags.
Status write_dicom_series(const Image& image, const std::filesystem::path& dir, const DicomSeriesTags& tags);

struct DicomSeries {
  std::string uid;          // SeriesInstanceUID
  std::string patient_id;
  std::string description;  // SeriesDescription
  int number = 0;           // SeriesNumber
  std::vector<std::filesystem::path> files;  // in slice order
  std::string problem;      // empty when usable; else why not ("slice missing between ...")
};

// Every series in the DICOM files under `root` (any nesting; files that are not DICOM are
// skipped), grouped by SeriesInstanceUID, sorted by patient then series number, each checked:
// one orientation, distinct positions, even slice spacing (a gap of about twice the spacing is
// named as a missing slice).
Result<std::vector<DicomSeries>> scan_dicom(const std::filesystem::path& root);

// Converts one series with dcm2niix into `nifti` (a .nii.gz path), through a temporary name.
// Reused without running dcm2niix again while the series' files (names, sizes, times) are the
// same: a stamp beside the output remembers them.
Status convert_dicom_series(const DicomSeries& series, const std::filesystem::path& nifti);

}  // namespace fedda::imaging
