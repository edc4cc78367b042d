#include "fedda/simulation/preview.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "fedda/imaging/dataset.h"
#include "fedda/imaging/nifti_io.h"
#include "fedda/imaging/png.h"
#include "fedda/simulation/panels.h"

namespace fedda::simulation {
namespace fs = std::filesystem;
using imaging::Image;
using imaging::LabelMap;


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
      const auto flair_range = intensity_window(subject->flair);
      draw_panel(pic, x0, y0, o.panel_pixels, o.field_of_view_mm, subject->flair, flair_range, z, nullptr);
      draw_panel(pic, x0 + panel + gap, y0, o.panel_pixels, o.field_of_view_mm, subject->t1, intensity_window(subject->t1), z, nullptr);
      draw_panel(pic, x0 + 2 * (panel + gap), y0, o.panel_pixels, o.field_of_view_mm, subject->flair, flair_range, z, &labels);
    }
    ++row;
  }
  return imaging::write_png(png, pic);
}

}  // namespace fedda::simulation
