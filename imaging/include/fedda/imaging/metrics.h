#pragma once
// The five metrics of the MICCAI 2017 WMH segmentation challenge, per case.
//
// As the official evaluation does, voxels labelled 2 ("other pathology") in the truth are
// removed from both truth and prediction before anything is measured, and the prediction is
// binary (value 1 = lesion). Undefined values are NaN:
//   dsc    2|T∩P| / (|T|+|P|); NaN when both are empty.
//   h95    max of the two directed 95th percentiles (linear interpolation) of the distances
//          between boundary voxels, in mm in physical space; boundaries are each mask minus
//          its in-plane erosion (ball of radius 1,1,0). NaN when either mask is empty.
//   avd    | |T| - |P| | / |T| * 100; NaN when the truth is empty.
//   recall detected true lesions / true lesions (1 when there are none); lesions are 3-D
//          components with 26-connectivity, detected when any predicted voxel touches them.
//   f1     of lesion recall and lesion precision (predicted components touching a true
//          lesion / predicted components, 1 when there are none); 0 when both are 0.
// Thread-safe.

#include <cstdint>
#include <string>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/imaging/volume.h"

namespace fedda::imaging {

struct CaseMetrics {
  double dsc = 0;
  double h95 = 0;
  double avd = 0;
  double recall = 0;
  double f1 = 0;
};

// Error when the two label maps are not on the same grid (size, spacing, origin, direction).
Result<CaseMetrics> evaluate_case(const LabelMap& truth, const LabelMap& prediction);

// DSC alone, as evaluate_case computes it (label 2 removed); for learning curves, where the
// distance and lesion metrics would cost most of the time. Error as evaluate_case's.
Result<double> dice_score(const LabelMap& truth, const LabelMap& prediction);

// The lesion load of one label map: its WMH voxels (label 1), their volume, and the lesions
// (3-D components with 26-connectivity, as recall and F1 count them).
struct LesionSummary {
  std::size_t voxels = 0;
  double volume_ml = 0;
  std::uint32_t count = 0;
};
LesionSummary summarize_lesions(const LabelMap& labels);

// The p-th percentile (0..100) with numpy's default linear interpolation; NaN when empty.
double percentile(std::vector<double> values, double p);

}  // namespace fedda::imaging
