#pragma once
// A site's configuration (YAML), written by the hospital's administrator; example in
// configs/site.example.yaml.
//
//   site_id: amsterdam                  # the id the consortium knows this site by
//   coordinator: tcp://coordinator.example.org:5570
//   data: /srv/wmh/amsterdam            # clinic folder: <subject>/pre/FLAIR.nii.gz, pre/T1.nii.gz, wmh.nii.gz
//   data_layout: wmh                    # wmh | bids (data: the dataset's root) | datalist (data: its JSON file)
//                                       # | dicom (data: a folder of DICOM series)
//   bids_filters: {acq: 3D}             # bids: choose between several FLAIR / T1w of a subject (ses, acq, ce, rec, run, part)
//   bids_labels: wmh                    # bids: labels from derivatives/<this>/ (..._mask or ..._dseg); absent: none
//   dicom_flair: flair                  # dicom: SeriesDescription rule (case-insensitive regex) of the FLAIR series
//   dicom_t1: t1|mprage                 # dicom: ... of the T1 series
//   dicom_labels: /srv/labels           # dicom, pacs: <subject>.nii.gz label maps (NIfTI); absent: none
//   pacs:                               # data_layout: pacs (no data key): the PACS, over DICOMweb or DIMSE
//     dicomweb: https://pacs.example.org/dicom-web  # its DICOMweb root (http or https), or instead:
//     dimse: ORTHANC@127.0.0.1:4242     # its DICOM service (C-FIND, C-GET, C-STORE)
//     calling_ae: FEDDA                 # dimse: this agent's AE title, as the PACS knows it
//     credentials_file: /etc/fedda/pacs.credentials  # dicomweb: one line USER:PASSWORD, mode 0600; absent: none
//     ca_file: /etc/fedda/pacs-ca.pem   # https: the CA the PACS's certificate must chain to; absent: the system's
//     page_size: 100                    # dicomweb: QIDO-RS matches asked per request
//     modality: MR                      # studies holding this modality
//     study_dates: 20170101-20171231    # StudyDate range; absent: any
//     accession_numbers: [A100, A101]   # only these studies; absent: any
//   cache_dir: /var/lib/fedda/cache     # soft labels; stays on this machine
//   device: cpu                         # cpu | cuda
//   threads: 0                          # LibTorch intra-op threads; 0 = its default
//   heartbeat_ms: 1000                  # until the coordinator says otherwise
//   reconnect_min_ms: 500               # backoff after losing the coordinator, doubling ...
//   reconnect_max_ms: 30000             # ... up to this
//   drain_timeout_s: 600                # on SIGTERM, how long a running task may finish
//   kit: /etc/fedda/kit                 # start-up kit (fedda-admin): CurveZMQ keys, signed models,
//                                       # encrypted cache; without it the agent speaks plain TCP
//   root_fingerprint: sha256:...        # the consortium root's, sent apart from the kit; required
//                                       # with a kit (fedda-agent check), refused when it differs
//   policy:                             # what this site runs on its data (defaults shown)
//     job_types: [teacher, kd, ada, evaluate]
//     trusted_sources: []               # sources whose jobs it takes part in; empty: any
//     min_batch_size: 4                 # smaller batches invite gradient inversion
//     min_local_steps: 1                # fewest optimiser steps per round it will send an update for
//     evaluation_interval_s: 0          # at least this long between two evaluation answers
//     require_secure_aggregation: false # refuse training jobs whose updates the coordinator would see
//     quality_reports: true             # evaluation rounds: a label-free quality report in
//                                       # cache_dir/reports/<job>/, only its aggregates sent
//     approval: auto                    # auto | manual (fedda-agent pending / approve / refuse)
//     write_back: false                 # data_layout pacs: segment --all --with-dicom stores each
//                                       # Segmentation and report back in the PACS (STOW-RS or C-STORE)
//     share_logs: none                  # what `fedda-admin logs SITE` gets of the agent's recent log:
//                                       # none; errors (warnings and errors); job (also every line
//                                       # naming the job asked for); redacted as failure texts are
//
// Relative paths are relative to the config file. Unknown keys are errors.

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/imaging/dataset.h"
#include "fedda/imaging/subject_index.h"

namespace fedda::site_agent {

// What a site agrees to run on its data. A job outside it is refused before anything is read,
// with the rule it broke told to the coordinator by code (protocol::FailureCode::policy).
struct SitePolicy {
  std::vector<std::string> job_types = {"teacher", "kd", "ada", "evaluate"};
  std::vector<std::string> trusted_sources;  // empty: any source
  int min_batch_size = 4;
  int min_local_steps = 1;
  double evaluation_interval_s = 0;
  bool require_secure_aggregation = false;   // training jobs only with secure_aggregation: true
  bool quality_reports = true;               // evaluation rounds: a local quality report (monitor.h), its
                                             // aggregates sent with the evaluation
  std::string approval = "auto";             // auto | manual
  bool write_back = false;                   // pacs: results stored back in the PACS; nothing is written there otherwise
  std::string share_logs = "none";           // none | errors | job (shared_logs.h)
  // Differential privacy: training on this site's patients only under DP-SGD spending at most
  // this epsilon over the job (0: no ceiling; a job without dp is refused when one is set), with
  // at least this noise multiplier (0: any).
  double max_epsilon = 0;
  double min_noise_multiplier = 0;
  double max_delta = 1e-5;  // with max_epsilon: the largest delta a job may state (a large delta buys a small epsilon)
};

struct SiteConfig {
  std::string site_id;
  std::string coordinator;
  std::filesystem::path data;
  std::string data_layout = "wmh";                  // imaging/subject_index.h
  std::map<std::string, std::string> bids_filters;  // bids: entity -> value
  std::string bids_labels;                          // bids: derivatives pipeline of the labels
  std::string dicom_flair = "flair";                // dicom: SeriesDescription rules
  std::string dicom_t1 = "t1";
  std::filesystem::path dicom_labels;               // dicom, pacs: <subject>.nii.gz
  imaging::PacsSource pacs;                         // pacs: the PACS, its credentials read from credentials_file
  std::filesystem::path cache_dir;
  std::string device = "cpu";
  std::string precision = "auto";  // auto | float32 | bfloat16 (models/precision.h); a job's explicit choice wins
  int threads = 0;
  int heartbeat_ms = 1000;
  int reconnect_min_ms = 500;
  int reconnect_max_ms = 30000;
  double drain_timeout_s = 600;
  std::filesystem::path kit;  // empty: no kit (tests, trusted networks)
  std::string root_fingerprint;
  // Prometheus metrics of this agent at http://HOST:PORT/metrics ("127.0.0.1:9470"; loopback
  // only, empty: off): connection, jobs, rounds trained, bytes, refusals.
  std::string metrics_listen;
  SitePolicy policy;
};

// Error names the file and the key at fault.
Result<SiteConfig> read_site_config(const std::filesystem::path& path);

// Where the site's scans are, as a person would name it: the data path, or the PACS's DICOMweb root.
std::string data_location(const SiteConfig& config);

// The site's subjects (sorted by id), in whatever layout its data has; error when it holds none.
Result<std::vector<imaging::SubjectFiles>> site_subjects(const SiteConfig& config);
// The same with what was left out and why (fedda-agent check).
Result<imaging::SubjectIndex> site_subject_index(const SiteConfig& config);

struct CheckReport {
  int subjects = 0;
  int usable = 0;
  std::vector<std::string> problems;  // one line each, naming the subject or setting
  std::vector<std::string> found;     // one line per subject: its files
  std::vector<std::string> ignored;   // one line per file or folder left out: "PATH: why"
};

// Validates the settings and reads every scan (geometry, values, labels) as a job would.
CheckReport check_site(const SiteConfig& config);

// The key of this site's subject pseudonyms: the kit's storage key, or without a kit one made
// once in cache_dir (pseudonym.key, 0600).
Result<std::string> pseudonym_key(const SiteConfig& config);
// A subject's keyed pseudonym: "s-" and 16 hex digits of HMAC-SHA-256(key, subject id). Only
// pseudonyms leave the site; the site keeps the map (fedda-agent subjects).
std::string pseudonym(const std::string& key, const std::string& subject);

}  // namespace fedda::site_agent
