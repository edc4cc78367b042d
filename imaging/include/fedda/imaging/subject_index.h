#pragma once
// A site's subjects, whatever folder layout its scans already have: one index behind the
// agent's check, run and segment, so the rest of fedda never knows the layout.
//
//   wmh       the WMH challenge's: <subject>/pre/FLAIR.nii.gz, pre/T1.nii.gz, wmh.nii.gz
//   bids      a BIDS dataset: sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-..][_acq-..]..._FLAIR.nii.gz
//             and ..._T1w.nii.gz; labels (optional) from derivatives/<pipeline>/, the same
//             subject's and session's ..._mask.nii.gz or ..._dseg.nii.gz. A subject with several
//             sessions is one subject per session ("<label>_ses-<session>") unless a ses filter
//             picks one (subjects without sessions keep their one anat/). bids_filters (acq, ce,
//             rec, run, part, ses) choose between several FLAIR or T1w images of one subject.
//   datalist  a JSON file listing the subjects (paths relative to it), in the shape of
//             nnU-Net's dataset.json and MONAI's datalists:
//               {"modality": {"0": "FLAIR", "1": "T1"},            (or "channel_names"; default this order)
//                "training": [{"image": ["imagesTr/a_0000.nii.gz", "imagesTr/a_0001.nii.gz"],
//                              "label": "labelsTr/a.nii.gz"}, ...],
//                "test": [{"image": [...]}, ...]}
//             an entry may instead name "flair" and "t1"; "subject" (else the FLAIR's file name
//             without its _0000 and extension) is its id.
//   dicom     a folder of DICOM series as a scanner or PACS exports them (any nesting); series
//             grouped into subjects by PatientID, the FLAIR and the T1 chosen by rules on
//             SeriesDescription (dicom_flair, dicom_t1: case-insensitive regular expressions),
//             each checked (missing slices, uneven spacing) and converted once with dcm2niix
//             into the cache, reused while the series is unchanged; labels only from NIfTI
//             (dicom_labels: a folder of <subject>.nii.gz).
//   pacs      a PACS over DICOMweb (pacs.h): the studies it selects, their series that match
//             dicom_flair or dicom_t1, retrieved once into the cache (cache/pacs/) and from
//             there read exactly as the dicom layout reads a folder.
//
// Only paths are returned; nothing is read. Whatever the index leaves out it names, with the
// reason, so a site administrator sees why a scan is not used (fedda-agent check).

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/imaging/dataset.h"
#include "fedda/imaging/pacs.h"

namespace fedda::imaging {

struct DataSource {
  std::string layout = "wmh";       // wmh | bids | datalist | dicom
  std::filesystem::path path;       // wmh: the clinic folder; bids: the dataset's root; datalist: the JSON file
  std::string clinic;               // the subjects' clinic name (empty: the folder's name)
  std::map<std::string, std::string> bids_filters;  // entity -> value, e.g. {"acq": "3D", "run": "1"}
  std::string bids_labels;          // the derivatives pipeline holding the labels (empty: none)
  std::string dicom_flair = "flair";  // dicom: SeriesDescription rule of the FLAIR series
  std::string dicom_t1 = "t1";        // dicom: ... of the T1 series (tried on series the FLAIR rule did not take)
  std::filesystem::path dicom_labels; // dicom: <subject>.nii.gz label maps (empty: none)
  std::filesystem::path cache;        // dicom, pacs: where converted (and retrieved) series are kept (required)
  PacsSource pacs;                    // pacs: the PACS and which studies (path is not used)
};

struct IgnoredFile {
  std::filesystem::path path;
  std::string reason;
};

struct SubjectIndex {
  std::vector<SubjectFiles> subjects;  // sorted by subject id
  std::vector<IgnoredFile> ignored;    // what was found and not used, and why
};

const std::vector<std::string>& data_layouts();
// The BIDS entities bids_filters may name.
const std::vector<std::string>& bids_filter_entities();

// How a clinic folder that fedda-sim generate wrote (any --layout) is read: bids when it holds
// dataset_description.json (labels from derivatives/wmh when present), datalist when it holds
// dataset.json, wmh when a sub-folder has pre/FLAIR.nii.gz, else dicom (labels from labels/).
// Error when the folder is missing. For the local consortium, whose clinics may differ.
Result<DataSource> detect_data_source(const std::filesystem::path& clinic_folder);

// Error (naming the path) when the folder or file is missing, unreadable or malformed, or when
// it holds no usable subject; ignored files alone are not an error.
Result<SubjectIndex> index_subjects(const DataSource& source);

// Writes a clinic in the WMH layout (`wmh_clinic`) again in `layout` under `out` (copies; the
// same voxels and headers): bids (a dataset with dataset_description.json, participants.tsv
// and derivatives/wmh/ for the labels) or datalist (imagesTr/, imagesTs/, labelsTr/ and
// dataset.json, nnU-Net's naming) or dicom (<subject>/FLAIR/ and <subject>/T1/ series with
// the clinic's scanner in their tags, labels/<subject>.nii.gz). For fedda-sim generate --layout.
Status write_layout(const std::filesystem::path& wmh_clinic, const std::string& layout,
                    const std::filesystem::path& out);

}  // namespace fedda::imaging
