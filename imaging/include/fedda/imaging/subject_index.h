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
//
// Only paths are returned; nothing is read. Whatever the index leaves out it names, with the
// reason, so a site administrator sees why a scan is not used (fedda-agent check).

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/imaging/dataset.h"

namespace fedda::imaging {

struct DataSource {
  std::string layout = "wmh";       // wmh | bids | datalist
  std::filesystem::path path;       // wmh: the clinic folder; bids: the dataset's root; datalist: the JSON file
  std::string clinic;               // the subjects' clinic name (empty: the folder's name)
  std::map<std::string, std::string> bids_filters;  // entity -> value, e.g. {"acq": "3D", "run": "1"}
  std::string bids_labels;          // the derivatives pipeline holding the labels (empty: none)
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

// Error (naming the path) when the folder or file is missing, unreadable or malformed, or when
// it holds no usable subject; ignored files alone are not an error.
Result<SubjectIndex> index_subjects(const DataSource& source);

// Writes a clinic in the WMH layout (`wmh_clinic`) again in `layout` under `out` (copies; the
// same voxels and headers): bids (a dataset with dataset_description.json, participants.tsv
// and derivatives/wmh/ for the labels) or datalist (imagesTr/, imagesTs/, labelsTr/ and
// dataset.json, nnU-Net's naming). For fedda-sim generate --layout.
Status write_layout(const std::filesystem::path& wmh_clinic, const std::string& layout,
                    const std::filesystem::path& out);

}  // namespace fedda::imaging
