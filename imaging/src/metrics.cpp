#include "fedda/imaging/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "fedda/imaging/morphology.h"

namespace fedda::imaging {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// The mask minus its in-plane erosion by a ball of radius (1, 1, 0), as the challenge's
// evaluation takes lesion boundaries.
LabelMap in_plane_boundary(const LabelMap& mask) {
  const LabelMap eroded = erode(mask, {1, 1, 0});
  LabelMap boundary(mask.geometry);
  for (std::size_t i = 0; i < mask.voxels.size(); ++i) {
    boundary.voxels[i] = (mask.voxels[i] && !eroded.voxels[i]) ? 1 : 0;
  }
  return boundary;
}

std::vector<double> distances_from(const LabelMap& from, const std::vector<float>& to_map) {
  std::vector<double> d;
  for (std::size_t i = 0; i < from.voxels.size(); ++i) {
    if (from.voxels[i]) d.push_back(to_map[i]);
  }
  return d;
}

double hausdorff95(const LabelMap& truth, const LabelMap& prediction, std::size_t truth_count,
                   std::size_t prediction_count) {
  if (truth_count == 0 || prediction_count == 0) return kNaN;
  const LabelMap truth_edge = in_plane_boundary(truth);
  const LabelMap prediction_edge = in_plane_boundary(prediction);
  const auto to_truth = distance_to_mask(truth_edge);
  const auto to_prediction = distance_to_mask(prediction_edge);
  const double a = percentile(distances_from(prediction_edge, to_truth), 95.0);
  const double b = percentile(distances_from(truth_edge, to_prediction), 95.0);
  return std::max(a, b);
}

// Number of distinct components of `components` that `other` touches.
std::uint32_t touched_components(const Components& components, const LabelMap& other) {
  std::vector<char> touched(components.count + 1, 0);
  for (std::size_t i = 0; i < other.voxels.size(); ++i) {
    if (other.voxels[i]) touched[components.labels[i]] = 1;
  }
  std::uint32_t n = 0;
  for (std::uint32_t label = 1; label <= components.count; ++label) n += touched[label];
  return n;
}

}  // namespace

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return kNaN;
  std::sort(values.begin(), values.end());
  const double position = p / 100.0 * static_cast<double>(values.size() - 1);
  const auto below = static_cast<std::size_t>(std::floor(position));
  const std::size_t above = std::min(below + 1, values.size() - 1);
  const double fraction = position - static_cast<double>(below);
  return values[below] + (values[above] - values[below]) * fraction;
}

Result<double> dice_score(const LabelMap& truth, const LabelMap& prediction) {
  if (auto diff = geometry_difference(truth.geometry, prediction.geometry); !diff.empty()) {
    return make_error("prediction and truth are not on the same grid: " + diff);
  }
  if (prediction.voxels.size() != truth.voxels.size()) return make_error("prediction and truth differ in voxel count");
  std::size_t nt = 0, np = 0, overlap = 0;
  for (std::size_t i = 0; i < truth.voxels.size(); ++i) {
    const bool t = truth.voxels[i] == kWmh;
    const bool p = truth.voxels[i] != kOtherPathology && prediction.voxels[i] != 0;
    nt += t;
    np += p;
    overlap += t && p;
  }
  return (nt + np) == 0 ? kNaN : 2.0 * static_cast<double>(overlap) / static_cast<double>(nt + np);
}

Result<CaseMetrics> evaluate_case(const LabelMap& truth, const LabelMap& prediction) {
  if (auto diff = geometry_difference(truth.geometry, prediction.geometry); !diff.empty()) {
    return make_error("prediction and truth are not on the same grid: " + diff);
  }
  if (truth.voxels.size() != truth.geometry.voxel_count() ||
      prediction.voxels.size() != truth.voxels.size()) {
    return make_error("prediction or truth has a voxel count that does not match its size");
  }
  // Label 2 is removed from both; the prediction is binary.
  LabelMap t(truth.geometry), p(truth.geometry);
  std::size_t nt = 0, np = 0, overlap = 0;
  for (std::size_t i = 0; i < truth.voxels.size(); ++i) {
    const bool other = truth.voxels[i] == kOtherPathology;
    t.voxels[i] = truth.voxels[i] == kWmh;
    p.voxels[i] = !other && prediction.voxels[i] != 0;
    nt += t.voxels[i];
    np += p.voxels[i];
    overlap += t.voxels[i] && p.voxels[i];
  }

  CaseMetrics m;
  m.dsc = (nt + np) == 0 ? kNaN : 2.0 * static_cast<double>(overlap) / static_cast<double>(nt + np);
  m.avd = nt == 0 ? kNaN
                  : std::abs(static_cast<double>(nt) - static_cast<double>(np)) /
                        static_cast<double>(nt) * 100.0;
  m.h95 = hausdorff95(t, p, nt, np);

  const auto true_lesions = connected_components(t, true);
  const auto predicted_lesions = connected_components(p, true);
  m.recall = true_lesions.count == 0
                 ? 1.0
                 : static_cast<double>(touched_components(true_lesions, p)) / true_lesions.count;
  const double precision =
      predicted_lesions.count == 0
          ? 1.0
          : static_cast<double>(touched_components(predicted_lesions, t)) / predicted_lesions.count;
  m.f1 = (precision + m.recall) == 0.0 ? 0.0 : 2.0 * precision * m.recall / (precision + m.recall);
  return m;
}

LesionSummary summarize_lesions(const LabelMap& labels) {
  LabelMap wmh(labels.geometry);
  LesionSummary out;
  for (std::size_t i = 0; i < labels.voxels.size(); ++i) {
    wmh.voxels[i] = labels.voxels[i] == kWmh;
    out.voxels += wmh.voxels[i];
  }
  const auto& s = labels.geometry.spacing;
  out.volume_ml = static_cast<double>(out.voxels) * s[0] * s[1] * s[2] / 1000.0;
  out.count = out.voxels == 0 ? 0 : connected_components(wmh, true).count;
  return out;
}

}  // namespace fedda::imaging
