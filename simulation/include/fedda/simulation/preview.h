#pragma once
// `fedda-sim preview`: one mosaic PNG to look at simulated (or real) clinics side by side.
// One row per clinic; per subject three panels: FLAIR, T1, FLAIR with the label outline
// (red WMH, blue other pathology), on the axial slice with the most WMH, at a common scale
// (240 mm field of view) so the clinics' resolutions and contrasts can be compared.

#include <filesystem>

#include "fedda/common/result.h"

namespace fedda::simulation {

struct PreviewOptions {
  int subjects_per_clinic = 3;
  int panel_pixels = 160;
  double field_of_view_mm = 240;
};

Status write_preview(const std::filesystem::path& data, const std::filesystem::path& png,
                     const PreviewOptions& options = {});

}  // namespace fedda::simulation
