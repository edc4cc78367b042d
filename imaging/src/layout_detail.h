#pragma once
// Private to fedda::imaging: the pieces the WMH reader (dataset.cpp), the subject index
// (subject_index.cpp), NIfTI I/O and the DICOM conversion share.

#include <filesystem>
#include <string>
#include <vector>

#include "fedda/imaging/dataset.h"
#include "fedda/imaging/subject_index.h"

namespace fedda::imaging::detail {

// .nii or .nii.gz (nifti_io.cpp).
bool has_nifti_extension(const std::filesystem::path& path);
// The file name without .nii.gz or .nii (nifti_io.cpp).
std::string strip_nifti_extension(const std::string& name);

// The folders (or the files) in `dir`, sorted, hidden ones left out; empty when `dir` cannot be
// read (dataset.cpp).
std::vector<std::filesystem::path> sorted_entries(const std::filesystem::path& dir, bool folders);

// The WMH challenge layout of one clinic folder: <subject>/pre/FLAIR.nii.gz, pre/T1.nii.gz,
// wmh.nii.gz (optional), appended to `out` in folder order; a folder without pre/FLAIR.nii.gz is
// not a subject and goes to `ignored` when it is given (dataset.cpp).
void collect_wmh_clinic(const std::filesystem::path& clinic_dir, const std::string& clinic,
                        std::vector<SubjectFiles>& out, std::vector<IgnoredFile>* ignored = nullptr);

}  // namespace fedda::imaging::detail
