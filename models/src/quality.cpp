#include "fedda/models/quality.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>

#include <nlohmann/json.hpp>

#include "augment.h"
#include "data.h"
#include "fedda/imaging/metrics.h"
#include "fedda/imaging/morphology.h"
#include "fedda/imaging/nifti_io.h"
#include "fedda/models_core/precision.h"
#include "model_io.h"
#include "training.h"

namespace fedda::models {
namespace fs = std::filesystem;
using imaging::SubjectFiles;

double signal_value(const ScanSignals& s, const std::string& name) {
  if (name == "self_dice") return s.self_dice;
  if (name == "entropy_brain") return s.entropy_brain;
  if (name == "entropy_lesion") return s.entropy_lesion;
  if (name == "tta_dice") return s.tta_dice;
  if (name == "teacher_dice") return s.teacher_dice;
  if (name == "log_lesion_ml") return std::log1p(s.lesion_ml);
  if (name == "lesion_count") return s.lesion_count;
  if (name == "histogram_distance") return s.histogram_distance;
  if (name == "noise") return s.noise;
  if (name == "brain_ml") return s.brain_ml;
  return NAN;
}

// ---- the estimator: JSON, prediction, fit -------------------------------------------------

std::string to_json(const QualityEstimator& e) {
  nlohmann::json j{{"format", "fedda-quality-estimator"},
                   {"version", 1},
                   {"features", e.features},
                   {"mean", e.mean},
                   {"scale", e.scale},
                   {"weights", e.weights},
                   {"intercept", e.intercept},
                   {"residual_sd", e.residual_sd},
                   {"lower", e.lower},
                   {"upper", e.upper},
                   {"reference_histogram", e.reference_histogram},
                   {"samples", e.samples},
                   {"fitted_on", e.fitted_on},
                   {"fit_spearman", std::isfinite(e.fit_spearman) ? nlohmann::json(e.fit_spearman) : nlohmann::json()},
                   {"fit_mae", std::isfinite(e.fit_mae) ? nlohmann::json(e.fit_mae) : nlohmann::json()},
                   {"fit_mean_dsc", std::isfinite(e.fit_mean_dsc) ? nlohmann::json(e.fit_mean_dsc) : nlohmann::json()}};
  return j.dump();
}

Result<QualityEstimator> estimator_from_json(const std::string& text) {
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object() || !j.contains("format") || j["format"] != "fedda-quality-estimator") {
    return make_error("quality estimator: not a fedda quality estimator");
  }
  if (!j.contains("version") || j["version"] != 1) {
    return make_error("quality estimator: unsupported version " + j.value("version", nlohmann::json()).dump());
  }
  QualityEstimator e;
  try {
    e.features = j.at("features").get<std::vector<std::string>>();
    e.mean = j.at("mean").get<std::vector<double>>();
    e.scale = j.at("scale").get<std::vector<double>>();
    e.weights = j.at("weights").get<std::vector<double>>();
    e.intercept = j.at("intercept").get<double>();
    e.residual_sd = j.at("residual_sd").get<double>();
    e.lower = j.at("lower").get<std::vector<double>>();
    e.upper = j.at("upper").get<std::vector<double>>();
    e.reference_histogram = j.at("reference_histogram").get<std::vector<double>>();
    e.samples = j.at("samples").get<int>();
    e.fitted_on = j.value("fitted_on", "");
    e.fit_spearman = j.value("fit_spearman", nlohmann::json()).is_number() ? j["fit_spearman"].get<double>() : NAN;
    e.fit_mae = j.value("fit_mae", nlohmann::json()).is_number() ? j["fit_mae"].get<double>() : NAN;
    e.fit_mean_dsc = j.value("fit_mean_dsc", nlohmann::json()).is_number() ? j["fit_mean_dsc"].get<double>() : NAN;
  } catch (const std::exception& ex) {
    return make_error(std::string("quality estimator: ") + ex.what());
  }
  const auto p = e.features.size();
  if (p == 0 || e.mean.size() != p || e.scale.size() != p || e.weights.size() != p || e.lower.size() != p ||
      e.upper.size() != p) {
    return make_error("quality estimator: its vectors do not match its " + std::to_string(p) + " features");
  }
  static const std::vector<std::string> known{"self_dice", "entropy_brain", "entropy_lesion", "tta_dice",
                                              "teacher_dice", "log_lesion_ml", "lesion_count", "histogram_distance",
                                              "noise", "brain_ml"};
  for (const auto& f : e.features) {
    if (std::find(known.begin(), known.end(), f) == known.end()) {
      return make_error("quality estimator: unknown signal '" + f + "'");
    }
  }
  const auto finite = [](const std::vector<double>& v) {
    return std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); });
  };
  if (!finite(e.mean) || !finite(e.weights) || !finite(e.lower) || !finite(e.upper) || !std::isfinite(e.intercept) ||
      !(e.residual_sd >= 0 && std::isfinite(e.residual_sd)) ||
      !std::all_of(e.scale.begin(), e.scale.end(), [](double x) { return x > 0 && std::isfinite(x); })) {
    return make_error("quality estimator: its coefficients are not finite (or a scale is not positive)");
  }
  if (std::count(e.features.begin(), e.features.end(), "histogram_distance") && e.reference_histogram.empty()) {
    return make_error("quality estimator: it uses histogram_distance but has no reference histogram");
  }
  if (!e.reference_histogram.empty() && e.reference_histogram.size() != kHistogramBins) {
    return make_error("quality estimator: reference histogram of " + std::to_string(e.reference_histogram.size()) +
                      " bins, expected " + std::to_string(kHistogramBins));
  }
  return e;
}

Result<QualityEstimate> estimate_quality(const QualityEstimator& e, const ScanSignals& s) {
  QualityEstimate out;
  double y = e.intercept;
  for (std::size_t i = 0; i < e.features.size(); ++i) {
    const double v = signal_value(s, e.features[i]);
    if (!std::isfinite(v)) {
      return make_error(s.clinic + "/" + s.subject + ": the estimator needs signal '" + e.features[i] + "'" +
                        (e.features[i] == "teacher_dice" ? " (it was fitted with a teacher: pass --teacher)" : ""));
    }
    y += e.weights[i] * (v - e.mean[i]) / e.scale[i];
    const double margin = 0.1 * (e.upper[i] - e.lower[i]);
    if (v < e.lower[i] - margin || v > e.upper[i] + margin) out.out_of_range.push_back(e.features[i]);
  }
  const double half = 1.645 * e.residual_sd;
  out.dsc = std::clamp(y, 0.0, 1.0);
  out.low = std::clamp(y - half, 0.0, 1.0);
  out.high = std::clamp(y + half, 0.0, 1.0);
  return out;
}

namespace {

// Solves A x = b for a small symmetric positive definite A (Gaussian elimination, partial pivoting).
std::vector<double> solve(std::vector<std::vector<double>> a, std::vector<double> b) {
  const std::size_t n = b.size();
  for (std::size_t c = 0; c < n; ++c) {
    std::size_t pivot = c;
    for (std::size_t r = c + 1; r < n; ++r) {
      if (std::abs(a[r][c]) > std::abs(a[pivot][c])) pivot = r;
    }
    std::swap(a[c], a[pivot]);
    std::swap(b[c], b[pivot]);
    for (std::size_t r = c + 1; r < n; ++r) {
      const double f = a[r][c] / a[c][c];
      for (std::size_t k = c; k < n; ++k) a[r][k] -= f * a[c][k];
      b[r] -= f * b[c];
    }
  }
  std::vector<double> x(n);
  for (std::size_t c = n; c-- > 0;) {
    double v = b[c];
    for (std::size_t k = c + 1; k < n; ++k) v -= a[c][k] * x[k];
    x[c] = v / a[c][c];
  }
  return x;
}

std::vector<double> ranks(const std::vector<double>& v) {
  std::vector<std::size_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](auto a, auto b) { return v[a] < v[b]; });
  std::vector<double> r(v.size());
  for (std::size_t i = 0; i < order.size();) {
    std::size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
    for (std::size_t k = i; k <= j; ++k) r[order[k]] = (i + j) / 2.0 + 1;
    i = j + 1;
  }
  return r;
}

}  // namespace

double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size() || a.size() < 3) return NAN;
  const auto ra = ranks(a), rb = ranks(b);
  const double n = static_cast<double>(a.size());
  const double ma = std::accumulate(ra.begin(), ra.end(), 0.0) / n, mb = std::accumulate(rb.begin(), rb.end(), 0.0) / n;
  double sab = 0, saa = 0, sbb = 0;
  for (std::size_t i = 0; i < ra.size(); ++i) {
    sab += (ra[i] - ma) * (rb[i] - mb);
    saa += (ra[i] - ma) * (ra[i] - ma);
    sbb += (rb[i] - mb) * (rb[i] - mb);
  }
  if (saa == 0 || sbb == 0) return NAN;
  return sab / std::sqrt(saa * sbb);
}

Result<QualityEstimator> fit_estimator(const std::vector<ScanSignals>& samples, const std::vector<double>& dsc,
                                       const std::vector<std::string>& features, double ridge) {
  const std::size_t n = samples.size(), p = features.size();
  if (n != dsc.size()) return make_error("quality estimator: as many Dice values as samples are needed");
  if (p == 0) return make_error("quality estimator: no features");
  if (n < p + 3) {
    return make_error("quality estimator: " + std::to_string(n) + " samples are too few for " + std::to_string(p) +
                      " features (at least " + std::to_string(p + 3) + ")");
  }
  std::vector<std::vector<double>> x(n, std::vector<double>(p));
  QualityEstimator e;
  e.features = features;
  e.mean.assign(p, 0);
  e.scale.assign(p, 0);
  e.lower.assign(p, INFINITY);
  e.upper.assign(p, -INFINITY);
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(dsc[i])) return make_error("quality estimator: sample " + samples[i].subject + " has no Dice");
    for (std::size_t k = 0; k < p; ++k) {
      x[i][k] = signal_value(samples[i], features[k]);
      if (!std::isfinite(x[i][k])) {
        return make_error("quality estimator: sample " + samples[i].subject + " lacks signal '" + features[k] + "'");
      }
      e.mean[k] += x[i][k] / n;
      e.lower[k] = std::min(e.lower[k], x[i][k]);
      e.upper[k] = std::max(e.upper[k], x[i][k]);
    }
  }
  for (std::size_t k = 0; k < p; ++k) {
    double ss = 0;
    for (std::size_t i = 0; i < n; ++i) ss += (x[i][k] - e.mean[k]) * (x[i][k] - e.mean[k]);
    e.scale[k] = std::sqrt(ss / n);
    if (e.scale[k] < 1e-9) e.scale[k] = 1;  // a constant feature contributes nothing
    for (std::size_t i = 0; i < n; ++i) x[i][k] = (x[i][k] - e.mean[k]) / e.scale[k];
  }
  const double ybar = std::accumulate(dsc.begin(), dsc.end(), 0.0) / n;
  std::vector<std::vector<double>> a(p, std::vector<double>(p, 0));
  std::vector<double> b(p, 0);
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t r = 0; r < p; ++r) {
      b[r] += x[i][r] * (dsc[i] - ybar);
      for (std::size_t c = 0; c < p; ++c) a[r][c] += x[i][r] * x[i][c];
    }
  }
  for (std::size_t r = 0; r < p; ++r) a[r][r] += ridge * n;
  e.weights = solve(a, b);
  e.intercept = ybar;
  double ss = 0, abs = 0;
  std::vector<double> fitted(n);
  for (std::size_t i = 0; i < n; ++i) {
    double y = ybar;
    for (std::size_t k = 0; k < p; ++k) y += e.weights[k] * x[i][k];
    fitted[i] = y;
    ss += (dsc[i] - y) * (dsc[i] - y);
    abs += std::abs(dsc[i] - std::clamp(y, 0.0, 1.0));
  }
  // Residual spread of a linear fit, inflated for the estimate at a new point (1 + p/n).
  e.residual_sd = std::sqrt(ss / static_cast<double>(n - p - 1)) * std::sqrt(1.0 + static_cast<double>(p) / n);
  e.samples = static_cast<int>(n);
  e.fit_spearman = spearman(fitted, dsc);
  e.fit_mae = abs / n;
  e.fit_mean_dsc = std::accumulate(dsc.begin(), dsc.end(), 0.0) / static_cast<double>(n);
  return e;
}

// ---- signals ---------------------------------------------------------------------------------

namespace {

constexpr double kEps = 1e-6;

double dice_of(const torch::Tensor& a, const torch::Tensor& b) {
  const double sa = a.sum().item<double>(), sb = b.sum().item<double>();
  if (sa + sb == 0) return 1.0;  // both empty: they agree
  return 2.0 * (a & b).sum().item<double>() / (sa + sb);
}

std::vector<double> histogram_of(const torch::Tensor& flair, const torch::Tensor& brain) {
  const auto values = flair.masked_select(brain).to(torch::kFloat64);
  std::vector<double> h(kHistogramBins, 0);
  if (values.numel() == 0) return h;
  const auto counts = torch::histc(values.clamp(kHistogramLow, kHistogramHigh - 1e-6), kHistogramBins, kHistogramLow,
                                   kHistogramHigh);
  const double total = counts.sum().item<double>();
  for (int i = 0; i < kHistogramBins; ++i) h[i] = counts[i].item<double>() / std::max(total, 1.0);
  return h;
}

}  // namespace

double histogram_distance(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size() || a.empty()) return NAN;
  const double width = (kHistogramHigh - kHistogramLow) / kHistogramBins;
  double ca = 0, cb = 0, d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    ca += a[i];
    cb += b[i];
    d += std::abs(ca - cb) * width;
  }
  return d;
}

namespace {

imaging::RgbPicture thumbnail_of(const torch::Tensor& flair, const torch::Tensor& seg, const torch::Tensor& brain) {
  auto per_slice = seg.flatten(1).sum(1);
  int64_t z = per_slice.argmax().item<int64_t>();
  if (per_slice[z].item<int64_t>() == 0) {
    const auto brain_slices = brain.flatten(1).any(1).nonzero();
    z = brain_slices.numel() ? brain_slices[brain_slices.size(0) / 2][0].item<int64_t>() : flair.size(0) / 2;
  }
  const auto image = flair[z].contiguous();
  const auto mask = seg[z].contiguous();
  const auto h = image.size(0), w = image.size(1);
  imaging::RgbPicture pic(static_cast<std::size_t>(w), static_cast<std::size_t>(h));
  const auto* v = image.data_ptr<float>();
  const auto* m = mask.data_ptr<bool>();
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      const double g = std::clamp((v[y * w + x] + 2.5) / 6.5, 0.0, 1.0) * 255;
      const auto row = static_cast<std::size_t>(h - 1 - y);  // superior up
      const auto grey = static_cast<std::uint8_t>(g);
      if (m[y * w + x]) {
        pic.set(static_cast<std::size_t>(x), row, 255, static_cast<std::uint8_t>(g * 0.3), static_cast<std::uint8_t>(g * 0.3));
      } else {
        pic.set(static_cast<std::size_t>(x), row, grey, grey, grey);
      }
    }
  }
  return pic;
}

// The model and, when asked for, its teacher, on the same preprocessing grid.
struct ModelAndTeacher {
  InferenceModel model;
  std::optional<InferenceModel> teacher;
};
Result<ModelAndTeacher> load_model_and_teacher(const fs::path& model_path, const std::optional<fs::path>& teacher_path,
                                               const std::string& device, const std::string& precision) {
  auto model = load_for_inference(model_path, device, precision);
  if (!model) return model.error();
  ModelAndTeacher out{std::move(*model), std::nullopt};
  if (teacher_path) {
    auto t = load_for_inference(*teacher_path, device, precision);
    if (!t) return t.error();
    const auto& a = t->model.spec.grid;
    const auto& b = out.model.model.spec.grid;
    if (a.in_plane_size != b.in_plane_size || a.in_plane_spacing != b.in_plane_spacing) {
      return make_error(teacher_path->string() + ": the teacher's preprocessing grid differs from the model's");
    }
    out.teacher = std::move(*t);
  }
  return out;
}

// The signals of one scan (images may be a degraded copy of the scan's) whose p(WMH) by `model`
// is `p`.
ScanSignals signals_of(InferenceModel& model, InferenceModel* teacher, const ScanSlices& scan, const torch::Tensor& images,
                       const torch::Tensor& p, const std::vector<double>& reference_histogram, bool thumbnail) {
  ScanSignals s;
  const auto& brain = scan.brain;
  const auto seg = p > 0.5;
  const double sum_p = p.sum().item<double>(), sum_seg = seg.sum().item<double>();
  s.self_dice = (2.0 * p.masked_select(seg).sum().item<double>() + 1.0) / (sum_p + sum_seg + 1.0);
  const auto q = p.clamp(kEps, 1 - kEps);
  const auto entropy = -(q * torch::log2(q) + (1 - q) * torch::log2(1 - q));
  s.entropy_brain = entropy.masked_select(brain).mean().item<double>();
  s.entropy_lesion = sum_seg > 0 ? entropy.masked_select(seg).mean().item<double>() : 0.0;
  const auto augmented = images.flip({3}) * 1.05 + 0.05;
  const auto p_tta = predict(model.model.net, augmented, model.device, 1.0, brain.flip({2})).flip({2});
  s.tta_dice = dice_of(seg, p_tta > 0.5);
  if (teacher) s.teacher_dice = dice_of(seg, predict(teacher->model.net, images, teacher->device, 1.0, brain) > 0.5);
  const auto& g = scan.grid;
  const double voxel_ml = g.spacing[0] * g.spacing[1] * g.spacing[2] / 1000.0;
  s.lesion_ml = sum_seg * voxel_ml;
  s.brain_ml = brain.sum().item<double>() * voxel_ml;
  imaging::LabelMap lesions(g);
  const auto seg_bytes = seg.to(torch::kUInt8).contiguous();
  std::memcpy(lesions.voxels.data(), seg_bytes.data_ptr<std::uint8_t>(), lesions.voxels.size());
  s.lesion_count = static_cast<int>(imaging::connected_components(lesions, true).count);
  const auto flair = images.select(1, 0);
  s.flair_histogram = histogram_of(flair, brain);
  if (!reference_histogram.empty()) s.histogram_distance = histogram_distance(s.flair_histogram, reference_histogram);
  s.t1_histogram = histogram_of(images.select(1, 1), brain);
  // Immerkaer's operator cancels the image's first and second derivatives, leaving its noise: for
  // Gaussian noise of sigma its output has sigma 6 sigma, so sigma = median |output| / (0.6745 x 6).
  const auto kernel = torch::tensor({1.f, -2.f, 1.f, -2.f, 4.f, -2.f, 1.f, -2.f, 1.f}).view({1, 1, 3, 3});
  const auto residual = torch::conv2d(flair.unsqueeze(1).to(torch::kFloat32), kernel).squeeze(1);
  const auto inner = brain.slice(1, 1, brain.size(1) - 1).slice(2, 1, brain.size(2) - 1);
  const auto inside = residual.abs().masked_select(inner);
  s.noise = inside.numel() ? inside.median().item<double>() / (0.6745 * 6) : NAN;
  if (thumbnail) s.thumbnail = thumbnail_of(flair.contiguous(), seg, brain);
  return s;
}

// Dice of a segmentation on the model grid against the scan's labels (label 2, other pathology,
// left out as in the challenge's evaluation); NaN when the scan has no WMH.
double grid_dice(const torch::Tensor& seg, const ScanSlices& scan) {
  const auto other = scan.labels == 2;
  const auto truth = scan.labels == 1;
  if (!truth.any().item<bool>()) return NAN;  // no WMH: the challenge's Dice is undefined, the scan is left out
  return dice_of(truth, seg & ~other);
}

// Positive intensities for a contrast curve: the brain's 1st..99th percentile mapped to 0..1.
torch::Tensor to_unit(const torch::Tensor& x, const torch::Tensor& brain) {
  const auto values = x.masked_select(brain);
  const auto lo = torch::quantile(values, 0.01).item<double>(), hi = torch::quantile(values, 0.99).item<double>();
  return ((x - lo) / std::max(hi - lo, 1e-6)).clamp_min(0);
}

// z-score inside the brain, as the model's preprocessing does.
torch::Tensor rezscore(const torch::Tensor& x, const torch::Tensor& brain) {
  const auto values = x.masked_select(brain);
  return (x - values.mean()) / values.std().clamp_min(1e-6);
}

// The acquisition changes calibration applies to a scan ([S, 2, H, W], z-scored): contrast curves
// (gamma), noise, in-plane blur, a bias field, and two combinations. Index 0 is the scan itself.
constexpr int kPerturbations = 8;
torch::Tensor perturb(const torch::Tensor& images, const torch::Tensor& brain, int kind, std::uint64_t seed) {
  if (kind == 0) return images;
  auto gen = at::detail::createCPUGenerator(seed);
  auto flair = images.select(1, 0), t1 = images.select(1, 1);
  const auto gamma = [&](const torch::Tensor& x, double g) { return rezscore(to_unit(x, brain).pow(g), brain); };
  const auto noise = [&](const torch::Tensor& x, double sigma) {
    return x + sigma * at::normal(0.0, 1.0, x.sizes(), gen);
  };
  const auto blur = [&](const torch::Tensor& x) {
    auto y = torch::avg_pool2d(x.unsqueeze(1), 3, 1, 1, false, false);
    return rezscore(torch::avg_pool2d(y, 3, 1, 1, false, false).squeeze(1), brain);
  };
  const auto bias = [&](const torch::Tensor& x, double amplitude) {
    const auto w = x.size(2);
    const auto ramp = torch::linspace(-1, 1, w).view({1, 1, w});
    return rezscore(to_unit(x, brain) * torch::exp(amplitude * ramp), brain);
  };
  switch (kind) {
    case 1: flair = gamma(flair, 0.6); break;
    case 2: flair = gamma(flair, 1.7); break;
    case 3: flair = noise(flair, 0.35); t1 = noise(t1, 0.35); break;
    case 4: flair = blur(flair); t1 = blur(t1); break;
    case 5: flair = bias(flair, 0.6); break;
    case 6: flair = noise(bias(gamma(flair, 1.4), 0.4), 0.25); break;
    default: flair = noise(flair, 0.5); t1 = gamma(t1, 0.5); break;
  }
  return torch::stack({flair, t1}, 1).contiguous();
}

// A scanner change of a scan ([S, 2, H, W], z-scored): the heavy recipe's intensity transforms,
// drawn once for the scan, then each channel z-scored inside the brain again, as the model's
// preprocessing would a scan of that scanner.
torch::Tensor scanner_changed(const torch::Tensor& images, const torch::Tensor& brain, const Recipe& heavy, std::uint64_t seed) {
  auto changed = images.clone();
  scanner_change(changed, heavy, seed);
  return torch::stack({rezscore(changed.select(1, 0), brain), rezscore(changed.select(1, 1), brain)}, 1).contiguous();
}

}  // namespace

Result<std::vector<ScanSignals>> compute_signals(
    const fs::path& model_path, const std::vector<SubjectFiles>& subjects, const SignalOptions& options,
    const std::function<void(const std::string&, const std::string&)>& skipped,
    const std::function<void(int, int)>& progress) {
  auto loaded = load_model_and_teacher(model_path, options.teacher, options.device, options.precision);
  if (!loaded) return loaded.error();
  auto* model = &loaded->model;
  auto& teacher = loaded->teacher;
  std::vector<ScanSignals> out;
  int done = 0;
  for (const auto& subject : subjects) {
    auto scan = load_scan(subject, model->model.spec.grid, false);
    if (!scan) {
      if (skipped) skipped(subject.subject, scan.error().message);
      if (progress) progress(++done, static_cast<int>(subjects.size()));
      continue;
    }
    const auto p = predict(model->model.net, scan->images, model->device, 1.0, scan->brain);
    auto s = signals_of(*model, teacher ? &*teacher : nullptr, *scan, scan->images, p, options.reference_histogram,
                        options.thumbnails);
    s.clinic = subject.clinic;
    s.subject = subject.subject;
    if (options.score && subject.labels) {
      imaging::Image probability(scan->grid);
      std::memcpy(probability.voxels.data(), p.data_ptr<float>(), probability.voxels.size() * sizeof(float));
      const auto prediction = imaging::restore_segmentation(probability, scan->original);
      auto truth = imaging::read_label_map(*subject.labels);
      if (!truth) return truth.error();
      auto dsc = imaging::dice_score(*truth, prediction);
      if (!dsc) return make_error(subject.clinic + "/" + subject.subject + ": " + dsc.error().message);
      s.true_dsc = *dsc;
    }
    out.push_back(std::move(s));
    if (progress) progress(++done, static_cast<int>(subjects.size()));
  }
  return out;
}

Result<QualityEstimator> calibrate_quality(const fs::path& model_path, const std::vector<SubjectFiles>& labelled,
                                           const CalibrationOptions& options,
                                           const std::function<void(int, int)>& progress) {
  if (labelled.empty()) return make_error("calibration needs labelled subjects");
  auto loaded = load_model_and_teacher(model_path, options.teacher, options.device, options.precision);
  if (!loaded) return loaded.error();
  auto* model = &loaded->model;
  auto& teacher = loaded->teacher;
  std::vector<ScanSignals> samples;
  std::vector<double> dsc;
  std::vector<std::vector<double>> unchanged_histograms;
  if (options.scanner_changes < 0) return make_error("calibration: scanner changes must be 0 or more");
  const auto heavy = recipe_preset("heavy");
  if (!heavy) return heavy.error();
  const int kinds = kPerturbations + options.scanner_changes;
  const int total = static_cast<int>(labelled.size()) * kinds;
  int done = 0;
  for (const auto& subject : labelled) {
    if (!subject.labels) return make_error(subject.clinic + "/" + subject.subject + ": no labels to calibrate against");
    auto scan = load_scan(subject, model->model.spec.grid, true);
    if (!scan) return scan.error();
    for (int kind = 0; kind < kinds; ++kind) {
      torch::NoGradGuard no_grad;
      const auto seed = mix(std::hash<std::string>{}(subject.subject), static_cast<std::uint64_t>(kind));
      const auto images = kind < kPerturbations ? perturb(scan->images, scan->brain, kind, seed)
                                                : scanner_changed(scan->images, scan->brain, *heavy, seed);
      const auto p = predict(model->model.net, images, model->device, 1.0, scan->brain);
      auto s = signals_of(*model, teacher ? &*teacher : nullptr, *scan, images, p, {}, false);
      s.clinic = subject.clinic;
      s.subject = subject.subject + (kind ? "~" + std::to_string(kind) : "");
      if (kind == 0) unchanged_histograms.push_back(s.flair_histogram);
      const double d = grid_dice(p > 0.5, *scan);
      if (std::isfinite(d)) {
        dsc.push_back(d);
        samples.push_back(std::move(s));
      }
      if (progress) progress(++done, total);
    }
  }
  std::vector<double> reference(kHistogramBins, 0);
  for (const auto& h : unchanged_histograms) {
    for (int i = 0; i < kHistogramBins; ++i) reference[i] += h[i] / unchanged_histograms.size();
  }
  for (auto& s : samples) s.histogram_distance = histogram_distance(s.flair_histogram, reference);
  std::vector<std::string> features{"self_dice", "entropy_brain", "entropy_lesion", "tta_dice",
                                    "log_lesion_ml", "histogram_distance", "noise"};
  if (teacher) features.push_back("teacher_dice");
  auto e = fit_estimator(samples, dsc, features, 0.1);
  if (!e) return e.error();
  e->reference_histogram = reference;
  e->fitted_on = std::to_string(labelled.size()) + " labelled scans of " + labelled.front().clinic + ", each as it is and under " +
                 std::to_string(kPerturbations - 1) + " acquisition changes" +
                 (options.scanner_changes ? " and " + std::to_string(options.scanner_changes) + " random scanner changes" : "") +
                 (teacher ? ", with a teacher" : "");
  return e;
}

Result<std::optional<QualityEstimator>> read_estimator(const fs::path& model) {
  auto m = load_model(model, torch::kCPU);
  if (!m) return m.error();
  if (m->quality.empty()) return std::optional<QualityEstimator>{};
  auto e = estimator_from_json(m->quality);
  if (!e) return make_error(model.string() + ": " + e.error().message);
  return std::optional<QualityEstimator>{std::move(*e)};
}

Status attach_estimator(const fs::path& model, const QualityEstimator& estimator, const fs::path& out) {
  auto m = load_model(model, torch::kCPU);
  if (!m) return m.error();
  return save_model(out, m->spec, m->net, to_json(estimator));
}

}  // namespace fedda::models
