#pragma once
// `fedda-sim generate`: simulated clinics in the WMH challenge layout.
//
// Each subject is the template brain under a random affine, a smooth random deformation and
// an age-related ventricle enlargement, with WMH drawn from its clinic's population and an
// occasional lacune (label 2, dilated by one voxel in-plane as the challenge's annotators
// did). Its FLAIR and T1 are synthesised from tissue fractions with the clinic's contrasts,
// averaged over each voxel of the clinic's grid (3 mm slabs: partial volume across the slab),
// then given the scanner's bias field, contrast curve, intensity range and Rician noise.
// Output is a pure function of (profile, clinics, seed, subject count): same seed, same bytes.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/imaging/volume.h"
#include "fedda/simulation/anatomy.h"
#include "fedda/simulation/clinics.h"

namespace fedda::simulation {

// What is drawn for one subject from its clinic's population, before any image is made.
struct SubjectDraw {
  std::string id;               // folder name, numbered as in the challenge
  double lesion_ml = 0;         // target WMH volume
  bool lacune = false;
  double ventricle_enlargement = 0;
  std::uint64_t seed = 0;       // of everything else random about this subject
};

SubjectDraw draw_subject(const ClinicProfile& clinic, std::uint64_t seed, int index);

// Dominant tissue per voxel of the clinic grid, for checks of the generator itself.
enum TissueClass : std::uint8_t { kOutside = 0, kCsf = 1, kGreyMatter = 2, kWhiteMatter = 3, kLesion = 4 };

struct SimulatedSubject {
  SubjectDraw draw;
  imaging::Image flair;
  imaging::Image t1;
  imaging::LabelMap labels;
  imaging::LabelMap tissue;   // TissueClass per voxel
  double template_lesion_ml = 0;  // WMH volume drawn on the template, before resampling
  double label_ml = 0;            // volume of label 1 on the clinic grid
};

SimulatedSubject simulate_subject(const Anatomy& anatomy, const ClinicProfile& clinic,
                                  std::uint64_t seed, int index);

// A scanner change in the middle of a study (a software upgrade, a new sequence): the clinic's
// subjects from `from_index` (0-based, in subject order) on are acquired with another contrast
// curve (FLAIR gamma x1.3, T1 gamma x0.85) and twice the noise. Their anatomy and lesions are
// drawn as before; clinic.json marks them ("scanner_changed").
struct ScannerChange {
  std::string clinic;
  int from_index = 0;
};
ClinicProfile changed_scanner(const ClinicProfile& clinic);

struct GenerateOptions {
  Profile profile = Profile::kSmoke;
  std::filesystem::path out;
  std::uint64_t seed = 1;
  std::optional<int> subjects;            // per clinic; default from the profile
  std::vector<std::string> clinics;       // default: all three
  int threads = 0;                        // 0 = hardware concurrency
  std::filesystem::path templates_dir;    // default: default_templates_dir()
  std::optional<ScannerChange> scanner_change;
};

struct GenerateSummary {
  int subjects = 0;
  double seconds = 0;
};

// Writes OUT/<clinic>/<subject>/pre/{FLAIR,T1}.nii.gz, OUT/<clinic>/<subject>/wmh.nii.gz and
// OUT/<clinic>/clinic.json. Files are written through temporary names; `progress` (if set) is
// called after each subject from the writing thread.
Result<GenerateSummary> generate(const GenerateOptions& options,
                                 const std::function<void(const std::string& clinic, const std::string& subject,
                                                          int done, int total)>& progress = {});

}  // namespace fedda::simulation
