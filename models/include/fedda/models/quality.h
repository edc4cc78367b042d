#pragma once
// Label-free quality estimates: what a site without labels can know about how well a model
// segments its scans, and when its scans change.
//
// Signals per scan, from the model's own output and the image on the model grid, inside the
// brain mask (no labels):
//   self_dice          the Dice the model expects of itself: (2 sum(p on p > 0.5) + 1) / (sum p + |p > 0.5| + 1)
//   entropy_brain      mean binary entropy of p(WMH) inside the brain (bits)
//   entropy_lesion     mean entropy on the voxels it calls lesion (0 when there are none)
//   tta_dice           Dice between its segmentation and that of the scan flipped left-right with
//                      its intensities scaled by 1.05 and shifted by 0.05 (test-time augmentation)
//   teacher_dice       Dice between its segmentation and a teacher's (NaN without a teacher)
//   lesion_ml, lesion_count   predicted WMH volume (mL) and connected lesions (26-connected)
//   histogram_distance Wasserstein-1 distance (z units) between the scan's FLAIR histogram inside
//                      the brain after the model's preprocessing and the estimator's reference
//   noise              the FLAIR's noise inside the brain (z units) by Immerkaer's operator (1996)
//   brain_ml           brain volume on the model grid (field of view: a cut-off head shrinks it)
//
// From these an estimated Dice per scan with a 90% interval, by a small ridge regression fitted
// where labels exist (calibrate_quality: the source site's labelled scans, each also degraded by
// a fixed set of acquisition changes and by random scanner changes, so the fit spans bad scans
// too) and carried inside the model file, so a target site needs no labels. A scan outside the
// range of signals the estimator was fitted on is named: its estimate is an extrapolation.

#include <cmath>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/imaging/dataset.h"
#include "fedda/imaging/png.h"

namespace fedda::models {

inline constexpr int kHistogramBins = 32;      // FLAIR z values in [-4, 4)
inline constexpr double kHistogramLow = -4.0, kHistogramHigh = 4.0;

struct ScanSignals {
  std::string clinic, subject;
  double self_dice = NAN, entropy_brain = NAN, entropy_lesion = NAN, tta_dice = NAN, teacher_dice = NAN;
  double lesion_ml = NAN;
  int lesion_count = 0;
  double histogram_distance = NAN;  // NaN when no reference histogram was given
  double noise = NAN, brain_ml = NAN;
  std::vector<double> flair_histogram;  // kHistogramBins shares summing to 1
  std::vector<double> t1_histogram;     // the same of the T1
  double true_dsc = NAN;                // only when asked to score against labels (validation)
  imaging::RgbPicture thumbnail{0, 0};  // the slice with most predicted lesion, lesion in red
};

// The value of a named signal ("self_dice", ..., "log_lesion_ml" = log(1 + lesion_ml)); NaN for
// an unknown name.
double signal_value(const ScanSignals& s, const std::string& name);

struct QualityEstimator {
  std::vector<std::string> features;       // signal names, in the order of the vectors below
  std::vector<double> mean, scale, weights;  // standardisation and ridge coefficients
  double intercept = 0;
  double residual_sd = 0;                  // of the fit; the interval is +-1.645 of it (inflated)
  std::vector<double> lower, upper;        // range of each feature over the calibration samples
  std::vector<double> reference_histogram;  // mean FLAIR histogram of the unchanged calibration scans
  int samples = 0;
  std::string fitted_on;                   // what it was fitted on, in words
  double fit_spearman = NAN, fit_mae = NAN;  // on its own samples
  double fit_mean_dsc = NAN;  // the model's mean Dice over those samples (near 0: it segments nothing there)
};

std::string to_json(const QualityEstimator& e);
Result<QualityEstimator> estimator_from_json(const std::string& json);

struct QualityEstimate {
  double dsc = NAN, low = NAN, high = NAN;  // in [0, 1]
  std::vector<std::string> out_of_range;    // features outside the calibration range
};

// Error when the estimator uses a signal the scan lacks (teacher_dice without a teacher).
Result<QualityEstimate> estimate_quality(const QualityEstimator& e, const ScanSignals& s);

// Ridge regression of `dsc` on the named signals (standardised; penalty `ridge` per sample).
Result<QualityEstimator> fit_estimator(const std::vector<ScanSignals>& samples, const std::vector<double>& dsc,
                                       const std::vector<std::string>& features, double ridge = 1.0);

// Wasserstein-1 distance (z units) between two FLAIR histograms of kHistogramBins bins.
double histogram_distance(const std::vector<double>& a, const std::vector<double>& b);

// Spearman's rank correlation (ties get their mean rank); NaN with fewer than 3 pairs or no spread.
double spearman(const std::vector<double>& a, const std::vector<double>& b);

struct SignalOptions {
  std::optional<std::filesystem::path> teacher;  // for teacher_dice
  std::vector<double> reference_histogram;       // for histogram_distance
  bool score = false;                            // true_dsc against the subjects' labels
  bool thumbnails = false;
  std::string device = "cpu", precision = "auto";
};

// Signals of `model` on each subject. A subject that cannot be read is reported through
// `skipped` (subject id and why) and left out; the run goes on.
Result<std::vector<ScanSignals>> compute_signals(
    const std::filesystem::path& model, const std::vector<imaging::SubjectFiles>& subjects,
    const SignalOptions& options, const std::function<void(const std::string& subject, const std::string& why)>& skipped = {},
    const std::function<void(int done, int total)>& progress = {});

struct CalibrationOptions {
  std::optional<std::filesystem::path> teacher;  // fit with teacher_dice too (monitor then needs it)
  // Beside the fixed acquisition changes, this many scanner changes of each scan, drawn at random
  // (seeded by the subject) from the heavy recipe's intensity transforms (BigAug's scanner shifts:
  // models_core/recipe.h), each applied to the whole scan: so that the fit also sees scans the
  // model fails on in the ways another scanner makes it fail. 8 (README, "How good are the
  // estimates": on paper-cpu teachers it raised Spearman and interval coverage and cut false alarms).
  int scanner_changes = 8;
  std::string device = "cpu", precision = "auto";
};

// Fits an estimator for `model` on labelled subjects: each scan as it is, under the fixed
// acquisition changes (contrast curves, noise, blur, a bias field) and under
// `options.scanner_changes` random scanner changes, scored against its labels.
Result<QualityEstimator> calibrate_quality(const std::filesystem::path& model,
                                           const std::vector<imaging::SubjectFiles>& labelled,
                                           const CalibrationOptions& options,
                                           const std::function<void(int done, int total)>& progress = {});

// The estimator a model file carries, if any; error when the file is not a model or its
// estimator is malformed.
Result<std::optional<QualityEstimator>> read_estimator(const std::filesystem::path& model);

// Writes `model` again to `out` (through a temporary name) with `estimator` inside; the weights
// and spec are unchanged. `out` may be `model`.
Status attach_estimator(const std::filesystem::path& model, const QualityEstimator& estimator,
                        const std::filesystem::path& out);

}  // namespace fedda::models
