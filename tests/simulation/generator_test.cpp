#include "fedda/simulation/generator.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "fedda/common/files.h"
#include "fedda/imaging/nifti_io.h"
#include "support/test_support.h"

namespace fedda::simulation {
namespace {

using imaging::Image;
using imaging::LabelMap;

class Simulator : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto loaded = load_anatomy(default_templates_dir());
    ASSERT_TRUE(loaded) << loaded.error().message;
    anatomy_ = new Anatomy(std::move(*loaded));
  }
  static void TearDownTestSuite() {
    delete anatomy_;
    anatomy_ = nullptr;
  }
  static const Anatomy& anatomy() { return *anatomy_; }
  static const ClinicProfile& clinic(Profile p, const std::string& name) {
    static std::map<std::pair<int, std::string>, ClinicProfile> cache;
    const auto key = std::make_pair(static_cast<int>(p), name);
    if (!cache.count(key)) cache[key] = select_clinics(p, {name}).value().front();
    return cache[key];
  }

 private:
  static Anatomy* anatomy_;
};
Anatomy* Simulator::anatomy_ = nullptr;

std::map<int, double> mean_flair_by_tissue(const SimulatedSubject& s) {
  std::map<int, double> sum;
  std::map<int, int> count;
  for (std::size_t i = 0; i < s.flair.voxels.size(); ++i) {
    sum[s.tissue.voxels[i]] += s.flair.voxels[i];
    ++count[s.tissue.voxels[i]];
  }
  std::map<int, double> mean;
  for (auto& [k, v] : sum) mean[k] = v / count[k];
  return mean;
}

TEST(Clinics, PaperProfileUsesTableOneGeometry) {
  const auto clinics = clinic_profiles(Profile::kPaper);
  ASSERT_EQ(clinics.size(), 3u);
  EXPECT_EQ(clinics[0].name, "utrecht");
  EXPECT_EQ(clinics[0].size, (std::array<std::size_t, 3>{240, 240, 48}));
  EXPECT_EQ(clinics[0].spacing, (std::array<double, 3>{0.96, 0.95, 3.00}));
  EXPECT_EQ(clinics[1].size, (std::array<std::size_t, 3>{252, 232, 48}));
  EXPECT_EQ(clinics[1].spacing, (std::array<double, 3>{1.00, 1.00, 3.00}));
  EXPECT_EQ(clinics[2].size, (std::array<std::size_t, 3>{132, 256, 83}));
  EXPECT_EQ(clinics[2].spacing, (std::array<double, 3>{1.20, 0.98, 3.00}));
  for (const auto& c : clinics) EXPECT_EQ(c.subjects, 20);
}

TEST(Clinics, QuickAndSmokeKeepTheFieldOfView) {
  const auto paper = clinic_profiles(Profile::kPaper);
  for (Profile p : {Profile::kQuick, Profile::kSmoke}) {
    const auto clinics = clinic_profiles(p);
    for (std::size_t c = 0; c < 3; ++c) {
      for (int d = 0; d < 2; ++d) {
        EXPECT_NEAR(clinics[c].size[d] * clinics[c].spacing[d], paper[c].size[d] * paper[c].spacing[d], 1e-6);
        EXPECT_LT(clinics[c].size[d], paper[c].size[d]);
      }
    }
  }
  EXPECT_EQ(clinic_profiles(Profile::kQuick)[0].spacing[2], 3.0);
}

TEST(Clinics, UnknownNamesAreErrorsThatListTheChoices) {
  auto bad = select_clinics(Profile::kSmoke, {"utrecht", "boston"});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("boston"), std::string::npos);
  EXPECT_NE(bad.error().message.find("amsterdam"), std::string::npos);
  EXPECT_FALSE(parse_profile("huge"));
}

TEST(Clinics, LesionLoadDrawsFollowEachClinicsDistribution) {
  for (const auto& c : clinic_profiles(Profile::kQuick)) {
    std::vector<double> loads;
    int lacunes = 0;
    for (int i = 0; i < 801; ++i) {
      const auto d = draw_subject(c, 7, i);
      loads.push_back(d.lesion_ml);
      lacunes += d.lacune;
    }
    std::nth_element(loads.begin(), loads.begin() + 400, loads.end());
    EXPECT_NEAR(loads[400] / c.lesion_median_ml, 1.0, 0.12) << c.name;
    EXPECT_NEAR(lacunes / 801.0, c.lacune_probability, 0.06) << c.name;
  }
}

TEST_F(Simulator, LesionsLieOnlyInWhiteMatterAndHitTheirTarget) {
  std::mt19937_64 rng(3);
  for (double target : {2.0, 8.0, 25.0}) {
    const auto maps = make_lesion_maps(anatomy(), clinic(Profile::kQuick, "utrecht"), target, true, rng);
    std::size_t outside_wm = 0, lesion_voxels = 0;
    for (std::size_t i = 0; i < maps.wmh.size(); ++i) {
      if (maps.wmh[i] <= 0) continue;
      ++lesion_voxels;
      outside_wm += anatomy().cells[i].wm < 0.5f;
    }
    EXPECT_GT(lesion_voxels, 0u);
    EXPECT_EQ(outside_wm, 0u) << "target " << target;
    EXPECT_NEAR(maps.wmh_ml / target, 1.0, 0.25) << "target " << target;
    EXPECT_GT(maps.deep_lesions, 0);
  }
}

TEST_F(Simulator, FlairContrastOrderIsCsfWhiteGreyLesion) {
  for (const char* name : {"utrecht", "singapore", "amsterdam"}) {
    const auto s = simulate_subject(anatomy(), clinic(Profile::kQuick, name), 11, 0);
    auto m = mean_flair_by_tissue(s);
    ASSERT_TRUE(m.count(kLesion)) << name << " has no lesion voxels";
    EXPECT_LT(m[kCsf], m[kWhiteMatter]) << name;
    EXPECT_LT(m[kWhiteMatter], m[kGreyMatter]) << name;
    EXPECT_LT(m[kGreyMatter], m[kLesion]) << name;
    // WMH labels cover lesion tissue, and label-1 volume tracks what was drawn.
    std::size_t label_in_lesion = 0, labelled = 0;
    for (std::size_t i = 0; i < s.labels.voxels.size(); ++i) {
      if (s.labels.voxels[i] != imaging::kWmh) continue;
      ++labelled;
      label_in_lesion += s.tissue.voxels[i] == kLesion;
    }
    ASSERT_GT(labelled, 0u);
    EXPECT_EQ(label_in_lesion, labelled) << name;
    EXPECT_NEAR(s.label_ml / s.template_lesion_ml, 1.0, 0.5) << name;
  }
}

// Histogram of brain FLAIR after z-scoring inside the brain: what is left once the scanners'
// intensity ranges are normalised away.
std::vector<double> zscored_brain_histogram(const SimulatedSubject& s) {
  double sum = 0, sq = 0;
  std::size_t n = 0;
  for (std::size_t i = 0; i < s.flair.voxels.size(); ++i) {
    if (s.tissue.voxels[i] == kOutside) continue;
    sum += s.flair.voxels[i];
    sq += s.flair.voxels[i] * s.flair.voxels[i];
    ++n;
  }
  const double mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
  std::vector<double> h(40, 0.0);
  for (std::size_t i = 0; i < s.flair.voxels.size(); ++i) {
    if (s.tissue.voxels[i] == kOutside) continue;
    const double z = (s.flair.voxels[i] - mean) / sd;
    const int bin = std::clamp(static_cast<int>((z + 4.0) / 10.0 * 40), 0, 39);
    h[bin] += 1.0 / n;
  }
  return h;
}

double l1(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d += std::abs(a[i] - b[i]);
  return d;
}

TEST_F(Simulator, ClinicsDifferInIntensityAndContrast) {
  const std::vector<std::string> names{"utrecht", "singapore", "amsterdam"};
  std::map<std::string, double> median_brain;
  std::map<std::string, std::vector<std::vector<double>>> histograms;
  for (const auto& name : names) {
    for (int index : {0, 1}) {
      const auto s = simulate_subject(anatomy(), clinic(Profile::kQuick, name), 5, index);
      histograms[name].push_back(zscored_brain_histogram(s));
      if (index) continue;
      std::vector<float> brain;
      for (std::size_t i = 0; i < s.flair.voxels.size(); ++i) {
        if (s.tissue.voxels[i] != kOutside) brain.push_back(s.flair.voxels[i]);
      }
      std::nth_element(brain.begin(), brain.begin() + brain.size() / 2, brain.end());
      median_brain[name] = brain[brain.size() / 2];
    }
  }
  // Intensity ranges differ by more than a factor 1.5 between the scanners...
  EXPECT_GT(median_brain["utrecht"] / median_brain["singapore"], 1.5);
  EXPECT_GT(median_brain["amsterdam"] / median_brain["utrecht"], 1.5);
  // ...and so do the shapes of the z-scored histograms, more between clinics than between
  // two subjects of one clinic.
  double within = 0;
  for (const auto& name : names) within = std::max(within, l1(histograms[name][0], histograms[name][1]));
  for (std::size_t a = 0; a < names.size(); ++a)
    for (std::size_t b = a + 1; b < names.size(); ++b) {
      const double between = l1(histograms[names[a]][0], histograms[names[b]][0]);
      EXPECT_GT(between, within) << names[a] << " vs " << names[b] << " (within-clinic " << within << ")";
      EXPECT_GT(between, 0.1) << names[a] << " vs " << names[b];
    }
}

TEST_F(Simulator, PaperAmsterdamSubjectHasTableOneGrid) {
  const auto s = simulate_subject(anatomy(), clinic(Profile::kPaper, "amsterdam"), 1, 0);
  EXPECT_EQ(s.flair.geometry.size, (std::array<std::size_t, 3>{132, 256, 83}));
  EXPECT_EQ(s.flair.geometry.spacing, (std::array<double, 3>{1.20, 0.98, 3.00}));
  EXPECT_TRUE(imaging::same_geometry(s.flair.geometry, s.labels.geometry));
}

TEST_F(Simulator, OtherPathologyIsDilatedInPlaneOnly) {
  // Find a subject with a lacune, then check label 2 spreads in-plane beyond the lacune core
  // but never onto a slice the core does not touch.
  const auto& c = clinic(Profile::kQuick, "amsterdam");
  int index = 0;
  while (!draw_subject(c, 2, index).lacune) ++index;
  const auto s = simulate_subject(anatomy(), c, 2, index);
  const auto& g = s.labels.geometry;
  std::size_t label2 = 0;
  for (std::size_t z = 0; z < g.size[2]; ++z) {
    std::size_t in_slice = 0;
    for (std::size_t y = 0; y < g.size[1]; ++y)
      for (std::size_t x = 0; x < g.size[0]; ++x) in_slice += s.labels.at(x, y, z) == imaging::kOtherPathology;
    label2 += in_slice;
    if (in_slice) {
      EXPECT_GE(in_slice, 5u) << "a dilated lesion covers at least a 3x3 cross";
    }
  }
  EXPECT_GT(label2, 0u);
}

class GenerateToDisk : public ::testing::Test {};

TEST_F(GenerateToDisk, WritesChallengeLayoutAndIsDeterministic) {
  testing::ScratchDir a, b, c;
  GenerateOptions o;
  o.profile = Profile::kSmoke;
  o.subjects = 2;
  o.clinics = {"singapore", "utrecht"};
  o.seed = 42;
  o.out = a.path();
  auto summary = generate(o);
  ASSERT_TRUE(summary) << summary.error().message;
  EXPECT_EQ(summary->subjects, 4);
  o.out = b.path();
  o.threads = 1;
  ASSERT_TRUE(generate(o));
  o.out = c.path();
  o.seed = 43;
  ASSERT_TRUE(generate(o));

  const auto smoke = clinic_profiles(Profile::kSmoke);
  for (const std::string clinic : {"utrecht", "singapore"}) {
    const int first = clinic == "utrecht" ? 0 : 50;
    auto json = nlohmann::json::parse(*files::read_all(a.path() / clinic / "clinic.json"));
    EXPECT_EQ(json["clinic"], clinic);
    EXPECT_EQ(json["subjects"].size(), 2u);
    EXPECT_EQ(json["profile"], "smoke");
    for (int i = 0; i < 2; ++i) {
      const auto dir = a.path() / clinic / std::to_string(first + i);
      for (const char* f : {"pre/FLAIR.nii.gz", "pre/T1.nii.gz", "wmh.nii.gz"}) {
        ASSERT_TRUE(std::filesystem::exists(dir / f)) << dir / f;
        const auto bytes_a = files::read_all(dir / f);
        const auto bytes_b = files::read_all(b.path() / clinic / std::to_string(first + i) / f);
        const auto bytes_c = files::read_all(c.path() / clinic / std::to_string(first + i) / f);
        EXPECT_EQ(*bytes_a, *bytes_b) << f << " differs between runs with the same seed";
        EXPECT_NE(*bytes_a, *bytes_c) << f << " is the same under another seed";
      }
      auto subject = imaging::read_subject(dir / "pre/FLAIR.nii.gz", dir / "pre/T1.nii.gz", dir / "wmh.nii.gz");
      ASSERT_TRUE(subject) << subject.error().message;
      const auto& profile = clinic == "utrecht" ? smoke[0] : smoke[1];
      EXPECT_EQ(subject->flair.geometry.size, profile.size);
      for (int d = 0; d < 3; ++d) EXPECT_NEAR(subject->flair.geometry.spacing[d], profile.spacing[d], 1e-5);
    }
    EXPECT_EQ(*files::read_all(a.path() / clinic / "clinic.json"), *files::read_all(b.path() / clinic / "clinic.json"));
  }
  EXPECT_FALSE(std::filesystem::exists(a.path() / "amsterdam"));
}

TEST_F(GenerateToDisk, MissingTemplatesAreAnErrorNamingThePackage) {
  testing::ScratchDir out;
  GenerateOptions o;
  o.out = out.path();
  o.templates_dir = out.path() / "no-templates";
  auto summary = generate(o);
  ASSERT_FALSE(summary);
  EXPECT_NE(summary.error().message.find("ch2bet.nii.gz"), std::string::npos);
  EXPECT_NE(summary.error().message.find("mricron-data"), std::string::npos);
}

}  // namespace
}  // namespace fedda::simulation
