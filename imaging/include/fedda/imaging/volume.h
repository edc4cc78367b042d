#pragma once
// Plain 3-D volumes, free of ITK, for every component to pass around.
//
// A Volume owns its voxels (x fastest, then y, then z) and carries the geometry that places
// them in physical space (millimetres, ITK's LPS convention). Geometry is what fedda promises
// to preserve: a segmentation is written back with the exact size, spacing, origin and
// direction of the scan it came from. Not synchronised; share read-only.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fedda::imaging {

struct Geometry {
  std::array<std::size_t, 3> size{0, 0, 0};
  std::array<double, 3> spacing{1.0, 1.0, 1.0};
  std::array<double, 3> origin{0.0, 0.0, 0.0};
  // Row-major 3x3; column j is the physical direction of voxel axis j.
  std::array<double, 9> direction{1, 0, 0, 0, 1, 0, 0, 0, 1};

  std::size_t voxel_count() const { return size[0] * size[1] * size[2]; }
  // Physical position (mm) of a continuous voxel index.
  std::array<double, 3> to_physical(double i, double j, double k) const;
  // Continuous voxel index of a physical position (mm).
  std::array<double, 3> to_index(const std::array<double, 3>& point) const;
  std::string describe() const;
};

// True when size matches exactly and spacing, origin and direction agree within `tolerance`
// (relative for spacing, millimetres for origin, absolute for direction cosines).
bool same_geometry(const Geometry& a, const Geometry& b, double tolerance = 1e-4);
// Names the first way in which `a` and `b` differ, empty when they are the same.
std::string geometry_difference(const Geometry& a, const Geometry& b, double tolerance = 1e-4);

template <typename T>
struct Volume {
  Geometry geometry;
  std::vector<T> voxels;

  Volume() = default;
  explicit Volume(const Geometry& g, T fill = T{}) : geometry(g), voxels(g.voxel_count(), fill) {}

  std::size_t offset(std::size_t x, std::size_t y, std::size_t z) const {
    return x + geometry.size[0] * (y + geometry.size[1] * z);
  }
  T& at(std::size_t x, std::size_t y, std::size_t z) { return voxels[offset(x, y, z)]; }
  const T& at(std::size_t x, std::size_t y, std::size_t z) const { return voxels[offset(x, y, z)]; }
};

using Image = Volume<float>;
// Label values of the WMH challenge: 0 background, 1 WMH, 2 other pathology.
using LabelMap = Volume<std::uint8_t>;

enum Label : std::uint8_t { kBackground = 0, kWmh = 1, kOtherPathology = 2 };

}  // namespace fedda::imaging
