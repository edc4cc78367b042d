#include "fedda/site_agent/site_config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <cmath>
#include <regex>

#include "fedda/common/config.h"
#include "fedda/common/crypto.h"
#include "fedda/common/files.h"
#include "fedda/common/protocol.h"
#include "fedda/common/kit.h"
#include "fedda/imaging/nifti_io.h"
#include "fedda/imaging/pacs.h"
#include "fedda/models/engine.h"
#include "fedda/monitoring/http_server.h"
#include "fedda/models_core/precision.h"

namespace fedda::site_agent {
namespace fs = std::filesystem;

namespace {

fs::path base_of(const fs::path& config) { return config.parent_path(); }

// USER:PASSWORD on the file's first line; refused when others than its owner may read it, as a
// kit's secrets are.
Result<std::pair<std::string, std::string>> read_credentials(const fs::path& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return make_error(file.string() + ": " + std::strerror(errno));
  if (st.st_mode & 077) {
    return make_error(file.string() + " may be read by others than its owner (mode " + std::to_string((st.st_mode >> 6) & 7) +
                      std::to_string((st.st_mode >> 3) & 7) + std::to_string(st.st_mode & 7) + "): chmod 600 it");
  }
  auto text = files::read_all(file);
  if (!text) return text.error();
  const auto line = text->substr(0, text->find('\n'));
  const auto colon = line.find(':');
  if (colon == std::string::npos || colon == 0) return make_error(file.string() + ": not one line USER:PASSWORD");
  auto password = line.substr(colon + 1);
  if (!password.empty() && password.back() == '\r') password.pop_back();
  return std::pair{line.substr(0, colon), password};
}

fs::path beside(const fs::path& base, const std::string& file) {
  return fs::path(file).is_relative() ? (base / file).lexically_normal() : fs::path(file);
}

// The pacs: mapping (data_layout: pacs); files it names are relative to site.yaml's folder.
// The whole source (a password in the URL included) is validated by imaging::validate_pacs,
// once the layout is known to be pacs.
Result<imaging::PacsSource> read_pacs(config::Mapping m, const fs::path& base) {
  imaging::PacsSource pacs;
  std::string credentials_file, ca_file;
  m.get("dicomweb", pacs.dicomweb);
  m.get("dimse", pacs.dimse);
  m.get("calling_ae", pacs.calling_ae);
  m.get("credentials_file", credentials_file);
  m.get("ca_file", ca_file);
  m.get("page_size", pacs.page_size);
  m.get("modality", pacs.modality);
  m.get("study_dates", pacs.study_dates);
  m.get("accession_numbers", pacs.accession_numbers);
  if (!ca_file.empty()) pacs.ca_file = beside(base, ca_file).string();
  if (!credentials_file.empty()) {
    auto credentials = read_credentials(beside(base, credentials_file));
    if (!credentials) return make_error("pacs: credentials_file: " + credentials.error().message);
    pacs.user = credentials->first;
    pacs.password = credentials->second;
  }
  return pacs;
}

// policy:'s keys; check_policy validates them once the whole file has been read.
SitePolicy read_policy(config::Mapping policy) {
  SitePolicy p;
  policy.get("job_types", p.job_types);
  policy.get("trusted_sources", p.trusted_sources);
  policy.get("min_batch_size", p.min_batch_size);
  policy.get("min_local_steps", p.min_local_steps);
  policy.get("evaluation_interval_s", p.evaluation_interval_s);
  policy.get("require_secure_aggregation", p.require_secure_aggregation);
  policy.get("quality_reports", p.quality_reports);
  policy.get("max_epsilon", p.max_epsilon);
  policy.get("min_noise_multiplier", p.min_noise_multiplier);
  policy.get("max_delta", p.max_delta);
  policy.get("approval", p.approval);
  policy.get("write_back", p.write_back);
  policy.get("share_logs", p.share_logs);
  return p;
}

Status check_policy(const SitePolicy& p) {
  for (const auto& t : p.job_types) {
    if (!protocol::parse_job_type(t)) return make_error("policy: job_types: '" + t + "' is not one of teacher, kd, ada, evaluate");
  }
  if (p.min_batch_size < 1) return make_error("policy: min_batch_size must be at least 1");
  if (p.min_local_steps < 1) return make_error("policy: min_local_steps must be at least 1");
  if (!(p.evaluation_interval_s >= 0)) return make_error("policy: evaluation_interval_s must not be negative");
  if (p.approval != "auto" && p.approval != "manual") return make_error("policy: approval must be auto or manual");
  if (p.share_logs != "none" && p.share_logs != "errors" && p.share_logs != "job") {
    return make_error("policy: share_logs must be none, errors or job (not '" + p.share_logs + "')");
  }
  if (!(p.max_epsilon >= 0) || !std::isfinite(p.max_epsilon)) return make_error("policy: max_epsilon must be 0 (no ceiling) or positive");
  if (!(p.min_noise_multiplier >= 0)) return make_error("policy: min_noise_multiplier must not be negative");
  if (!(p.max_delta > 0 && p.max_delta < 1)) return make_error("policy: max_delta must be above 0 and below 1");
  return Status::success();
}

Status check_identity(const SiteConfig& c) {
  if (!c.root_fingerprint.empty() && (c.root_fingerprint.rfind("sha256:", 0) != 0 || c.root_fingerprint.size() != 71)) {
    return make_error("root_fingerprint must be sha256: and 64 hex digits, as fedda-admin verify-kit prints it");
  }
  // The example's all-zero fingerprint is a placeholder, not a root anyone has: say so, not "a forged kit".
  if (c.root_fingerprint == "sha256:" + std::string(64, '0')) {
    return make_error("root_fingerprint is still the example's placeholder (all zeros): set it to the consortium root's "
                      "fingerprint, which fedda-admin provision printed first and the consortium sent you apart from the kit");
  }
  if (c.site_id.empty()) return make_error("site_id is required");
  if (c.coordinator.empty()) return make_error("coordinator is required (e.g. tcp://coordinator.example.org:5570)");
  if (c.coordinator.rfind("tcp://", 0) != 0 && c.coordinator.rfind("ipc://", 0) != 0 &&
      c.coordinator.rfind("inproc://", 0) != 0) {
    return make_error("coordinator '" + c.coordinator + "' is not a ZeroMQ endpoint (tcp://HOST:PORT)");
  }
  return Status::success();
}

// The data layout's keys against each other; `data` and `dicom_labels` as written in the file.
Status check_data_source(const SiteConfig& c, const std::string& data, const std::string& dicom_labels) {
  const auto& layouts = imaging::data_layouts();
  if (std::find(layouts.begin(), layouts.end(), c.data_layout) == layouts.end()) {
    return make_error("data_layout '" + c.data_layout + "' (choose wmh, bids, datalist, dicom or pacs)");
  }
  const bool dicom = c.data_layout == "dicom" || c.data_layout == "pacs";
  if (!dicom && (!dicom_labels.empty() || c.dicom_flair != "flair" || c.dicom_t1 != "t1")) {
    return make_error("dicom_flair, dicom_t1 and dicom_labels apply to data_layout: dicom or pacs only");
  }
  const bool pacs_given = !c.pacs.dicomweb.empty() || !c.pacs.dimse.empty();
  if (c.data_layout == "pacs" && !pacs_given) {
    return make_error("data_layout: pacs needs pacs: {dicomweb: URL} or pacs: {dimse: AE_TITLE@HOST:PORT}");
  }
  if (c.data_layout != "pacs" && pacs_given) return make_error("pacs: applies to data_layout: pacs only");
  if (c.policy.write_back && c.data_layout != "pacs") return make_error("policy: write_back applies to data_layout: pacs only");
  if (c.data_layout == "pacs") {
    if (auto st = imaging::validate_pacs(c.pacs); !st) return st;
  }
  if (c.data_layout == "pacs" && !data.empty()) return make_error("data: does not apply to data_layout: pacs (the PACS is the data)");
  for (const auto& [key, rule] : {std::pair<std::string, std::string>{"dicom_flair", c.dicom_flair}, {"dicom_t1", c.dicom_t1}}) {
    try {
      std::regex check(rule, std::regex::icase);
    } catch (const std::regex_error& e) {
      return make_error(key + " '" + rule + "' is not a regular expression: " + e.what());
    }
  }
  if (c.data_layout != "bids" && (!c.bids_filters.empty() || !c.bids_labels.empty())) {
    return make_error("bids_filters and bids_labels apply to data_layout: bids only");
  }
  if (c.bids_labels.find('/') != std::string::npos || c.bids_labels == "..") {
    return make_error("bids_labels '" + c.bids_labels + "' is the name of a folder under derivatives/, not a path");
  }
  if (data.empty() && c.data_layout != "pacs") {
    return make_error(c.data_layout == "datalist" ? "data is required (the datalist's JSON file)"
                      : c.data_layout == "bids"   ? "data is required (the BIDS dataset's root folder)"
                      : c.data_layout == "dicom"  ? "data is required (the folder of DICOM series)"
                                                  : "data is required (the clinic folder holding one folder per subject)");
  }
  return Status::success();
}

// How the agent runs: device, precision, threads, timings, metrics.
Status check_service(const SiteConfig& c) {
  if (c.device != "cpu" && c.device != "cuda" && c.device.rfind("cuda:", 0) != 0) {
    return make_error("device '" + c.device + "' (choose cpu or cuda)");
  }
  if (!models::is_precision_name(c.precision)) {
    return make_error("precision '" + c.precision + "' (choose auto, float32 or bfloat16)");
  }
  if (c.threads < 0) return make_error("threads must be 0 (default) or more");
  if (c.heartbeat_ms < 10) return make_error("heartbeat_ms must be at least 10");
  if (c.reconnect_min_ms < 1 || c.reconnect_max_ms < c.reconnect_min_ms) {
    return make_error("reconnect_min_ms must be positive and at most reconnect_max_ms");
  }
  if (!(c.drain_timeout_s >= 0)) return make_error("drain_timeout_s must not be negative");
  if (!c.metrics_listen.empty() && !monitoring::loopback_listen(c.metrics_listen)) {
    return make_error("metrics_listen '" + c.metrics_listen + "' must be a loopback HOST:PORT such as 127.0.0.1:9470 "
                      "(the agent's metrics are for this server's own monitoring)");
  }
  return Status::success();
}

}  // namespace

Result<SiteConfig> read_site_config(const fs::path& path) {
  auto m = config::Mapping::load(path);
  if (!m) return m.error();
  const auto base = base_of(path);
  SiteConfig c;
  std::string data, cache, dicom_labels, kit;
  m->get("site_id", c.site_id);
  m->get("coordinator", c.coordinator);
  m->get("data", data);
  m->get("data_layout", c.data_layout);
  auto filters = m->mapping("bids_filters");
  for (const auto& entity : imaging::bids_filter_entities()) {
    std::string value;
    filters.get(entity, value);
    if (!value.empty()) c.bids_filters[entity] = value;
  }
  m->get("bids_labels", c.bids_labels);
  m->get("dicom_flair", c.dicom_flair);
  m->get("dicom_t1", c.dicom_t1);
  m->get("dicom_labels", dicom_labels);
  auto pacs = read_pacs(m->mapping("pacs"), base);
  m->get("cache_dir", cache);
  m->get("device", c.device);
  m->get("precision", c.precision);
  m->get("threads", c.threads);
  m->get("heartbeat_ms", c.heartbeat_ms);
  m->get("reconnect_min_ms", c.reconnect_min_ms);
  m->get("reconnect_max_ms", c.reconnect_max_ms);
  m->get("drain_timeout_s", c.drain_timeout_s);
  m->get("kit", kit);
  m->get("root_fingerprint", c.root_fingerprint);
  m->get("metrics_listen", c.metrics_listen);
  c.policy = read_policy(m->mapping("policy"));
  if (auto st = m->finish(); !st) return st.error();
  const auto fail = [&](const Error& e) { return make_error(path.string() + ": " + e.message); };
  if (!pacs) return fail(pacs.error());
  c.pacs = *pacs;
  for (const auto& check : {check_policy(c.policy), check_identity(c), check_data_source(c, data, dicom_labels), check_service(c)}) {
    if (!check) return fail(check.error());
  }
  if (!data.empty()) c.data = beside(base, data);
  if (!dicom_labels.empty()) c.dicom_labels = beside(base, dicom_labels);
  if (!kit.empty()) c.kit = beside(base, kit);
  if (cache.empty()) cache = "cache-" + c.site_id;
  c.cache_dir = beside(base, cache);
  return c;
}

std::string data_location(const SiteConfig& c) { return c.data_layout == "pacs" ? imaging::pacs_location(c.pacs) : c.data.string(); }

Result<imaging::SubjectIndex> site_subject_index(const SiteConfig& c) {
  imaging::DataSource source;
  source.layout = c.data_layout;
  source.path = c.data;
  if (c.data_layout != "wmh") source.clinic = c.site_id;  // the WMH layout's clinic is its folder, as fedda-sim writes it
  source.bids_filters = c.bids_filters;
  source.bids_labels = c.bids_labels;
  source.dicom_flair = c.dicom_flair;
  source.dicom_t1 = c.dicom_t1;
  source.dicom_labels = c.dicom_labels;
  source.cache = c.cache_dir;  // dicom, pacs: the converted (and retrieved) series, reused while unchanged
  source.pacs = c.pacs;
  return imaging::index_subjects(source);
}

Result<std::vector<imaging::SubjectFiles>> site_subjects(const SiteConfig& c) {
  auto index = site_subject_index(c);
  if (!index) return index.error();
  return std::move(index->subjects);
}

CheckReport check_site(const SiteConfig& c) {
  CheckReport report;
  if (!c.kit.empty()) {
    auto kit = kit::load_site_kit(c.kit);
    if (!kit) {
      report.problems.push_back("kit: " + kit.error().message);
    } else if (kit->site_id != c.site_id) {
      report.problems.push_back("kit: issued to site '" + kit->site_id + "', not '" + c.site_id + "'");
    } else if (c.root_fingerprint.empty()) {
      report.problems.push_back("root_fingerprint: not set; pin the consortium root's fingerprint (sent to you apart "
                                "from the kit; the kit's is " + kit->root_fingerprint + ")");
    } else if (c.root_fingerprint != kit->root_fingerprint) {
      report.problems.push_back("kit: its root " + kit->root_fingerprint + " is not the consortium root pinned in "
                                "root_fingerprint (" + c.root_fingerprint + "): a forged or wrong kit");
    }
  }
  if (auto st = models::check_device(c.device); !st) report.problems.push_back("device: " + st.error().message);
  std::error_code ec;
  fs::create_directories(c.cache_dir, ec);
  if (ec || access(c.cache_dir.c_str(), W_OK) != 0) {
    report.problems.push_back("cache_dir " + c.cache_dir.string() + ": not writable");
  }
  auto index = site_subject_index(c);
  if (!index) {
    report.problems.push_back(index.error().message);
    return report;
  }
  for (const auto& i : index->ignored) report.ignored.push_back(i.path.string() + ": " + i.reason);
  const auto* subjects = &index->subjects;
  report.subjects = static_cast<int>(subjects->size());
  for (const auto& s : *subjects) {
    report.found.push_back(s.subject + ": " + s.flair.string() + ", " + s.t1.string() +
                           (s.labels ? ", labels " + s.labels->string() : ", unlabelled"));
    if (auto subject = imaging::read_subject(s.flair, s.t1, s.labels); !subject) {
      report.problems.push_back("subject " + s.subject + ": " + subject.error().message);
      continue;
    }
    ++report.usable;
  }
  return report;
}

Result<std::string> pseudonym_key(const SiteConfig& c) {
  if (!c.kit.empty()) {
    auto kit = kit::load_site_kit(c.kit);
    if (!kit) return kit.error();
    return kit->storage_key;
  }
  const auto path = c.cache_dir / "pseudonym.key";
  if (!fs::exists(path)) {
    auto key = crypto::random_bytes(crypto::kStorageKeyBytes);
    if (!key) return key.error();
    if (auto st = files::write_secret(path, *key); !st) return st.error();
  }
  auto key = files::read_all(path);
  if (!key) return key.error();
  if (key->size() != crypto::kStorageKeyBytes) return make_error(path.string() + ": not a 32-byte key");
  return key;
}

std::string pseudonym(const std::string& key, const std::string& subject) {
  auto mac = crypto::hmac_sha256_hex(key, "fedda-subject\n" + subject);
  return "s-" + (mac ? mac->substr(0, 16) : std::string("unavailable"));  // protocol::is_pseudonym
}

}  // namespace fedda::site_agent
