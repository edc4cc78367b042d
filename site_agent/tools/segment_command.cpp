#include "segment_command.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "fedda/common/crypto.h"
#include "fedda/common/files.h"
#include "fedda/common/log.h"
#include "fedda/common/version.h"
#include "fedda/imaging/dicom_results.h"
#include "fedda/imaging/metrics.h"
#include "fedda/imaging/nifti_io.h"
#include "fedda/imaging/pacs.h"
#include "fedda/imaging/subject_index.h"
#include "fedda/models/engine.h"
#include "fedda/site_agent/site_config.h"

namespace fedda::site_agent {
namespace {

namespace fs = std::filesystem;

struct SegmentOptions {
  std::string model, flair, t1, out, device = "cpu";
  std::string dicom, dicom_flair = "flair", dicom_t1 = "t1";
  std::string dicom_seg, dicom_sr, dicom_preview;
  std::string config;  // --all: the site whose subjects are segmented
  bool all = false, with_dicom = false, json = false;
};

// A temporary folder removed when it goes out of scope (the --dicom series converted to NIfTI).
class ScratchFolder {
 public:
  ScratchFolder() {
    char folder[] = "/tmp/fedda-segment-XXXXXX";
    if (::mkdtemp(folder)) path_ = folder;
  }
  ~ScratchFolder() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  ScratchFolder(const ScratchFolder&) = delete;
  ScratchFolder& operator=(const ScratchFolder&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// The one subject of a --dicom folder, its series converted into `scratch`.
Result<imaging::SubjectFiles> dicom_subject(const SegmentOptions& o, const fs::path& scratch) {
  if (scratch.empty()) return make_error(std::string("cannot make a temporary folder: ") + std::strerror(errno));
  imaging::DataSource source;
  source.layout = "dicom";
  source.path = o.dicom;
  source.dicom_flair = o.dicom_flair;
  source.dicom_t1 = o.dicom_t1;
  source.cache = scratch;
  auto index = imaging::index_subjects(source);
  if (!index) return index.error();
  if (index->subjects.size() != 1) {
    return make_error(o.dicom + ": " + std::to_string(index->subjects.size()) +
                      " subjects (PatientIDs) found; --dicom takes one subject's folder");
  }
  for (const auto& i : index->ignored) log::get("fedda-agent")->warn("ignored {}: {}", i.path.string(), i.reason);
  return index->subjects[0];
}

// Segments one subject's files into `o.out`, with the DICOM objects where `o` names them and
// `flair_dicom` holds the FLAIR's slices; what was written and measured.
Result<nlohmann::json> segment_files(const SegmentOptions& o, const std::vector<fs::path>& flair_dicom) {
  if (auto st = models::segment_scan(o.model, o.flair, o.t1, o.out, o.device); !st) return st.error();
  auto labels = imaging::read_label_map(o.out);
  if (!labels) return labels.error();
  const auto lesions = imaging::summarize_lesions(*labels);
  nlohmann::json report = {{"segmentation", o.out},
                           {"wmh_voxels", lesions.voxels},
                           {"wmh_volume_ml", lesions.volume_ml},
                           {"lesions", lesions.count}};
  if (o.dicom_seg.empty()) return report;

  auto model_bytes = files::read_all(o.model);
  if (!model_bytes) return model_bytes.error();
  imaging::ResultProvenance provenance;
  provenance.version = kVersion;
  provenance.model_sha256 = crypto::sha256_hex(*model_bytes);
  provenance.model_name = fs::path(o.model).filename().string();
  const auto written = [](const std::string& path, const imaging::WrittenObject& w) {
    nlohmann::json j = {{"path", path}, {"sop_instance_uid", w.sop_instance_uid}, {"series_instance_uid", w.series_instance_uid}};
    if (w.frames) j["frames"] = w.frames;
    return j;
  };
  auto seg = imaging::write_dicom_seg(*labels, flair_dicom, provenance, o.dicom_seg);
  if (!seg) return seg.error();
  report["dicom_seg"] = written(o.dicom_seg, *seg);
  if (!o.dicom_sr.empty()) {
    auto sr = imaging::write_dicom_sr(lesions, o.dicom_seg, provenance, o.dicom_sr);
    if (!sr) return sr.error();
    report["dicom_sr"] = written(o.dicom_sr, *sr);
  }
  if (!o.dicom_preview.empty()) {  // the Segmentation as read back, over its FLAIR slices
    auto drawn = imaging::render_seg_over_series(o.dicom_seg, flair_dicom, o.dicom_preview);
    if (!drawn) return drawn.error();
    report["dicom_preview"] = {{"path", o.dicom_preview}, {"segmented_pixels", *drawn}};
  }
  return report;
}

Result<nlohmann::json> segment_subject(SegmentOptions o) {
  ScratchFolder scratch;
  std::vector<fs::path> flair_dicom;
  if (!o.dicom.empty()) {
    auto subject = dicom_subject(o, scratch.path());
    if (!subject) return subject.error();
    o.flair = subject->flair.string();
    o.t1 = subject->t1.string();
    flair_dicom = subject->flair_dicom;
  }
  return segment_files(o, flair_dicom);
}

// --all: every subject of the site at `o.config` into `o.out`/<subject>.nii.gz (and, with
// --with-dicom, <subject>.seg.dcm and <subject>.sr.dcm for subjects read from DICOM), what the
// layout left out and a subject that fails named and skipped; the lesion loads in
// `o.out`/lesions.csv. The report lists them.
Result<nlohmann::json> segment_site(const SegmentOptions& o) {
  auto config = read_site_config(o.config);
  if (!config) return config.error();
  auto index = site_subject_index(*config);
  if (!index) return index.error();
  const auto* subjects = &index->subjects;
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec) return make_error(o.out + ": " + ec.message());
  auto log = log::get("fedda-agent");
  nlohmann::json report = {{"subjects", nlohmann::json::array()}, {"failed", nlohmann::json::array()}, {"left_out", nlohmann::json::array()}};
  for (const auto& i : index->ignored) {
    log->warn("left out {}: {}", i.path.string(), i.reason);
    report["left_out"].push_back({{"path", i.path.string()}, {"reason", i.reason}});
  }
  std::string csv = "subject,wmh_volume_ml,lesions,wmh_voxels,segmentation,dicom_seg,dicom_sr\n";
  const int total = static_cast<int>(subjects->size());
  int done = 0;
  // Results go back to the PACS only where the site's policy says so.
  const bool store = o.with_dicom && config->data_layout == "pacs" && config->policy.write_back;
  if (o.with_dicom && config->data_layout == "pacs" && !store) {
    log->info("the Segmentations and reports stay in {}: the site's policy has no write_back: true", o.out);
  }
  report["stored_in_pacs"] = 0;
  for (const auto& subject : *subjects) {
    SegmentOptions one = o;
    one.flair = subject.flair.string();
    one.t1 = subject.t1.string();
    one.out = (fs::path(o.out) / (subject.subject + ".nii.gz")).string();
    const bool dicom = o.with_dicom && !subject.flair_dicom.empty();
    one.dicom_seg = dicom ? (fs::path(o.out) / (subject.subject + ".seg.dcm")).string() : "";
    one.dicom_sr = dicom ? (fs::path(o.out) / (subject.subject + ".sr.dcm")).string() : "";
    auto r = segment_files(one, subject.flair_dicom);
    ++done;
    if (!r) {
      log->warn("subject {} skipped: {}", subject.subject, r.error().message);
      report["failed"].push_back({{"subject", subject.subject}, {"reason", r.error().message}});
    } else {
      (*r)["subject"] = subject.subject;
      char volume[32];
      std::snprintf(volume, sizeof volume, "%.3f", (*r)["wmh_volume_ml"].get<double>());
      csv += subject.subject + "," + volume + "," + std::to_string((*r)["lesions"].get<unsigned>()) + "," +
             std::to_string((*r)["wmh_voxels"].get<std::size_t>()) + "," + one.out + "," + one.dicom_seg + "," + one.dicom_sr + "\n";
      report["subjects"].push_back(std::move(*r));
      if (store && !one.dicom_seg.empty()) {  // segmented and written whatever the PACS says
        if (auto st = imaging::store_to_pacs(config->pacs, {one.dicom_seg, one.dicom_sr}); !st) {
          log->warn("subject {}: segmented, but not stored in the PACS: {}", subject.subject, st.error().message);
          report["failed"].push_back({{"subject", subject.subject}, {"reason", "not stored in the PACS: " + st.error().message}});
        } else {
          report["stored_in_pacs"] = report["stored_in_pacs"].get<int>() + 2;
        }
      }
    }
    log->info("{} of {} subjects segmented{}", done, total,
              report["failed"].empty() ? "" : " (" + std::to_string(report["failed"].size()) + " failed)");
  }
  if (auto st = files::write_atomically(fs::path(o.out) / "lesions.csv", csv); !st) return st.error();
  report["lesions_csv"] = (fs::path(o.out) / "lesions.csv").string();
  return report;
}

}  // namespace

void add_segment_command(CLI::App& app, int& rc) {
  auto o = std::make_shared<SegmentOptions>();
  auto* segment = app.add_subcommand(
      "segment",
      "Segment one scan locally: FLAIR and T1 of one subject (same geometry) in, a WMH label map out "
      "(0 background, 1 WMH) in the FLAIR's exact geometry, and its lesion load printed (volume in mL, "
      "lesion count: 3-D components, 26-connected). The model file carries its architecture and "
      "preprocessing grid. With --dicom, the subject's DICOM folder instead: its FLAIR and T1 series are "
      "chosen by --dicom-flair / --dicom-t1 (SeriesDescription rules), checked and converted with dcm2niix, and "
      "the label map is written in the converted FLAIR's geometry (the same voxels in space, axes in ITK's RAI "
      "order); --dicom-seg then also writes a DICOM Segmentation on the FLAIR series' own slices (one frame "
      "per slice, each referencing its source image; patient, study and frame of reference the FLAIR's) and "
      "--dicom-sr a TID 1500 measurement report of the lesion volume and count referencing that "
      "Segmentation, both ready to store in a PACS and open in a viewer.");
  segment->add_option("--model", o->model, "fedda model file (.pt)")->required();
  auto* all_option = segment->add_flag("--all", o->all, "every subject of the site --config names, in its data layout: "
                                                        "--out is then a folder (SUBJECT.nii.gz each, lesions.csv), a "
                                                        "subject that fails is named and skipped");
  auto* config_option = segment->add_option("--config", o->config, "--all: the site's site.yaml");
  all_option->needs(config_option);
  config_option->needs(all_option);
  auto* with_dicom = segment->add_flag("--with-dicom", o->with_dicom, "--all: also SUBJECT.seg.dcm and SUBJECT.sr.dcm for "
                                                                      "the subjects read from DICOM series; on a pacs site whose "
                                                                      "policy says write_back: true, both stored back in the PACS "
                                                                      "(STOW-RS), never otherwise");
  with_dicom->needs(all_option);
  auto* flair_option = segment->add_option("--flair", o->flair, "FLAIR NIfTI");
  auto* t1_option = segment->add_option("--t1", o->t1, "T1 NIfTI, same grid as the FLAIR");
  auto* dicom_option = segment->add_option("--dicom", o->dicom, "a subject's DICOM folder (instead of --flair and --t1)");
  flair_option->excludes(dicom_option);
  t1_option->excludes(dicom_option);
  for (auto* single : {flair_option, t1_option, dicom_option}) single->excludes(all_option);
  segment->add_option("--dicom-flair", o->dicom_flair, "--dicom: SeriesDescription rule of the FLAIR (case-insensitive regex)")
      ->capture_default_str();
  segment->add_option("--dicom-t1", o->dicom_t1, "--dicom: SeriesDescription rule of the T1")->capture_default_str();
  segment->add_option("--out", o->out, "output segmentation (.nii or .nii.gz); with --all, a folder")->required();
  auto* seg_option = segment->add_option("--dicom-seg", o->dicom_seg,
                                         "also write a DICOM Segmentation here (needs --dicom: it references the FLAIR "
                                         "series it was computed on)");
  seg_option->needs(dicom_option);
  segment->add_option("--dicom-sr", o->dicom_sr, "also write a TID 1500 measurement report here (lesion volume "
                                                 "and count, referencing the --dicom-seg Segmentation)")
      ->needs(seg_option);
  segment->add_option("--dicom-preview", o->dicom_preview,
                      "also write a PNG of the --dicom-seg Segmentation, read back, over the FLAIR slices it references "
                      "(the three with most lesion pixels, the segment in red), as a viewer overlays it")
      ->needs(seg_option);
  segment->add_flag("--json", o->json, "print what was written and measured as one JSON object on stdout");
  segment->add_option("--device", o->device, "cpu or cuda")->capture_default_str();
  segment->callback([o, &rc]() {
    auto log = log::get("fedda-agent");
    if (!o->all && o->dicom.empty() && (o->flair.empty() || o->t1.empty())) {
      log->error("segment needs --flair and --t1, --dicom, or --all --config");
      rc = 2;
      return;
    }
    auto report = o->all ? segment_site(*o) : segment_subject(*o);
    if (!report) {
      log->error("{}", report.error().message);
      rc = 1;
      return;
    }
    if (o->all && !(*report)["failed"].empty()) rc = 1;
    if (o->json) {
      std::cout << report->dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      return;
    }
    if (o->all) {
      std::printf("%zu subjects segmented into %s, %zu failures; lesion loads in %s; %d objects stored in the PACS\n",
                  (*report)["subjects"].size(), o->out.c_str(), (*report)["failed"].size(),
                  (*report)["lesions_csv"].get<std::string>().c_str(), (*report)["stored_in_pacs"].get<int>());
      return;
    }
    std::printf("wrote %s: WMH %.2f mL in %u lesions (%zu voxels)\n", o->out.c_str(), (*report)["wmh_volume_ml"].get<double>(),
                (*report)["lesions"].get<unsigned>(), (*report)["wmh_voxels"].get<std::size_t>());
    if (report->contains("dicom_preview")) {
      std::printf("wrote %s (the Segmentation over its FLAIR slices, %zu segmented pixels)\n",
                  (*report)["dicom_preview"]["path"].get<std::string>().c_str(),
                  (*report)["dicom_preview"]["segmented_pixels"].get<std::size_t>());
    }
    for (const char* key : {"dicom_seg", "dicom_sr"}) {
      if (report->contains(key)) {
        std::printf("wrote %s (%s, SOPInstanceUID %s)\n", (*report)[key]["path"].get<std::string>().c_str(),
                    std::string(key) == "dicom_seg" ? "DICOM Segmentation" : "TID 1500 measurement report",
                    (*report)[key]["sop_instance_uid"].get<std::string>().c_str());
      }
    }
  });
}

}  // namespace fedda::site_agent
