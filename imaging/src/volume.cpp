#include "fedda/imaging/volume.h"

#include <cmath>
#include <sstream>

namespace fedda::imaging {

std::array<double, 3> Geometry::to_physical(double i, double j, double k) const {
  const double scaled[3] = {i * spacing[0], j * spacing[1], k * spacing[2]};
  std::array<double, 3> p{};
  for (int r = 0; r < 3; ++r) {
    p[r] = origin[r] + direction[r * 3 + 0] * scaled[0] + direction[r * 3 + 1] * scaled[1] +
           direction[r * 3 + 2] * scaled[2];
  }
  return p;
}

std::array<double, 3> Geometry::to_index(const std::array<double, 3>& point) const {
  // Direction is orthonormal for NIfTI images, so its inverse is its transpose.
  const double d[3] = {point[0] - origin[0], point[1] - origin[1], point[2] - origin[2]};
  std::array<double, 3> idx{};
  for (int c = 0; c < 3; ++c) {
    const double along = direction[0 * 3 + c] * d[0] + direction[1 * 3 + c] * d[1] +
                         direction[2 * 3 + c] * d[2];
    idx[c] = along / spacing[c];
  }
  return idx;
}

std::string Geometry::describe() const {
  std::ostringstream s;
  s << size[0] << "x" << size[1] << "x" << size[2] << " voxels of " << spacing[0] << "x"
    << spacing[1] << "x" << spacing[2] << " mm, origin (" << origin[0] << ", " << origin[1]
    << ", " << origin[2] << ")";
  return s.str();
}

std::string geometry_difference(const Geometry& a, const Geometry& b, double tolerance) {
  std::ostringstream s;
  if (a.size != b.size) {
    s << "size " << a.size[0] << "x" << a.size[1] << "x" << a.size[2] << " vs " << b.size[0] << "x"
      << b.size[1] << "x" << b.size[2];
    return s.str();
  }
  for (int d = 0; d < 3; ++d) {
    if (std::abs(a.spacing[d] - b.spacing[d]) > tolerance * std::max(1.0, std::abs(a.spacing[d]))) {
      s << "spacing " << a.describe() << " vs " << b.describe();
      return s.str();
    }
  }
  for (int d = 0; d < 3; ++d) {
    // Origins are stored as float in NIfTI; allow for that rounding on large coordinates.
    if (std::abs(a.origin[d] - b.origin[d]) > std::max(tolerance, 1e-5 * std::abs(a.origin[d]))) {
      s << "origin " << a.describe() << " vs " << b.describe();
      return s.str();
    }
  }
  for (int i = 0; i < 9; ++i) {
    if (std::abs(a.direction[i] - b.direction[i]) > tolerance) {
      s << "direction (orientation) differs";
      return s.str();
    }
  }
  return {};
}

bool same_geometry(const Geometry& a, const Geometry& b, double tolerance) {
  return geometry_difference(a, b, tolerance).empty();
}

}  // namespace fedda::imaging
