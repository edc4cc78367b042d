#pragma once
// The real brain every simulated subject starts from: Colin27 as Debian's `mricron-data`
// ships it (ch2better.nii.gz, T1 at 0.5 mm, for the brain's tissues; ch2bet.nii.gz, its brain
// mask; ch2.nii.gz, the whole head at 1 mm, for scalp and skull; JHU white-matter labels),
// turned once into tissue fractions on a 1 mm grid, and the per-subject lesion maps
// drawn on it. Read-only after loading; share one Anatomy between threads.

#include <array>
#include <cstdint>
#include <filesystem>
#include <random>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/imaging/volume.h"
#include "fedda/simulation/clinics.h"

namespace fedda::simulation {

struct Anatomy {
  struct Cell {
    float head = 0;  // T1 signal (white matter = 1) of everything: used outside the brain
    float csf = 0, gm = 0, wm = 0;  // tissue fractions inside the brain, summing to 1 there
  };
  imaging::Geometry grid;               // the 1 mm template grid (MNI space)
  std::vector<Cell> cells;
  std::vector<float> ventricle_distance;  // mm to the lateral ventricles
  std::vector<std::uint8_t> deep_preference;  // corona radiata / SLF: where deep WMH gather
  std::vector<std::uint32_t> periventricular_candidates;  // WM voxels within 20 mm of ventricles
  std::vector<std::uint32_t> deep_candidates;            // deep WM, 6 mm or more from them
  std::vector<std::uint32_t> ventricle_voxels;
  std::array<double, 3> brain_centre{};      // physical, mm
  std::array<double, 3> ventricle_centre{};  // physical, mm
  double ventricle_ml = 0;
  double white_matter_ml = 0;
};

// Where the templates are: $FEDDA_TEMPLATES if set, else /usr/share/mricron/templates.
std::filesystem::path default_templates_dir();

// Reads and classifies the template; error names a missing or unreadable template file and
// the package that provides it.
Result<Anatomy> load_anatomy(const std::filesystem::path& templates_dir);

// A subject's lesions on the template grid, as voxel fractions in [0, 1].
struct LesionMaps {
  std::vector<float> wmh;     // white matter hyperintensities, only inside white matter
  std::vector<float> lacune;  // a lacune or infarct (label 2), or all zero
  // Bright on FLAIR but not WMH, so never labelled, as in real scans: a thin ependymal lining
  // of the ventricles and CSF flow artefacts inside them.
  std::vector<float> mimic;
  double wmh_ml = 0;          // sum of the WMH fractions in mL
  int deep_lesions = 0;
};

// Periventricular caps and bands whose thickness follows smooth noise, scaled so that they
// hold `periventricular_share` of `target_ml`, plus irregular deep lesions for the rest; and
// the unlabelled hyperintensities that mimic them.
LesionMaps make_lesion_maps(const Anatomy& anatomy, const ClinicProfile& clinic, double target_ml,
                            bool with_lacune, std::mt19937_64& rng);

}  // namespace fedda::simulation
