#pragma once
// Smooth random fields and seed mixing for the simulator (private).

#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace fedda::simulation::detail {

// splitmix64: decorrelates seeds derived from (seed, clinic, subject, purpose).
inline std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
inline std::uint64_t mix(std::uint64_t a, std::uint64_t b) { return mix(a ^ mix(b)); }

// Value noise: N(0, 1) values on a lattice of `spacing` mm over a box, trilinearly
// interpolated, so the field is smooth on the scale of the spacing.
class LatticeNoise {
 public:
  LatticeNoise() = default;
  LatticeNoise(const std::array<double, 3>& lo, const std::array<double, 3>& hi, double spacing,
               std::mt19937_64& rng)
      : lo_(lo), spacing_(spacing) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int d = 0; d < 3; ++d) n_[d] = static_cast<int>(std::ceil((hi[d] - lo[d]) / spacing)) + 2;
    values_.resize(static_cast<std::size_t>(n_[0]) * n_[1] * n_[2]);
    for (auto& v : values_) v = normal(rng);
  }

  float operator()(const std::array<double, 3>& p) const {
    double f[3];
    int i[3];
    for (int d = 0; d < 3; ++d) {
      double u = (p[d] - lo_[d]) / spacing_;
      u = std::min(std::max(u, 0.0), static_cast<double>(n_[d] - 1) - 1e-6);
      i[d] = static_cast<int>(u);
      f[d] = u - i[d];
    }
    auto at = [&](int x, int y, int z) { return values_[(static_cast<std::size_t>(z) * n_[1] + y) * n_[0] + x]; };
    const double c00 = at(i[0], i[1], i[2]) * (1 - f[0]) + at(i[0] + 1, i[1], i[2]) * f[0];
    const double c10 = at(i[0], i[1] + 1, i[2]) * (1 - f[0]) + at(i[0] + 1, i[1] + 1, i[2]) * f[0];
    const double c01 = at(i[0], i[1], i[2] + 1) * (1 - f[0]) + at(i[0] + 1, i[1], i[2] + 1) * f[0];
    const double c11 = at(i[0], i[1] + 1, i[2] + 1) * (1 - f[0]) + at(i[0] + 1, i[1] + 1, i[2] + 1) * f[0];
    const double c0 = c00 * (1 - f[1]) + c10 * f[1];
    const double c1 = c01 * (1 - f[1]) + c11 * f[1];
    return static_cast<float>(c0 * (1 - f[2]) + c1 * f[2]);
  }

 private:
  std::array<double, 3> lo_{};
  double spacing_ = 1;
  int n_[3] = {0, 0, 0};
  std::vector<float> values_;
};

}  // namespace fedda::simulation::detail
