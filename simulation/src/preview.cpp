#include "fedda/simulation/preview.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "fedda/imaging/dataset.h"
#include "fedda/imaging/nifti_io.h"
#include "fedda/imaging/png.h"

namespace fedda::simulation {
namespace fs = std::filesystem;
using imaging::Image;
using imaging::LabelMap;

namespace {

std::pair<float, float> window(const Image& image) {
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

// Draws one panel: nearest-neighbour samples of slice z on a square grid of the given field
// of view centred on the image's in-plane centre, grey levels from `range` (the image's
// window). `labels` (optional) adds outlines.
void draw_panel(imaging::RgbPicture& pic, std::size_t x0, std::size_t y0, const PreviewOptions& o,
                const Image& image, const std::pair<float, float>& range, std::size_t z, const LabelMap* labels) {
  const auto& g = image.geometry;
  const auto [lo, hi] = range;
  const int n = o.panel_pixels;
  const double pixel_mm = o.field_of_view_mm / n;
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

}  // namespace

Status write_preview(const fs::path& data, const fs::path& png, const PreviewOptions& o) {
  auto subjects = imaging::find_subjects(data);
  if (!subjects) return subjects.error();
  std::map<std::string, std::vector<imaging::SubjectFiles>> by_clinic;
  for (const auto& s : *subjects) {
    auto& list = by_clinic[s.clinic];
    if (static_cast<int>(list.size()) < o.subjects_per_clinic) list.push_back(s);
  }
  const std::size_t panel = static_cast<std::size_t>(o.panel_pixels), gap = 4;
  const std::size_t columns = static_cast<std::size_t>(o.subjects_per_clinic) * 3;
  imaging::RgbPicture pic(columns * (panel + gap), by_clinic.size() * (panel + gap));
  std::size_t row = 0;
  for (const auto& [clinic, list] : by_clinic) {
    for (std::size_t k = 0; k < list.size(); ++k) {
      const auto& s = list[k];
      auto subject = imaging::read_subject(s.flair, s.t1, s.labels);
      if (!subject) return subject.error();
      const LabelMap labels = subject->labels ? *subject->labels : LabelMap(subject->flair.geometry);
      const std::size_t z = slice_with_most_wmh(labels);
      const std::size_t x0 = k * 3 * (panel + gap), y0 = row * (panel + gap);
      const auto flair_range = window(subject->flair);
      draw_panel(pic, x0, y0, o, subject->flair, flair_range, z, nullptr);
      draw_panel(pic, x0 + panel + gap, y0, o, subject->t1, window(subject->t1), z, nullptr);
      draw_panel(pic, x0 + 2 * (panel + gap), y0, o, subject->flair, flair_range, z, &labels);
    }
    ++row;
  }
  return imaging::write_png(png, pic);
}

}  // namespace fedda::simulation
