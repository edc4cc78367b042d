#pragma once
// Preprocessing shared by every model: brain mask, z-score inside the mask, in-plane
// resampling to a common spacing with crop/pad to a fixed grid, and the exact inverse that
// brings a prediction back onto the scan's own grid.
//
// The model grid keeps the scan's slices (voxel axis 2: same count, positions and direction)
// and resamples each slice to `in_plane_spacing`, cropped or padded to `in_plane_size` around
// the brain's centre. Pure functions; thread-safe.

#include <array>
#include <cstddef>

#include "fedda/common/grid_spec.h"
#include "fedda/common/result.h"
#include "fedda/imaging/volume.h"

namespace fedda::imaging {

using GridSpec = fedda::GridSpec;

struct BrainMaskOptions {
  // Erosion radius (mm) that cuts the brain loose from scalp and neck before the largest
  // component is kept; the same radius dilates it back.
  double detach_radius_mm = 4.0;
};

// Foreground by Otsu's threshold, detached from scalp by erosion, largest 3-D component,
// dilated back inside the foreground, holes filled slice by slice. Error on an image with no
// foreground.
Result<LabelMap> brain_mask(const Image& image, const BrainMaskOptions& options = {});

// (x - mean) / std with mean and std taken inside the mask, applied to every voxel.
// Error when the mask is empty or the image is constant inside it.
Result<Image> zscore_in_mask(const Image& image, const LabelMap& mask);

// The model grid for a scan of geometry `scan` whose brain is centred at `centre` (mm).
Geometry model_grid(const Geometry& scan, const std::array<double, 3>& centre, const GridSpec& spec);

// Physical centre (mm) of the mask's bounding box; the scan's centre when the mask is empty.
std::array<double, 3> mask_centre(const LabelMap& mask);

// Linear resampling of an image, nearest-neighbour of a label map, onto `target`; voxels that
// fall outside the source get `outside`.
Image resample_image(const Image& image, const Geometry& target, float outside = 0.0f);
LabelMap resample_labels(const LabelMap& labels, const Geometry& target);

// A scan ready for a 2-channel model, with what is needed to undo it.
struct Preprocessed {
  Image flair;      // z-scored, on `grid`
  Image t1;         // z-scored, on `grid`
  LabelMap mask;    // brain mask, on `grid`
  Geometry grid;    // the model grid
  Geometry original;  // the scan's own grid
};

Result<Preprocessed> preprocess(const Image& flair, const Image& t1, const GridSpec& spec);

// The inverse: a lesion probability on the model grid back to the scan's grid (linear
// interpolation, 0 outside the model grid), and its thresholded label map.
Image restore_probability(const Image& probability_on_grid, const Geometry& original);
LabelMap restore_segmentation(const Image& probability_on_grid, const Geometry& original,
                              float threshold = 0.5f);

}  // namespace fedda::imaging
