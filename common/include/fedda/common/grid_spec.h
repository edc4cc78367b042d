#pragma once
// The in-plane grid a model sees: every slice resampled to `in_plane_spacing` and cropped or
// padded to `in_plane_size` (imaging/preprocess.h does it). It is part of a model's contract,
// so it lives below both the imaging library and the model files, which the coordinator reads
// without either ITK or the training engine. Plain value; thread-safe.

#include <array>
#include <cstddef>

namespace fedda {

struct GridSpec {
  std::array<std::size_t, 2> in_plane_size{128, 128};
  std::array<double, 2> in_plane_spacing{1.5, 1.5};
};

}  // namespace fedda
