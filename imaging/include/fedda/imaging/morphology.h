#pragma once
// Binary morphology, connected components and distance maps on label maps, through ITK.
// A mask is any LabelMap; non-zero voxels are foreground. Thread-safe.

#include <cstdint>
#include <vector>

#include "fedda/imaging/volume.h"

namespace fedda::imaging {

struct Components {
  std::vector<std::uint32_t> labels;  // per voxel; 0 = background, 1..count = component
  std::uint32_t count = 0;
};

// 3-D connected components; `full_connectivity` selects 26-connectivity (else 6).
Components connected_components(const LabelMap& mask, bool full_connectivity);

// Euclidean distance in mm (physical, so anisotropic voxels count right) from every voxel to
// the nearest foreground voxel centre; 0 on the foreground.
std::vector<float> distance_to_mask(const LabelMap& mask);

// Binary erosion / dilation with a flat ball of the given radius in voxels per axis.
LabelMap erode(const LabelMap& mask, const std::array<unsigned, 3>& radius);
LabelMap dilate(const LabelMap& mask, const std::array<unsigned, 3>& radius);

}  // namespace fedda::imaging
