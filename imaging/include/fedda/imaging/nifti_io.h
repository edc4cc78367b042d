#pragma once
// Reading and writing NIfTI scans (.nii, .nii.gz), validated at the boundary.
//
// Every reader accepts any NIfTI orientation, datatype and intensity scaling (scl_slope and
// scl_inter are applied) and refuses, with an error naming the file and the problem: a file
// that is missing, unreadable, truncated or not NIfTI; an image that is not 3-D (a 4-D series
// is an error, not silently its first volume) or has several components per voxel; an empty
// image; non-finite voxels. Writers go through a temporary name and a rename, so a failed
// write never leaves a half-written file. All functions are thread-safe.

#include <filesystem>
#include <optional>

#include "fedda/common/result.h"
#include "fedda/imaging/volume.h"

namespace fedda::imaging {

Result<Image> read_image(const std::filesystem::path& path);

// Reads a WMH label map: every voxel must be an integer in {0, 1, 2}.
Result<LabelMap> read_label_map(const std::filesystem::path& path);

// Reads a binary prediction the way the WMH challenge scores it: any datatype, a voxel is
// lesion when its value is >= 0.5 (so integer labels >= 1 and probabilities >= 0.5 count).
Result<LabelMap> read_prediction(const std::filesystem::path& path);

// Reads only the header's geometry, without loading voxels.
Result<Geometry> read_geometry(const std::filesystem::path& path);

Status write_image(const std::filesystem::path& path, const Image& image);
Status write_label_map(const std::filesystem::path& path, const LabelMap& labels);

// One subject's scans, checked to share one geometry.
struct Subject {
  Image flair;
  Image t1;
  std::optional<LabelMap> labels;
};

// Reads FLAIR, T1 and (when given) labels, and refuses them when their geometries disagree.
Result<Subject> read_subject(const std::filesystem::path& flair, const std::filesystem::path& t1,
                             const std::optional<std::filesystem::path>& labels);

}  // namespace fedda::imaging
