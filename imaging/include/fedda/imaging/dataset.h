#pragma once
// Finding subjects in the WMH challenge layout, which users with the real data already have:
//   ROOT/<clinic>/<subject>/pre/FLAIR.nii.gz, pre/T1.nii.gz, wmh.nii.gz (labels, optional)
// Only paths are returned; nothing is read. Thread-safe.

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "fedda/common/result.h"

namespace fedda::imaging {

struct SubjectFiles {
  std::string clinic;
  std::string subject;
  std::filesystem::path flair;
  std::filesystem::path t1;
  std::optional<std::filesystem::path> labels;  // absent for unlabelled subjects
  // data_layout dicom: the FLAIR series' DICOM files (slice order) that `flair` was converted
  // from, which a DICOM Segmentation of the subject references; empty for the other layouts.
  std::vector<std::filesystem::path> flair_dicom;
};

// All subjects of every clinic under `root`, sorted by clinic then subject. A folder under a
// clinic without pre/FLAIR.nii.gz is not a subject and is skipped. Error when `root` is missing
// or holds no subject at all.
Result<std::vector<SubjectFiles>> find_subjects(const std::filesystem::path& root);

// The subjects of one clinic (`root/<clinic>`).
Result<std::vector<SubjectFiles>> find_clinic_subjects(const std::filesystem::path& root,
                                                       const std::string& clinic);

// The paper's two folds of a target clinic: fold 0 adapts on the first half (sorted by
// subject) and tests on the second, fold 1 the other way round.
struct FoldSplit {
  std::vector<SubjectFiles> adapt;
  std::vector<SubjectFiles> test;
};
FoldSplit split_fold(const std::vector<SubjectFiles>& subjects, int fold);

}  // namespace fedda::imaging
