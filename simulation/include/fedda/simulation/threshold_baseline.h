#pragma once
// The simplest possible segmenter, as a reference every trained model must beat: one global
// threshold on the brain-masked, z-scored FLAIR. The threshold is tuned to the best mean Dice
// on the labelled subjects of one clinic (an optimistic choice), then applied everywhere.

#include <filesystem>
#include <optional>
#include <string>

#include "fedda/common/result.h"

namespace fedda::simulation {

struct ThresholdBaselineOptions {
  std::optional<double> z_threshold;  // skip tuning and use this
  std::string tune_clinic;            // default: the first clinic in the data folder
};

struct ThresholdBaselineResult {
  double z_threshold = 0;
  double tuned_dice = 0;  // mean Dice on the tuning clinic (NaN when not tuned)
  int subjects = 0;
};

// Writes PREDICTIONS/<clinic>/<subject>/result.nii.gz for every subject of `data`, each in its
// scan's exact geometry.
Result<ThresholdBaselineResult> threshold_baseline(const std::filesystem::path& data,
                                                   const std::filesystem::path& predictions,
                                                   const ThresholdBaselineOptions& options);

}  // namespace fedda::simulation
