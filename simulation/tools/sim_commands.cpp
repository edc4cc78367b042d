#include "sim_commands.h"

#include <memory>
#include <sstream>

#include "fedda/common/log.h"
#include "fedda/imaging/subject_index.h"
#include "fedda/simulation/generator.h"
#include "fedda/simulation/preview.h"
#include "fedda/simulation/threshold_baseline.h"

namespace fedda::simulation::tools {

void add_generate(CLI::App& app, int& rc) {
  struct Args {
    std::string profile = "smoke", out, clinics, templates, layout = "wmh", scanner_change;
    std::uint64_t seed = 1;
    int subjects = 0, threads = 0;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "generate",
      "Generate simulated clinics (Utrecht, Singapore, Amsterdam scanners) from the Colin27 brain, in "
      "the WMH challenge layout: OUT/<clinic>/<subject>/pre/FLAIR.nii.gz, pre/T1.nii.gz, wmh.nii.gz "
      "(0 background, 1 WMH, 2 other pathology) and OUT/<clinic>/clinic.json.\n"
      "Profiles: smoke (tiny, 4 subjects/clinic, for tests), quick (CPU-sized, 10/clinic, 3 mm "
      "slices), paper (the seed paper's Table 1 grids, 20/clinic). Same seed, same bytes.");
  cmd->add_option("--profile", a->profile, "smoke, quick or paper")->capture_default_str();
  cmd->add_option("--out", a->out, "output folder")->required();
  cmd->add_option("--seed", a->seed, "random seed")->capture_default_str();
  cmd->add_option("--subjects", a->subjects, "subjects per clinic (default: the profile's)");
  cmd->add_option("--clinics", a->clinics, "comma-separated subset of utrecht,singapore,amsterdam");
  cmd->add_option("--threads", a->threads, "worker threads (default: all cores)");
  cmd->add_option("--layout", a->layout,
                  "wmh (the challenge's), bids (OUT/<clinic>/ a BIDS dataset, labels in derivatives/wmh) or datalist "
                  "(OUT/<clinic>/dataset.json with imagesTr/, imagesTs/, labelsTr/, nnU-Net's naming): the same scans "
                  "in the layouts a site's data.layout reads")
      ->capture_default_str()
      ->check(CLI::IsMember(imaging::data_layouts()));
  cmd->add_option("--scanner-change", a->scanner_change,
                  "CLINIC:N: a mid-study scanner change at CLINIC, its subjects from the N-th on (0-based, in subject "
                  "order) acquired with another contrast curve (FLAIR gamma x1.3, T1 gamma x0.85) and twice the noise; "
                  "clinic.json marks them (for fedda-agent monitor's drift alerts)");
  cmd->add_option("--templates", a->templates,
                  "folder with ch2bet.nii.gz, ch2better.nii.gz and JHU-WhiteMatter-labels-1mm.nii.gz "
                  "(default: $FEDDA_TEMPLATES or /usr/share/mricron/templates)");
  cmd->callback([a, &rc]() {
    auto log = log::get("fedda-sim");
    auto profile = parse_profile(a->profile);
    if (!profile) throw CLI::ValidationError("--profile", profile.error().message);
    GenerateOptions o;
    o.profile = *profile;
    // Other layouts are written from the WMH layout, generated first beside them and removed after.
    const std::filesystem::path out = a->out, staging = out / ".wmh-staging";
    o.out = a->layout == "wmh" ? out : staging;
    o.seed = a->seed;
    if (a->subjects != 0) o.subjects = a->subjects;
    o.threads = a->threads;
    o.templates_dir = a->templates;
    if (!a->scanner_change.empty()) {
      const auto colon = a->scanner_change.find(':');
      int from = -1;
      try {
        if (colon != std::string::npos) from = std::stoi(a->scanner_change.substr(colon + 1));
      } catch (const std::exception&) {
      }
      if (colon == std::string::npos || from < 0) {
        throw CLI::ValidationError("--scanner-change", "expected CLINIC:N, e.g. utrecht:5, got '" + a->scanner_change + "'");
      }
      o.scanner_change = ScannerChange{a->scanner_change.substr(0, colon), from};
    }
    std::stringstream list(a->clinics);
    for (std::string name; std::getline(list, name, ',');) {
      if (!name.empty()) o.clinics.push_back(name);
    }
    auto summary = generate(o, [&](const std::string& clinic, const std::string& subject, int done, int total) {
      log->info("[{}/{}] {}/{} written", done, total, clinic, subject);
    });
    if (!summary) {
      log->error("{}", summary.error().message);
      rc = 1;
      return;
    }
    if (a->layout != "wmh") {
      std::error_code ec;
      for (const auto& clinic : std::filesystem::directory_iterator(staging, ec)) {
        if (!clinic.is_directory()) continue;
        const auto name = clinic.path().filename();
        std::filesystem::remove_all(out / name, ec);
        if (auto st = imaging::write_layout(clinic.path(), a->layout, out / name); !st) {
          log->error("{}", st.error().message);
          rc = 1;
          return;
        }
        log->info("{} written in the {} layout", (out / name).string(), a->layout);
      }
      std::filesystem::remove_all(staging, ec);
    }
    log->info("generated {} subjects ({} profile, seed {}, {} layout) in {} in {:.1f} s", summary->subjects, a->profile,
              a->seed, a->layout, a->out, summary->seconds);
    rc = 0;
  });
}

void add_preview(CLI::App& app, int& rc) {
  struct Args {
    std::string data, out;
    int subjects = 3;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "preview",
      "Write one PNG mosaic of a data folder: a row per clinic, and for each of its first subjects the "
      "FLAIR, the T1 and the FLAIR with the label outline (red WMH, blue other pathology), on the "
      "slice with the most WMH, all at one scale (240 mm field of view).");
  cmd->add_option("--data", a->data, "data folder in the WMH layout")->required();
  cmd->add_option("--out", a->out, "PNG file to write")->required();
  cmd->add_option("--subjects", a->subjects, "subjects per clinic")->capture_default_str()->check(CLI::Range(1, 10));
  cmd->callback([a, &rc]() {
    PreviewOptions o;
    o.subjects_per_clinic = a->subjects;
    if (auto st = write_preview(a->data, a->out, o); !st) {
      log::get("fedda-sim")->error("{}", st.error().message);
      rc = 1;
      return;
    }
    log::get("fedda-sim")->info("wrote {}", a->out);
    rc = 0;
  });
}

}  // namespace fedda::simulation::tools

namespace fedda::simulation::tools {

void add_threshold_baseline(CLI::App& app, int& rc) {
  struct Args {
    std::string data, out, tune_clinic;
    double z = 0;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "threshold-baseline",
      "Segment every subject with one global threshold on the brain-masked, z-scored FLAIR: the "
      "reference a trained network must beat. The threshold is tuned for the best mean Dice on the "
      "labelled subjects of --tune-clinic unless --z is given. Writes OUT/<clinic>/<subject>/result.nii.gz "
      "in each scan's geometry; score them with `fedda-sim evaluate --data DATA --preds OUT`.");
  cmd->add_option("--data", a->data, "data folder in the WMH layout")->required();
  cmd->add_option("--out", a->out, "folder for the predictions")->required();
  cmd->add_option("--tune-clinic", a->tune_clinic, "clinic whose labels choose the threshold (default: the first)");
  auto* z = cmd->add_option("--z", a->z, "use this z-score threshold instead of tuning");
  cmd->callback([a, z, &rc]() {
    ThresholdBaselineOptions o;
    o.tune_clinic = a->tune_clinic;
    if (z->count()) o.z_threshold = a->z;
    auto r = threshold_baseline(a->data, a->out, o);
    if (!r) {
      log::get("fedda-sim")->error("{}", r.error().message);
      rc = 1;
      return;
    }
    log::get("fedda-sim")->info("segmented {} subjects with z > {:.1f} into {}", r->subjects, r->z_threshold, a->out);
    rc = 0;
  });
}

}  // namespace fedda::simulation::tools
