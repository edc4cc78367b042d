#pragma once
// A site's configuration (YAML), written by the hospital's administrator; example in
// configs/site.example.yaml.
//
//   site_id: amsterdam                  # the id the consortium knows this site by
//   coordinator: tcp://coordinator.example.org:5570
//   data: /srv/wmh/amsterdam            # clinic folder: <subject>/pre/FLAIR.nii.gz, pre/T1.nii.gz, wmh.nii.gz
//   cache_dir: /var/lib/fedda/cache     # soft labels; stays on this machine
//   device: cpu                         # cpu | cuda
//   threads: 0                          # LibTorch intra-op threads; 0 = its default
//   heartbeat_ms: 1000                  # until the coordinator says otherwise
//   reconnect_min_ms: 500               # backoff after losing the coordinator, doubling ...
//   reconnect_max_ms: 30000             # ... up to this
//   drain_timeout_s: 600                # on SIGTERM, how long a running task may finish
//   kit: /etc/fedda/kit                 # start-up kit (fedda-admin): CurveZMQ keys, signed models,
//                                       # encrypted cache; without it the agent speaks plain TCP
//
// Relative paths are relative to the config file. Unknown keys are errors.

#include <filesystem>
#include <string>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/imaging/dataset.h"

namespace fedda::site_agent {

struct SiteConfig {
  std::string site_id;
  std::string coordinator;
  std::filesystem::path data;
  std::filesystem::path cache_dir;
  std::string device = "cpu";
  int threads = 0;
  int heartbeat_ms = 1000;
  int reconnect_min_ms = 500;
  int reconnect_max_ms = 30000;
  double drain_timeout_s = 600;
  std::filesystem::path kit;  // empty: no kit (tests, trusted networks)
};

// Error names the file and the key at fault.
Result<SiteConfig> read_site_config(const std::filesystem::path& path);

// The site's subjects (sorted by id); error when the data folder holds none.
Result<std::vector<imaging::SubjectFiles>> site_subjects(const SiteConfig& config);

struct CheckReport {
  int subjects = 0;
  int usable = 0;
  std::vector<std::string> problems;  // one line each, naming the subject or setting
};

// Validates the settings and reads every scan (geometry, values, labels) as a job would.
CheckReport check_site(const SiteConfig& config);

}  // namespace fedda::site_agent
