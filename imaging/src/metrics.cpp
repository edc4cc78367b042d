#include "fedda/imaging/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <itkBinaryErodeImageFilter.h>
#include <itkConnectedComponentImageFilter.h>
#include <itkFlatStructuringElement.h>
#include <itkSignedMaurerDistanceMapImageFilter.h>

#include "itk_bridge.h"

namespace fedda::imaging {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
using Mask = detail::ItkImage<std::uint8_t>;
using Components = detail::ItkImage<std::uint32_t>;

struct LabelledComponents {
  std::vector<std::uint32_t> labels;  // per voxel, 0 = background
  std::uint32_t count = 0;
};

LabelledComponents components_26(const LabelMap& mask) {
  auto filter = itk::ConnectedComponentImageFilter<Mask, Components>::New();
  filter->SetInput(detail::to_itk(mask));
  filter->SetFullyConnected(true);
  filter->SetBackgroundValue(0);
  filter->Update();
  LabelledComponents out;
  out.count = static_cast<std::uint32_t>(filter->GetObjectCount());
  const auto* buffer = filter->GetOutput()->GetBufferPointer();
  out.labels.assign(buffer, buffer + mask.voxels.size());
  return out;
}

// The mask minus its in-plane erosion by a ball of radius (1, 1, 0).
LabelMap in_plane_boundary(const LabelMap& mask) {
  using Kernel = itk::FlatStructuringElement<3>;
  Kernel::RadiusType radius;
  radius[0] = 1;
  radius[1] = 1;
  radius[2] = 0;
  auto erode = itk::BinaryErodeImageFilter<Mask, Mask, Kernel>::New();
  erode->SetInput(detail::to_itk(mask));
  erode->SetKernel(Kernel::Ball(radius));
  erode->SetForegroundValue(1);
  erode->SetBackgroundValue(0);
  erode->SetBoundaryToForeground(true);
  erode->Update();
  const auto* eroded = erode->GetOutput()->GetBufferPointer();
  LabelMap boundary(mask.geometry);
  for (std::size_t i = 0; i < mask.voxels.size(); ++i) {
    boundary.voxels[i] = (mask.voxels[i] && !eroded[i]) ? 1 : 0;
  }
  return boundary;
}

// Euclidean distance (mm) from every voxel to the nearest voxel of `mask`.
std::vector<float> distance_to(const LabelMap& mask) {
  using Distances = detail::ItkImage<float>;
  auto filter = itk::SignedMaurerDistanceMapImageFilter<Mask, Distances>::New();
  filter->SetInput(detail::to_itk(mask));
  filter->SetUseImageSpacing(true);
  filter->SetSquaredDistance(false);
  filter->SetInsideIsPositive(false);
  filter->SetBackgroundValue(0);
  filter->Update();
  const float* buffer = filter->GetOutput()->GetBufferPointer();
  std::vector<float> distances(buffer, buffer + mask.voxels.size());
  // Outside the mask the map is the distance to its nearest voxel centre; the mask's own
  // voxels are at distance 0 from it.
  for (std::size_t i = 0; i < distances.size(); ++i) {
    if (mask.voxels[i]) distances[i] = 0.0f;
  }
  return distances;
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
  const auto to_truth = distance_to(truth_edge);
  const auto to_prediction = distance_to(prediction_edge);
  const double a = percentile(distances_from(prediction_edge, to_truth), 95.0);
  const double b = percentile(distances_from(truth_edge, to_prediction), 95.0);
  return std::max(a, b);
}

// Number of distinct components of `components` that `other` touches.
std::uint32_t touched_components(const LabelledComponents& components, const LabelMap& other) {
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

  const auto true_lesions = components_26(t);
  const auto predicted_lesions = components_26(p);
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

}  // namespace fedda::imaging
