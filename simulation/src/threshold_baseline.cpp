#include "fedda/simulation/threshold_baseline.h"

#include <cmath>
#include <limits>
#include <vector>

#include "fedda/common/log.h"
#include "fedda/imaging/dataset.h"
#include "fedda/imaging/nifti_io.h"
#include "fedda/imaging/preprocess.h"

namespace fedda::simulation {
namespace fs = std::filesystem;
using imaging::Image;
using imaging::LabelMap;

namespace {

// Brain-masked z-scored FLAIR: voxels outside the mask are -inf, so no threshold selects them.
Result<Image> masked_z(const imaging::SubjectFiles& s) {
  auto flair = imaging::read_image(s.flair);
  if (!flair) return flair.error();
  auto mask = imaging::brain_mask(*flair);
  if (!mask) return make_error(s.flair.string() + ": " + mask.error().message);
  auto z = imaging::zscore_in_mask(*flair, *mask);
  if (!z) return make_error(s.flair.string() + ": " + z.error().message);
  for (std::size_t i = 0; i < z->voxels.size(); ++i) {
    if (!mask->voxels[i]) z->voxels[i] = -std::numeric_limits<float>::infinity();
  }
  return z;
}

double dice_at(const Image& z, const LabelMap& truth, float threshold) {
  std::size_t t = 0, p = 0, both = 0;
  for (std::size_t i = 0; i < z.voxels.size(); ++i) {
    if (truth.voxels[i] == imaging::kOtherPathology) continue;
    const bool is_t = truth.voxels[i] == imaging::kWmh, is_p = z.voxels[i] > threshold;
    t += is_t;
    p += is_p;
    both += is_t && is_p;
  }
  return t + p == 0 ? 1.0 : 2.0 * both / (t + p);
}

}  // namespace

Result<ThresholdBaselineResult> threshold_baseline(const fs::path& data, const fs::path& predictions,
                                                   const ThresholdBaselineOptions& options) {
  auto log = log::get("baseline");
  auto subjects = imaging::find_subjects(data);
  if (!subjects) return subjects.error();
  ThresholdBaselineResult result;
  result.tuned_dice = std::numeric_limits<double>::quiet_NaN();
  if (options.z_threshold) {
    result.z_threshold = *options.z_threshold;
  } else {
    const std::string clinic = options.tune_clinic.empty() ? subjects->front().clinic : options.tune_clinic;
    std::vector<std::pair<Image, LabelMap>> tuning;
    for (const auto& s : *subjects) {
      if (s.clinic != clinic || !s.labels) continue;
      auto z = masked_z(s);
      if (!z) return z.error();
      auto truth = imaging::read_label_map(*s.labels);
      if (!truth) return truth.error();
      tuning.emplace_back(std::move(*z), std::move(*truth));
    }
    if (tuning.empty()) return make_error(data.string() + ": clinic '" + clinic + "' has no labelled subjects to tune on");
    double best = -1;
    for (float threshold = 0.5f; threshold <= 8.0f; threshold += 0.1f) {
      double sum = 0;
      for (const auto& [z, truth] : tuning) sum += dice_at(z, truth, threshold);
      if (sum / tuning.size() > best) {
        best = sum / tuning.size();
        result.z_threshold = threshold;
      }
    }
    result.tuned_dice = best;
    log->info("threshold tuned on {} ({} subjects): z > {:.1f}, mean Dice {:.3f}", clinic, tuning.size(),
              result.z_threshold, best);
  }
  for (const auto& s : *subjects) {
    auto z = masked_z(s);
    if (!z) return z.error();
    LabelMap prediction(z->geometry);
    for (std::size_t i = 0; i < z->voxels.size(); ++i) prediction.voxels[i] = z->voxels[i] > result.z_threshold;
    if (auto st = imaging::write_label_map(predictions / s.clinic / s.subject / "result.nii.gz", prediction); !st) {
      return st.error();
    }
    ++result.subjects;
  }
  return result;
}

}  // namespace fedda::simulation
