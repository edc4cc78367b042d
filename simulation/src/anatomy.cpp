#include "fedda/simulation/anatomy.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "fedda/common/log.h"
#include "fedda/imaging/morphology.h"
#include "fedda/imaging/nifti_io.h"
#include "fedda/imaging/preprocess.h"
#include "noise.h"

namespace fedda::simulation {
namespace fs = std::filesystem;
using imaging::Geometry;
using imaging::Image;
using imaging::LabelMap;

namespace {

Result<Image> read_template(const fs::path& dir, const std::string& name) {
  auto image = imaging::read_image(dir / name);
  if (!image) {
    return make_error(image.error().message + " (the simulator's anatomy template; install "
                      "Debian's mricron-data package, or run scripts/install-deps.sh)");
  }
  return image;
}

// Three-class k-means on brain intensities: CSF < GM < WM. Returns the class means.
std::array<double, 3> tissue_means(const std::vector<float>& values) {
  std::vector<float> sorted = values;
  std::sort(sorted.begin(), sorted.end());
  auto q = [&](double p) { return static_cast<double>(sorted[static_cast<std::size_t>(p * (sorted.size() - 1))]); };
  std::array<double, 3> m{q(0.1), q(0.5), q(0.9)};
  for (int iteration = 0; iteration < 30; ++iteration) {
    std::array<double, 3> sum{0, 0, 0};
    std::array<std::size_t, 3> n{0, 0, 0};
    for (float v : sorted) {
      int best = 0;
      for (int k = 1; k < 3; ++k) {
        if (std::abs(v - m[k]) < std::abs(v - m[best])) best = k;
      }
      sum[best] += v;
      ++n[best];
    }
    for (int k = 0; k < 3; ++k) {
      if (n[k]) m[k] = sum[k] / n[k];
    }
  }
  return m;
}

// Linear partial-volume model between neighbouring class means.
Anatomy::Cell fractions(float v, const std::array<double, 3>& m) {
  Anatomy::Cell c;
  if (v <= m[0]) {
    c.csf = 1;
  } else if (v <= m[1]) {
    c.gm = static_cast<float>((v - m[0]) / (m[1] - m[0]));
    c.csf = 1 - c.gm;
  } else if (v <= m[2]) {
    c.wm = static_cast<float>((v - m[1]) / (m[2] - m[1]));
    c.gm = 1 - c.wm;
  } else {
    c.wm = 1;
  }
  return c;
}

}  // namespace

fs::path default_templates_dir() {
  if (const char* env = std::getenv("FEDDA_TEMPLATES"); env && *env) return env;
  return "/usr/share/mricron/templates";
}

Result<Anatomy> load_anatomy(const fs::path& dir) {
  auto log = log::get("simulation");
  auto brain = read_template(dir, "ch2bet.nii.gz");
  if (!brain) return brain.error();
  auto head_hires = read_template(dir, "ch2better.nii.gz");
  if (!head_hires) return head_hires.error();
  auto jhu = read_template(dir, "JHU-WhiteMatter-labels-1mm.nii.gz");
  if (!jhu) return jhu.error();
  // ch2better is masked to the brain; the 1 mm ch2 keeps scalp, skull and neck.
  auto whole_head = read_template(dir, "ch2.nii.gz");
  if (!whole_head) return whole_head.error();

  Anatomy a;
  a.grid = brain->geometry;
  const std::size_t n = a.grid.voxel_count();
  const Image head = imaging::resample_image(*head_hires, a.grid, 0.0f);
  const Image jhu_on_grid = imaging::resample_image(*jhu, a.grid, 0.0f);  // labels: read back rounded

  LabelMap brain_mask(a.grid);
  std::vector<float> brain_values;
  for (std::size_t i = 0; i < n; ++i) {
    brain_mask.voxels[i] = brain->voxels[i] > 0;
    if (brain_mask.voxels[i]) brain_values.push_back(head.voxels[i]);
  }
  if (brain_values.size() < 100000) {
    return make_error((dir / "ch2bet.nii.gz").string() + ": too few brain voxels for a template");
  }
  const auto means = tissue_means(brain_values);
  log->debug("template tissue means (T1): CSF {:.1f}, GM {:.1f}, WM {:.1f}", means[0], means[1], means[2]);

  a.cells.resize(n);
  LabelMap csf_central(a.grid);
  double brain_sum[3] = {0, 0, 0};
  std::size_t brain_count = 0;
  for (std::size_t z = 0; z < a.grid.size[2]; ++z)
    for (std::size_t y = 0; y < a.grid.size[1]; ++y)
      for (std::size_t x = 0; x < a.grid.size[0]; ++x) {
        const std::size_t i = brain_mask.offset(x, y, z);
        Anatomy::Cell& c = a.cells[i];
        if (brain_mask.voxels[i]) {
          c = fractions(head.voxels[i], means);
          const auto p = a.grid.to_physical(x, y, z);
          for (int d = 0; d < 3; ++d) brain_sum[d] += p[d];
          ++brain_count;
        }
      }
  for (int d = 0; d < 3; ++d) a.brain_centre[d] = brain_sum[d] / brain_count;
  // Non-brain signal from the whole-head template, scaled so its white matter is 1.
  const Image scalp = imaging::resample_image(*whole_head, a.grid, 0.0f);
  double scalp_wm = 0;
  std::size_t scalp_wm_count = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (a.cells[i].wm > 0.95f) {
      scalp_wm += scalp.voxels[i];
      ++scalp_wm_count;
    }
  }
  scalp_wm = scalp_wm_count ? scalp_wm / scalp_wm_count : 1.0;
  for (std::size_t i = 0; i < n; ++i) {
    a.cells[i].head = static_cast<float>(std::max(0.0, scalp.voxels[i] / scalp_wm));
  }

  // Lateral ventricles: the largest CSF components in a central box around the brain centre.
  for (std::size_t z = 0; z < a.grid.size[2]; ++z)
    for (std::size_t y = 0; y < a.grid.size[1]; ++y)
      for (std::size_t x = 0; x < a.grid.size[0]; ++x) {
        const std::size_t i = csf_central.offset(x, y, z);
        if (!brain_mask.voxels[i] || a.cells[i].csf < 0.6f) continue;
        const auto p = a.grid.to_physical(x, y, z);
        const double dx = p[0] - a.brain_centre[0], dy = p[1] - a.brain_centre[1],
                     dz = p[2] - a.brain_centre[2];
        if (std::abs(dx) < 28 && std::abs(dy) < 45 && dz > -12 && dz < 30) csf_central.voxels[i] = 1;
      }
  const auto components = imaging::connected_components(csf_central, false);
  std::vector<std::size_t> sizes(components.count + 1, 0);
  for (auto label : components.labels) ++sizes[label];
  sizes[0] = 0;
  const std::size_t largest = *std::max_element(sizes.begin(), sizes.end());
  if (largest < 1000) return make_error("template: no lateral ventricles found (is ch2bet.nii.gz the Colin27 brain?)");
  LabelMap ventricles(a.grid);
  double vent_sum[3] = {0, 0, 0};
  std::size_t vent_count = 0;
  for (std::size_t z = 0; z < a.grid.size[2]; ++z)
    for (std::size_t y = 0; y < a.grid.size[1]; ++y)
      for (std::size_t x = 0; x < a.grid.size[0]; ++x) {
        const std::size_t i = ventricles.offset(x, y, z);
        const auto label = components.labels[i];
        if (label == 0 || sizes[label] < largest / 4) continue;
        ventricles.voxels[i] = 1;
        a.ventricle_voxels.push_back(static_cast<std::uint32_t>(i));
        const auto p = a.grid.to_physical(x, y, z);
        for (int d = 0; d < 3; ++d) vent_sum[d] += p[d];
        ++vent_count;
      }
  for (int d = 0; d < 3; ++d) a.ventricle_centre[d] = vent_sum[d] / vent_count;
  a.ventricle_ml = vent_count / 1000.0;
  a.ventricle_distance = imaging::distance_to_mask(ventricles);

  // Deep white matter where WMH gather: corona radiata (JHU 23-28) and superior
  // longitudinal fasciculus (41-42).
  a.deep_preference.assign(n, 0);
  for (std::size_t i = 0; i < n; ++i) {
    const int label = static_cast<int>(std::lround(jhu_on_grid.voxels[i]));
    a.deep_preference[i] = (label >= 23 && label <= 28) || label == 41 || label == 42;
  }
  double wm_sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    wm_sum += a.cells[i].wm;
    if (a.cells[i].wm < 0.5f) continue;
    if (a.ventricle_distance[i] < 20.0f) a.periventricular_candidates.push_back(static_cast<std::uint32_t>(i));
    if (a.cells[i].wm >= 0.9f && a.ventricle_distance[i] >= 6.0f) a.deep_candidates.push_back(static_cast<std::uint32_t>(i));
  }
  a.white_matter_ml = wm_sum / 1000.0;
  log->debug("template: ventricles {:.1f} mL, white matter {:.0f} mL, {} periventricular and {} deep candidates",
             a.ventricle_ml, a.white_matter_ml, a.periventricular_candidates.size(), a.deep_candidates.size());
  return a;
}

LesionMaps make_lesion_maps(const Anatomy& a, const ClinicProfile& clinic, double target_ml,
                            bool with_lacune, std::mt19937_64& rng) {
  const std::size_t n = a.grid.voxel_count();
  const auto& g = a.grid;
  LesionMaps maps;
  maps.wmh.assign(n, 0.0f);
  maps.lacune.assign(n, 0.0f);
  maps.mimic.assign(n, 0.0f);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const std::array<double, 3> lo = g.to_physical(0, 0, 0);
  const std::array<double, 3> hi = g.to_physical(g.size[0] - 1.0, g.size[1] - 1.0, g.size[2] - 1.0);
  std::array<double, 3> box_lo, box_hi;
  for (int d = 0; d < 3; ++d) {
    box_lo[d] = std::min(lo[d], hi[d]);
    box_hi[d] = std::max(lo[d], hi[d]);
  }

  // Periventricular: thickness = scale * cap(p) * texture(p); caps at the horns (far from the
  // ventricles' centre along the anterior-posterior axis), thin irregular bands elsewhere.
  const detail::LatticeNoise texture(box_lo, box_hi, 9.0, rng);
  std::vector<float> shape(a.periventricular_candidates.size());
  for (std::size_t k = 0; k < shape.size(); ++k) {
    const std::uint32_t i = a.periventricular_candidates[k];
    const std::size_t x = i % g.size[0], y = (i / g.size[0]) % g.size[1], z = i / (g.size[0] * g.size[1]);
    const auto p = g.to_physical(x, y, z);
    const double ap = std::abs(p[1] - a.ventricle_centre[1]) / 35.0;
    const double cap = 0.6 + 1.4 * std::min(1.0, ap * ap);
    const double t = 1.0 / (1.0 + std::exp(-1.8 * texture(p)));  // in (0, 1)
    shape[k] = static_cast<float>(cap * (0.25 + 1.5 * t));
  }
  const double pv_target = target_ml * clinic.periventricular_share;
  auto pv_volume = [&](double scale, bool write) {
    double ml = 0;
    for (std::size_t k = 0; k < shape.size(); ++k) {
      const std::uint32_t i = a.periventricular_candidates[k];
      const double thickness = scale * shape[k];
      const double f = std::clamp((thickness - a.ventricle_distance[i]) / 1.5 + 0.5, 0.0, 1.0);
      ml += f / 1000.0;
      if (write) maps.wmh[i] = static_cast<float>(f);
    }
    return ml;
  };
  double lo_scale = 0.0, hi_scale = 30.0;
  for (int it = 0; it < 40; ++it) {
    const double mid = 0.5 * (lo_scale + hi_scale);
    (pv_volume(mid, false) < pv_target ? lo_scale : hi_scale) = mid;
  }
  pv_volume(0.5 * (lo_scale + hi_scale), true);

  // Deep lesions: irregular ellipsoids in deep white matter, preferring the corona radiata.
  const double deep_target = target_ml - pv_volume(0.5 * (lo_scale + hi_scale), false);
  const detail::LatticeNoise roughness(box_lo, box_hi, 3.0, rng);
  auto pick_deep_centre = [&]() -> std::uint32_t {
    for (int attempt = 0; attempt < 20; ++attempt) {
      const auto i = a.deep_candidates[static_cast<std::size_t>(uniform(rng) * a.deep_candidates.size())];
      if (a.deep_preference[i] || uniform(rng) < 0.25) return i;
    }
    return a.deep_candidates[static_cast<std::size_t>(uniform(rng) * a.deep_candidates.size())];
  };
  auto paint_blob = [&](std::uint32_t centre, std::array<double, 3> radii, std::vector<float>& map,
                        bool confine_to_wm) {
    const std::size_t cx = centre % g.size[0], cy = (centre / g.size[0]) % g.size[1],
                      cz = centre / (g.size[0] * g.size[1]);
    const int reach = static_cast<int>(std::ceil(std::max({radii[0], radii[1], radii[2]}) * 1.5)) + 1;
    double painted = 0;
    for (int dz = -reach; dz <= reach; ++dz)
      for (int dy = -reach; dy <= reach; ++dy)
        for (int dx = -reach; dx <= reach; ++dx) {
          const long x = static_cast<long>(cx) + dx, y = static_cast<long>(cy) + dy, z = static_cast<long>(cz) + dz;
          if (x < 0 || y < 0 || z < 0 || x >= static_cast<long>(g.size[0]) || y >= static_cast<long>(g.size[1]) ||
              z >= static_cast<long>(g.size[2]))
            continue;
          const std::size_t i = static_cast<std::size_t>(x) + g.size[0] * (static_cast<std::size_t>(y) + g.size[1] * z);
          if (confine_to_wm && a.cells[i].wm < 0.5f) continue;
          const double r2 = (dx * dx) / (radii[0] * radii[0]) + (dy * dy) / (radii[1] * radii[1]) +
                            (dz * dz) / (radii[2] * radii[2]);
          const double edge = std::sqrt(r2) + 0.35 * roughness(g.to_physical(x, y, z));
          const double f = std::clamp((1.0 - edge) * 2.0 + 0.5, 0.0, 1.0);
          if (f > map[i]) {
            painted += f - map[i];
            map[i] = static_cast<float>(f);
          }
        }
    return painted / 1000.0;
  };
  if (!a.deep_candidates.empty() && deep_target > 0) {
    const int count = std::max(1, static_cast<int>(std::lround(deep_target * clinic.deep_lesions_per_ml)));
    const double mean_ml = deep_target / count;
    // Radius of a sphere of the mean volume, spread lognormally per lesion.
    const double mean_radius = std::cbrt(mean_ml * 1000.0 * 3.0 / (4.0 * M_PI));
    std::lognormal_distribution<double> spread(0.0, 0.35);
    double painted = 0;
    for (int k = 0; k < count * 3 && painted < deep_target; ++k) {
      // Never much more than the volume still to place.
      const double remaining_radius = std::cbrt((deep_target - painted) * 1000.0 * 3.0 / (4.0 * M_PI));
      const double r = std::clamp(std::min(mean_radius * spread(rng), remaining_radius), 1.0, 9.0);
      const std::array<double, 3> radii{r * (0.7 + 0.6 * uniform(rng)), r * (0.7 + 0.6 * uniform(rng)),
                                        r * (0.6 + 0.6 * uniform(rng))};
      painted += paint_blob(pick_deep_centre(), radii, maps.wmh, true);
      ++maps.deep_lesions;
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (a.cells[i].wm < 0.5f) maps.wmh[i] = 0.0f;  // WMH live in white matter only
  }

  if (with_lacune && !a.deep_candidates.empty()) {
    const double r = 2.0 + 2.5 * uniform(rng);
    paint_blob(pick_deep_centre(), {r, r * (0.8 + 0.4 * uniform(rng)), r}, maps.lacune, false);
    for (std::size_t i = 0; i < n; ++i) {
      if (maps.lacune[i] > 0) maps.wmh[i] *= 1.0f - maps.lacune[i];
    }
  }
  for (float f : maps.wmh) maps.wmh_ml += f / 1000.0;

  // Ependymal lining: a smooth 1-2.5 mm rim around the ventricles, patchy along its length.
  const double rim_mm = 1.0 + 1.5 * uniform(rng);
  for (std::size_t k = 0; k < shape.size(); ++k) {
    const std::uint32_t i = a.periventricular_candidates[k];
    const double d = a.ventricle_distance[i];
    const double patchy = 0.5 + 0.5 * std::clamp(static_cast<double>(shape[k]) / 1.5, 0.0, 1.0);
    maps.mimic[i] = static_cast<float>(std::clamp((rim_mm - d) / 1.0 + 0.5, 0.0, 1.0) * patchy);
  }
  // CSF flow artefacts: a few bright blobs inside the ventricles.
  if (!a.ventricle_voxels.empty()) {
    const int artefacts = 1 + static_cast<int>(uniform(rng) * 3);
    for (int k = 0; k < artefacts; ++k) {
      const auto centre = a.ventricle_voxels[static_cast<std::size_t>(uniform(rng) * a.ventricle_voxels.size())];
      const double r = 1.5 + 2.0 * uniform(rng);
      paint_blob(centre, {r, r * (0.7 + 0.6 * uniform(rng)), r * 0.8}, maps.mimic, false);
    }
  }
  return maps;
}

}  // namespace fedda::simulation
