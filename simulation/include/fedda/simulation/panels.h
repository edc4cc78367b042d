#pragma once
// Axial slices drawn as picture panels, shared by `fedda-sim preview` and the experiment
// report's overlays.

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <utility>

#include "fedda/imaging/png.h"
#include "fedda/imaging/volume.h"

namespace fedda::simulation {

// Grey-level window of an image: its 1st and 99.5th percentile of positive values.
std::pair<float, float> intensity_window(const imaging::Image& image);

// The axial slice with the most WMH voxels (the middle one when there is none).
std::size_t slice_with_most_wmh(const imaging::LabelMap& labels);

// Colour to paint over voxel (x, y) of the drawn slice, or nothing to leave it grey.
using Tint = std::function<std::optional<std::array<std::uint8_t, 3>>(long x, long y)>;

// Draws slice z of `image` as a `pixels` x `pixels` panel at (x0, y0): nearest-neighbour samples
// of a square field of view centred on the image's in-plane centre, grey levels from `range`.
// `labels` (optional) adds outlines (red WMH, blue other pathology); `tint` fills voxels.
void draw_panel(imaging::RgbPicture& pic, std::size_t x0, std::size_t y0, int pixels, double field_of_view_mm,
                const imaging::Image& image, const std::pair<float, float>& range, std::size_t z,
                const imaging::LabelMap* labels, const Tint& tint = {});

}  // namespace fedda::simulation
