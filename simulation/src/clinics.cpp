#include "fedda/simulation/clinics.h"

#include <cmath>

namespace fedda::simulation {

Result<Profile> parse_profile(const std::string& name) {
  if (name == "smoke") return Profile::kSmoke;
  if (name == "quick") return Profile::kQuick;
  if (name == "paper") return Profile::kPaper;
  return make_error("unknown profile '" + name + "' (choose smoke, quick or paper)");
}

std::string profile_name(Profile profile) {
  switch (profile) {
    case Profile::kSmoke: return "smoke";
    case Profile::kQuick: return "quick";
    case Profile::kPaper: return "paper";
  }
  return "?";
}

namespace {

ClinicProfile utrecht() {
  ClinicProfile c;
  c.name = "utrecht";
  c.scanner = "3T Philips Achieva";
  c.first_subject_id = 0;
  c.size = {240, 240, 48};
  c.spacing = {0.96, 0.95, 3.00};
  c.flair = {0.22, 1.22, 1.0, 1.55, 1.10, 1.38};
  c.t1 = {0.28, 0.62, 1.0, 0.72, 0.95, 0.85};
  c.flair_gamma = 1.0;
  c.t1_gamma = 1.0;
  c.flair_scale = 600;
  c.t1_scale = 900;
  c.noise = 0.035;
  c.bias = 0.15;
  c.lesion_median_ml = 8.0;
  c.lesion_sigma = 0.8;
  c.deep_lesions_per_ml = 1.2;
  c.lacune_probability = 0.30;
  c.ventricle_enlargement_max = 0.30;
  return c;
}

ClinicProfile singapore() {
  ClinicProfile c;
  c.name = "singapore";
  c.scanner = "3T Siemens TrioTim";
  c.first_subject_id = 50;
  c.size = {252, 232, 48};
  c.spacing = {1.00, 1.00, 3.00};
  c.flair = {0.35, 1.14, 1.0, 1.45, 1.45, 1.30};
  c.t1 = {0.22, 0.58, 1.0, 0.68, 1.10, 0.80};
  c.flair_gamma = 0.85;
  c.t1_gamma = 1.10;
  c.flair_scale = 300;
  c.t1_scale = 450;
  c.noise = 0.050;
  c.bias = 0.25;
  c.lesion_median_ml = 5.0;
  c.lesion_sigma = 0.8;
  c.deep_lesions_per_ml = 1.6;
  c.lacune_probability = 0.40;
  c.ventricle_enlargement_max = 0.25;
  return c;
}

ClinicProfile amsterdam() {
  ClinicProfile c;
  c.name = "amsterdam";
  c.scanner = "3T GE Signa HDxt";
  c.first_subject_id = 100;
  c.size = {132, 256, 83};
  c.spacing = {1.20, 0.98, 3.00};
  c.flair = {0.18, 1.30, 1.0, 1.45, 0.90, 1.34};
  c.t1 = {0.30, 0.66, 1.0, 0.80, 0.85, 0.90};
  c.flair_gamma = 1.20;
  c.t1_gamma = 0.90;
  c.flair_scale = 1500;
  c.t1_scale = 2200;
  c.noise = 0.060;
  c.bias = 0.30;
  c.lesion_median_ml = 14.0;
  c.lesion_sigma = 0.7;
  c.deep_lesions_per_ml = 0.8;
  c.lacune_probability = 0.50;
  c.ventricle_enlargement_max = 0.40;
  return c;
}

// Coarsens the in-plane grid by `factor` (same field of view) and the slices by `slab`.
void coarsen(ClinicProfile& c, double factor, double slab) {
  for (int d = 0; d < 2; ++d) {
    const double fov = c.size[d] * c.spacing[d];
    c.size[d] = static_cast<std::size_t>(std::lround(c.size[d] / factor));
    c.spacing[d] = fov / c.size[d];
  }
  const double fov_z = c.size[2] * c.spacing[2];
  c.size[2] = static_cast<std::size_t>(std::lround(fov_z / slab));
  c.spacing[2] = slab;
}

}  // namespace

std::vector<ClinicProfile> clinic_profiles(Profile profile) {
  std::vector<ClinicProfile> clinics{utrecht(), singapore(), amsterdam()};
  for (auto& c : clinics) {
    switch (profile) {
      case Profile::kPaper:
        c.subjects = 20;
        break;
      case Profile::kQuick:
        c.subjects = 10;
        coarsen(c, 1.5, 3.0);
        break;
      case Profile::kSmoke:
        c.subjects = 4;
        coarsen(c, 4.0, 6.0);
        break;
    }
  }
  return clinics;
}

Result<std::vector<ClinicProfile>> select_clinics(Profile profile, const std::vector<std::string>& names) {
  const auto all = clinic_profiles(profile);
  if (names.empty()) return all;
  std::vector<ClinicProfile> out;
  for (const auto& n : names) {
    bool found = false;
    for (const auto& c : all) {
      if (c.name == n) {
        out.push_back(c);
        found = true;
      }
    }
    if (!found) return make_error("unknown clinic '" + n + "' (choose utrecht, singapore or amsterdam)");
  }
  return out;
}

}  // namespace fedda::simulation
