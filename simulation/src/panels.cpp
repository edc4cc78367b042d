#include "fedda/simulation/panels.h"

#include <algorithm>
#include <cmath>

namespace fedda::simulation {
using imaging::Image;
using imaging::LabelMap;
std::pair<float, float> intensity_window(const Image& image) {
  std::vector<float> v;
  for (float x : image.voxels) {
    if (x > 0) v.push_back(x);
  }
  if (v.empty()) return {0.0f, 1.0f};
  std::sort(v.begin(), v.end());
  return {v[v.size() / 100], v[std::min(v.size() - 1, v.size() * 995 / 1000)]};
}

std::size_t slice_with_most_wmh(const LabelMap& labels) {
  const auto& n = labels.geometry.size;
  std::size_t best = n[2] / 2, best_count = 0;
  for (std::size_t z = 0; z < n[2]; ++z) {
    std::size_t count = 0;
    for (std::size_t y = 0; y < n[1]; ++y)
      for (std::size_t x = 0; x < n[0]; ++x) count += labels.at(x, y, z) == imaging::kWmh;
    if (count > best_count) {
      best = z;
      best_count = count;
    }
  }
  return best;
}

void draw_panel(imaging::RgbPicture& pic, std::size_t x0, std::size_t y0, int pixels, double field_of_view_mm,
                const Image& image, const std::pair<float, float>& range, std::size_t z, const LabelMap* labels,
                const Tint& tint) {
  const auto& g = image.geometry;
  const auto [lo, hi] = range;
  const int n = pixels;
  const double pixel_mm = field_of_view_mm / n;
  const double cx = (g.size[0] - 1) / 2.0, cy = (g.size[1] - 1) / 2.0;
  std::vector<int> label_at(static_cast<std::size_t>(n) * n, 0);
  for (int py = 0; py < n; ++py)
    for (int px = 0; px < n; ++px) {
      const double ix = cx + (px - n / 2.0) * pixel_mm / g.spacing[0];
      const double iy = cy + (py - n / 2.0) * pixel_mm / g.spacing[1];
      const long x = std::lround(ix), y = std::lround(iy);
      std::uint8_t grey = 0;
      if (x >= 0 && y >= 0 && x < static_cast<long>(g.size[0]) && y < static_cast<long>(g.size[1])) {
        const float v = image.at(x, y, z);
        grey = static_cast<std::uint8_t>(std::clamp((v - lo) / (hi - lo), 0.0f, 1.0f) * 255.0f);
        if (labels) label_at[static_cast<std::size_t>(py) * n + px] = labels->at(x, y, z);
        if (tint) {
          if (const auto colour = tint(x, y)) {
            pic.set(x0 + px, y0 + py, (*colour)[0], (*colour)[1], (*colour)[2]);
            continue;
          }
        }
      }
      pic.set(x0 + px, y0 + py, grey, grey, grey);
    }
  if (!labels) return;
  for (int py = 0; py < n; ++py)
    for (int px = 0; px < n; ++px) {
      const int l = label_at[static_cast<std::size_t>(py) * n + px];
      if (l == 0) continue;
      bool edge = px == 0 || py == 0 || px == n - 1 || py == n - 1;
      for (auto [dx, dy] : {std::pair{1, 0}, {-1, 0}, {0, 1}, {0, -1}}) {
        if (!edge && label_at[static_cast<std::size_t>(py + dy) * n + px + dx] != l) edge = true;
      }
      if (edge) {
        if (l == imaging::kWmh) pic.set(x0 + px, y0 + py, 255, 40, 40);
        else pic.set(x0 + px, y0 + py, 60, 120, 255);
      }
    }
}


}  // namespace fedda::simulation
