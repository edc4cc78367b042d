#include "fedda/simulation/generator.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <mutex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "fedda/common/files.h"
#include "fedda/common/log.h"
#include "fedda/imaging/morphology.h"
#include "fedda/imaging/nifti_io.h"
#include "noise.h"

namespace fedda::simulation {
namespace fs = std::filesystem;
using imaging::Geometry;
using imaging::Image;
using imaging::LabelMap;

namespace {

std::uint64_t name_hash(const std::string& s) {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

using Matrix = std::array<double, 9>;  // row-major

Matrix rotation(double ax, double ay, double az) {
  const double cx = std::cos(ax), sx = std::sin(ax), cy = std::cos(ay), sy = std::sin(ay),
               cz = std::cos(az), sz = std::sin(az);
  // Rz * Ry * Rx
  return {cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx,
          sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx,
          -sy,     cy * sx,                cy * cx};
}

std::array<double, 3> multiply(const Matrix& m, const std::array<double, 3>& v) {
  return {m[0] * v[0] + m[1] * v[1] + m[2] * v[2], m[3] * v[0] + m[4] * v[1] + m[5] * v[2],
          m[6] * v[0] + m[7] * v[1] + m[8] * v[2]};
}

// Maps a physical point of the subject (scanner space) to the template.
struct SubjectTransform {
  Matrix linear{};                       // scanner -> template, about the brain centre
  std::array<double, 3> brain_centre{};  // template
  std::array<double, 3> translation{};   // subject's brain centre - template's
  std::array<double, 3> ventricle_centre{};
  double enlargement = 0;
  detail::LatticeNoise warp[3];
  double warp_mm = 0;

  std::array<double, 3> to_template(const std::array<double, 3>& q) const {
    std::array<double, 3> d{q[0] - brain_centre[0] - translation[0], q[1] - brain_centre[1] - translation[1],
                            q[2] - brain_centre[2] - translation[2]};
    auto p = multiply(linear, d);
    for (int k = 0; k < 3; ++k) p[k] += brain_centre[k];
    // Age: sampling closer to the ventricles' centre enlarges them and what surrounds them.
    std::array<double, 3> v{p[0] - ventricle_centre[0], p[1] - ventricle_centre[1], p[2] - ventricle_centre[2]};
    const double r2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
    const double shrink = 1.0 - enlargement * std::exp(-r2 / (2.0 * 22.0 * 22.0));
    for (int k = 0; k < 3; ++k) p[k] = ventricle_centre[k] + v[k] * shrink;
    const std::array<double, 3> w{warp[0](p) * warp_mm, warp[1](p) * warp_mm, warp[2](p) * warp_mm};
    for (int k = 0; k < 3; ++k) p[k] += w[k];
    return p;
  }
};

struct Sample {
  double head = 0, csf = 0, gm = 0, wm = 0, wmh = 0, lacune = 0, mimic = 0;
};

// Trilinear interpolation of the template and lesion maps at a continuous template index.
Sample sample_template(const Anatomy& a, const LesionMaps& maps, const std::array<double, 3>& idx) {
  Sample s;
  const auto& n = a.grid.size;
  if (idx[0] < 0 || idx[1] < 0 || idx[2] < 0 || idx[0] >= n[0] - 1.0 || idx[1] >= n[1] - 1.0 ||
      idx[2] >= n[2] - 1.0) {
    return s;
  }
  const std::size_t x = static_cast<std::size_t>(idx[0]), y = static_cast<std::size_t>(idx[1]),
                    z = static_cast<std::size_t>(idx[2]);
  const double fx = idx[0] - x, fy = idx[1] - y, fz = idx[2] - z;
  for (int corner = 0; corner < 8; ++corner) {
    const int cx = corner & 1, cy = (corner >> 1) & 1, cz = (corner >> 2) & 1;
    const double w = (cx ? fx : 1 - fx) * (cy ? fy : 1 - fy) * (cz ? fz : 1 - fz);
    const std::size_t i = (x + cx) + n[0] * ((y + cy) + n[1] * (z + cz));
    const auto& c = a.cells[i];
    s.head += w * c.head;
    s.csf += w * c.csf;
    s.gm += w * c.gm;
    s.wm += w * c.wm;
    s.wmh += w * maps.wmh[i];
    s.lacune += w * maps.lacune[i];
    s.mimic += w * maps.mimic[i];
  }
  return s;
}

Geometry clinic_grid(const ClinicProfile& clinic, const std::array<double, 3>& centre) {
  Geometry g;
  g.size = clinic.size;
  g.spacing = clinic.spacing;
  for (int d = 0; d < 3; ++d) g.origin[d] = centre[d] - (g.size[d] - 1) / 2.0 * g.spacing[d];
  return g;
}

// Signal of a mixture of tissues, relative to white matter = 1, before the scanner.
double signal(const TissueContrast& t, const Sample& s, double wmh_gain, double gm_gain) {
  const double brain = s.csf + s.gm + s.wm;
  const double lesion = std::min(s.wmh, s.wm);
  const double lacune = std::min(s.lacune, 1.0);
  const double mimic = std::clamp(s.mimic, 0.0, 1.0);
  const double normal = s.csf * t.csf + s.gm * t.gm * gm_gain + (s.wm - lesion) * t.wm;
  const double tissue = (1.0 - mimic) * normal + mimic * (brain - lesion) * t.mimic + lesion * t.wmh * wmh_gain;
  const double in_brain = (1.0 - lacune) * tissue + lacune * brain * t.csf;
  return in_brain + std::max(0.0, 1.0 - brain) * s.head * t.head;
}

nlohmann::json clinic_json(const ClinicProfile& c, Profile profile, std::uint64_t seed,
                           const std::vector<nlohmann::json>& subjects) {
  auto contrast = [](const TissueContrast& t) {
    return nlohmann::json{{"csf", t.csf},   {"gm", t.gm},
                          {"wm", t.wm},     {"wmh", t.wmh},
                          {"non_brain_gain", t.head}, {"unlabelled_hyperintensities", t.mimic}};
  };
  return {{"clinic", c.name},
          {"scanner", c.scanner},
          {"profile", profile_name(profile)},
          {"seed", seed},
          {"size", c.size},
          {"spacing_mm", c.spacing},
          {"slice_profile", "3 mm slab average (partial volume across the slab)"},
          {"flair", {{"contrast_relative_to_wm", contrast(c.flair)}, {"gamma", c.flair_gamma}, {"scale", c.flair_scale}}},
          {"t1", {{"contrast_relative_to_wm", contrast(c.t1)}, {"gamma", c.t1_gamma}, {"scale", c.t1_scale}}},
          {"rician_noise_fraction_of_wm", c.noise},
          {"bias_field_amplitude", c.bias},
          {"lesion_load_ml", {{"distribution", "lognormal"}, {"median", c.lesion_median_ml}, {"sigma", c.lesion_sigma}}},
          {"lesion_contrast_spread", c.lesion_contrast_spread},
          {"grey_matter_variation", c.grey_matter_variation},
          {"periventricular_share", c.periventricular_share},
          {"lacune_probability", c.lacune_probability},
          {"ventricle_enlargement_max", c.ventricle_enlargement_max},
          {"subjects", subjects}};
}

}  // namespace

SubjectDraw draw_subject(const ClinicProfile& clinic, std::uint64_t seed, int index) {
  std::mt19937_64 rng(detail::mix(detail::mix(seed, name_hash(clinic.name)), static_cast<std::uint64_t>(index)));
  SubjectDraw d;
  std::ostringstream id;
  id << clinic.first_subject_id + index;
  d.id = id.str();
  std::lognormal_distribution<double> load(std::log(clinic.lesion_median_ml), clinic.lesion_sigma);
  d.lesion_ml = std::clamp(load(rng), 0.3, 80.0);
  d.lacune = std::uniform_real_distribution<double>(0, 1)(rng) < clinic.lacune_probability;
  d.ventricle_enlargement = std::uniform_real_distribution<double>(0, clinic.ventricle_enlargement_max)(rng);
  d.seed = rng();
  return d;
}

SimulatedSubject simulate_subject(const Anatomy& a, const ClinicProfile& clinic, std::uint64_t seed, int index) {
  SimulatedSubject out;
  out.draw = draw_subject(clinic, seed, index);
  std::mt19937_64 rng(out.draw.seed);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::normal_distribution<double> normal(0.0, 1.0);

  const LesionMaps lesions = make_lesion_maps(a, clinic, out.draw.lesion_ml, out.draw.lacune, rng);
  out.template_lesion_ml = lesions.wmh_ml;

  // Head size, pose and shape.
  SubjectTransform t;
  const double deg = M_PI / 180.0;
  const Matrix r = rotation(4 * deg * uniform(rng), 4 * deg * uniform(rng), 6 * deg * uniform(rng));
  const double size = 1.0 + 0.07 * uniform(rng);
  const std::array<double, 3> scale{size * (1 + 0.03 * uniform(rng)), size * (1 + 0.03 * uniform(rng)),
                                    size * (1 + 0.03 * uniform(rng))};
  for (int row = 0; row < 3; ++row)
    for (int col = 0; col < 3; ++col) t.linear[row * 3 + col] = r[col * 3 + row] / scale[row];  // S^-1 R^T
  t.brain_centre = a.brain_centre;
  t.ventricle_centre = a.ventricle_centre;
  t.translation = {4 * uniform(rng), 4 * uniform(rng), 4 * uniform(rng)};
  t.enlargement = out.draw.ventricle_enlargement;
  const auto lo = a.grid.to_physical(0, 0, 0);
  const auto hi = a.grid.to_physical(a.grid.size[0] - 1.0, a.grid.size[1] - 1.0, a.grid.size[2] - 1.0);
  std::array<double, 3> box_lo, box_hi;
  for (int d = 0; d < 3; ++d) {
    box_lo[d] = std::min(lo[d], hi[d]) - 20;
    box_hi[d] = std::max(lo[d], hi[d]) + 20;
  }
  for (auto& w : t.warp) w = detail::LatticeNoise(box_lo, box_hi, 40.0, rng);
  t.warp_mm = 2.0;
  const detail::LatticeNoise lesion_texture(box_lo, box_hi, 6.0, rng);
  const detail::LatticeNoise grey_texture(box_lo, box_hi, 15.0, rng);

  // The scanner's grid, centred on the head with a small positioning offset.
  std::array<double, 3> centre;
  for (int d = 0; d < 3; ++d) centre[d] = a.brain_centre[d] + t.translation[d] + 3 * uniform(rng);
  const Geometry g = clinic_grid(clinic, centre);

  // Bias field: smooth low-order polynomial in the exponent, one per modality.
  std::array<double, 6> flair_bias, t1_bias;
  for (auto& c : flair_bias) c = 0.5 * normal(rng);
  for (auto& c : t1_bias) c = 0.5 * normal(rng);
  auto bias_at = [&](const std::array<double, 6>& c, const std::array<double, 3>& q) {
    const double u = (q[0] - centre[0]) / 100.0, v = (q[1] - centre[1]) / 100.0, w = (q[2] - centre[2]) / 100.0;
    return std::exp(clinic.bias * (c[0] * u + c[1] * v + c[2] * w + c[3] * u * v + c[4] * (u * u - 0.3) +
                                   c[5] * (v * v - 0.3)));
  };

  // Sub-samples per voxel: about 1 mm apart, so a 3 mm slab averages 3 planes.
  int sub[3];
  for (int d = 0; d < 3; ++d) sub[d] = std::max(1, static_cast<int>(std::lround(g.spacing[d])));
  std::vector<std::array<double, 3>> offsets;  // in template mm, relative to the voxel centre
  for (int k = 0; k < sub[2]; ++k)
    for (int j = 0; j < sub[1]; ++j)
      for (int i = 0; i < sub[0]; ++i) {
        const std::array<double, 3> o{((i + 0.5) / sub[0] - 0.5) * g.spacing[0],
                                      ((j + 0.5) / sub[1] - 0.5) * g.spacing[1],
                                      ((k + 0.5) / sub[2] - 0.5) * g.spacing[2]};
        offsets.push_back(multiply(t.linear, o));
      }

  out.flair = Image(g);
  out.t1 = Image(g);
  out.labels = LabelMap(g);
  out.tissue = LabelMap(g);
  LabelMap lacune_core(g);
  const double flair_wm = clinic.flair_scale;
  const double t1_wm = clinic.t1_scale;
  for (std::size_t z = 0; z < g.size[2]; ++z)
    for (std::size_t y = 0; y < g.size[1]; ++y)
      for (std::size_t x = 0; x < g.size[0]; ++x) {
        const auto q = g.to_physical(x, y, z);
        const auto p = t.to_template(q);
        const double wmh_gain = 1.0 + clinic.lesion_contrast_spread * lesion_texture(p);
        const double gm_gain = 1.0 + clinic.grey_matter_variation * grey_texture(p);
        Sample mean;
        double flair_signal = 0, t1_signal = 0;
        for (const auto& o : offsets) {
          const auto idx = a.grid.to_index({p[0] + o[0], p[1] + o[1], p[2] + o[2]});
          const Sample s = sample_template(a, lesions, idx);
          flair_signal += signal(clinic.flair, s, wmh_gain, gm_gain);
          t1_signal += signal(clinic.t1, s, 1.0, 1.0);
          mean.csf += s.csf;
          mean.gm += s.gm;
          mean.wm += s.wm;
          mean.wmh += std::min(s.wmh, s.wm);
          mean.lacune += s.lacune;
        }
        const double inv = 1.0 / offsets.size();
        flair_signal *= inv;
        t1_signal *= inv;
        mean.csf *= inv;
        mean.gm *= inv;
        mean.wm *= inv;
        mean.wmh *= inv;
        mean.lacune *= inv;

        const double f = clinic.flair_scale * std::pow(flair_signal * bias_at(flair_bias, q), clinic.flair_gamma);
        const double s1 = clinic.t1_scale * std::pow(t1_signal * bias_at(t1_bias, q), clinic.t1_gamma);
        const double n1 = normal(rng) * clinic.noise, n2 = normal(rng) * clinic.noise;
        const double n3 = normal(rng) * clinic.noise, n4 = normal(rng) * clinic.noise;
        out.flair.at(x, y, z) = static_cast<float>(std::hypot(f + n1 * flair_wm, n2 * flair_wm));
        out.t1.at(x, y, z) = static_cast<float>(std::hypot(s1 + n3 * t1_wm, n4 * t1_wm));

        const double brain = mean.csf + mean.gm + mean.wm;
        std::uint8_t tissue = kOutside;
        if (brain >= 0.5) {
          const double csf = mean.csf + mean.lacune, wm = mean.wm - mean.wmh;
          const double best = std::max({csf, mean.gm, wm, mean.wmh});
          tissue = best == mean.wmh ? kLesion : best == wm ? kWhiteMatter : best == mean.gm ? kGreyMatter : kCsf;
        }
        out.tissue.at(x, y, z) = tissue;
        out.labels.at(x, y, z) = mean.wmh >= 0.5 ? imaging::kWmh : imaging::kBackground;
        lacune_core.at(x, y, z) = mean.lacune >= 0.3;
      }
  // Label 2: the lacune, dilated by one voxel in-plane.
  const LabelMap other = imaging::dilate(lacune_core, {1, 1, 0});
  std::size_t lesion_voxels = 0;
  for (std::size_t i = 0; i < other.voxels.size(); ++i) {
    if (other.voxels[i]) out.labels.voxels[i] = imaging::kOtherPathology;
    lesion_voxels += out.labels.voxels[i] == imaging::kWmh;
  }
  out.label_ml = lesion_voxels * g.spacing[0] * g.spacing[1] * g.spacing[2] / 1000.0;
  return out;
}

ClinicProfile changed_scanner(const ClinicProfile& clinic) {
  ClinicProfile c = clinic;
  c.scanner += " (after the upgrade)";
  c.flair_gamma *= 1.3;
  c.t1_gamma *= 0.85;
  c.noise *= 2;
  return c;
}

Result<GenerateSummary> generate(const GenerateOptions& options,
                                 const std::function<void(const std::string&, const std::string&, int, int)>& progress) {
  const auto start = std::chrono::steady_clock::now();
  auto log = log::get("simulation");
  auto clinics = select_clinics(options.profile, options.clinics);
  if (!clinics) return clinics.error();
  if (options.subjects && (*options.subjects < 1 || *options.subjects > 500)) {
    return make_error("--subjects must be between 1 and 500");
  }
  for (auto& c : *clinics) {
    if (options.subjects) c.subjects = *options.subjects;
  }
  std::optional<std::pair<std::size_t, ClinicProfile>> changed;  // clinic index, profile after the change
  if (const auto& change = options.scanner_change) {
    for (std::size_t c = 0; c < clinics->size(); ++c) {
      if ((*clinics)[c].name == change->clinic) changed.emplace(c, changed_scanner((*clinics)[c]));
    }
    if (!changed) return make_error("--scanner-change: clinic '" + change->clinic + "' is not among those generated");
    if (change->from_index < 1 || change->from_index >= (*clinics)[changed->first].subjects) {
      return make_error("--scanner-change: the change must come after the first subject and before the last (index 1.." +
                        std::to_string((*clinics)[changed->first].subjects - 1) + ")");
    }
  }
  const fs::path templates = options.templates_dir.empty() ? default_templates_dir() : options.templates_dir;
  auto anatomy = load_anatomy(templates);
  if (!anatomy) return anatomy.error();
  log->info("anatomy: Colin27 from {} (ventricles {:.1f} mL, white matter {:.0f} mL)", templates.string(),
            anatomy->ventricle_ml, anatomy->white_matter_ml);

  struct Task {
    std::size_t clinic;
    int index;
  };
  std::vector<Task> tasks;
  for (std::size_t c = 0; c < clinics->size(); ++c)
    for (int i = 0; i < (*clinics)[c].subjects; ++i) tasks.push_back({c, i});
  std::vector<std::vector<nlohmann::json>> records(clinics->size());
  for (std::size_t c = 0; c < clinics->size(); ++c) records[c].resize((*clinics)[c].subjects);

  std::atomic<std::size_t> next{0};
  std::atomic<int> done{0};
  std::mutex mutex;
  std::optional<Error> first_error;
  auto worker = [&]() {
    for (std::size_t k = next++; k < tasks.size(); k = next++) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (first_error) return;
      }
      const bool after_change = changed && changed->first == tasks[k].clinic &&
                                tasks[k].index >= options.scanner_change->from_index;
      const ClinicProfile& clinic = after_change ? changed->second : (*clinics)[tasks[k].clinic];
      SimulatedSubject s = simulate_subject(*anatomy, clinic, options.seed, tasks[k].index);
      const fs::path dir = options.out / clinic.name / s.draw.id;
      Status st = imaging::write_image(dir / "pre" / "FLAIR.nii.gz", s.flair);
      if (st) st = imaging::write_image(dir / "pre" / "T1.nii.gz", s.t1);
      if (st) st = imaging::write_label_map(dir / "wmh.nii.gz", s.labels);
      std::lock_guard<std::mutex> lock(mutex);
      if (!st) {
        if (!first_error) first_error = st.error();
        return;
      }
      records[tasks[k].clinic][tasks[k].index] = {{"subject", s.draw.id},
                                                  {"lesion_ml_drawn", s.draw.lesion_ml},
                                                  {"lesion_ml_label", s.label_ml},
                                                  {"lacune", s.draw.lacune},
                                                  {"ventricle_enlargement", s.draw.ventricle_enlargement},
                                                  {"scanner_changed", after_change}};
      const int n = ++done;
      if (progress) progress(clinic.name, s.draw.id, n, static_cast<int>(tasks.size()));
    }
  };
  const int threads = std::max(1, options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (int i = 0; i < std::min<int>(threads, static_cast<int>(tasks.size())); ++i) pool.emplace_back(worker);
  for (auto& th : pool) th.join();
  if (first_error) return *first_error;

  for (std::size_t c = 0; c < clinics->size(); ++c) {
    const auto& clinic = (*clinics)[c];
    auto description = clinic_json(clinic, options.profile, options.seed, records[c]);
    if (changed && changed->first == c) {
      const auto& after = changed->second;
      description["scanner_change"] = {{"from_subject", records[c][options.scanner_change->from_index].value("subject", "")},
                                       {"scanner", after.scanner},
                                       {"flair_gamma", after.flair_gamma},
                                       {"t1_gamma", after.t1_gamma},
                                       {"rician_noise_fraction_of_wm", after.noise}};
    }
    const std::string json = description.dump(2) + "\n";
    if (auto st = files::write_atomically(options.out / clinic.name / "clinic.json", json); !st) return st.error();
  }
  GenerateSummary summary;
  summary.subjects = static_cast<int>(tasks.size());
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace fedda::simulation
