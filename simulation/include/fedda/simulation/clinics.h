#pragma once
// The simulated clinics: one scanner model and one patient population per clinic, after the
// three clinics of the MICCAI 2017 WMH challenge used by the seed paper (Table 1).
//
// Intensities are relative to white matter (= 1) before the scanner's contrast curve and
// scale. Profiles: `paper` uses Table 1's grids exactly with 20 subjects per clinic; `quick`
// keeps the 3 mm slices on a coarser in-plane grid with 10 subjects; `smoke` is tiny, for tests.

#include <array>
#include <cstddef>
#include <string>
#include <vector>

#include "fedda/common/result.h"

namespace fedda::simulation {

enum class Profile { kSmoke, kQuick, kPaper };

Result<Profile> parse_profile(const std::string& name);
std::string profile_name(Profile profile);

struct TissueContrast {
  double csf = 0, gm = 0, wm = 1, wmh = 0;
  double head = 1;   // gain on the template's non-brain signal (scalp, fat, skull)
  double mimic = 1;  // unlabelled hyperintensities: ependymal lining, CSF flow artefacts
};

struct ClinicProfile {
  std::string name;      // folder name: utrecht, singapore, amsterdam
  std::string scanner;   // as in Table 1
  int first_subject_id = 0;  // subject folders are numbered from here, as in the challenge
  int subjects = 0;

  std::array<std::size_t, 3> size{};   // voxels; axis 2 is the slice axis
  std::array<double, 3> spacing{};     // mm; spacing[2] is the slab thickness

  TissueContrast flair;
  TissueContrast t1;
  double flair_gamma = 1, t1_gamma = 1;     // contrast curve s -> scale * s^gamma
  double flair_scale = 1, t1_scale = 1;     // intensity range
  double noise = 0;          // Rician sigma, as a fraction of the white-matter intensity
  double bias = 0;           // amplitude of the smooth multiplicative bias field
  double lesion_contrast_spread = 0.30;  // lesion-to-lesion intensity variation (fraction)
  double grey_matter_variation = 0.10;   // regional grey-matter intensity variation (fraction)

  // Patient population: total WMH volume ~ lognormal(log(median), sigma), in mL.
  double lesion_median_ml = 0;
  double lesion_sigma = 0;
  double periventricular_share = 0.7;  // of the total volume; the rest is deep WMH
  double deep_lesions_per_ml = 0;      // how many deep lesions carry the deep volume
  double lacune_probability = 0;       // chance of a label-2 lesion (lacune or infarct)
  double ventricle_enlargement_max = 0; // age-related, drawn uniformly in [0, max]
};

// The three clinics of a profile, in the order utrecht, singapore, amsterdam.
std::vector<ClinicProfile> clinic_profiles(Profile profile);

// Selects clinics by name; error names an unknown clinic and the choices.
Result<std::vector<ClinicProfile>> select_clinics(Profile profile, const std::vector<std::string>& names);

}  // namespace fedda::simulation
