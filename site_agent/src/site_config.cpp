#include "fedda/site_agent/site_config.h"

#include <unistd.h>

#include "fedda/common/config.h"
#include "fedda/common/kit.h"
#include "fedda/imaging/nifti_io.h"
#include "fedda/models/engine.h"

namespace fedda::site_agent {
namespace fs = std::filesystem;

Result<SiteConfig> read_site_config(const fs::path& path) {
  const auto fail = [&](const std::string& message) { return make_error(path.string() + ": " + message); };
  auto m = config::Mapping::load(path);
  if (!m) return m.error();
  SiteConfig c;
  std::string data, cache;
  m->get("site_id", c.site_id);
  m->get("coordinator", c.coordinator);
  m->get("data", data);
  m->get("cache_dir", cache);
  m->get("device", c.device);
  m->get("threads", c.threads);
  m->get("heartbeat_ms", c.heartbeat_ms);
  m->get("reconnect_min_ms", c.reconnect_min_ms);
  m->get("reconnect_max_ms", c.reconnect_max_ms);
  m->get("drain_timeout_s", c.drain_timeout_s);
  std::string kit;
  m->get("kit", kit);
  if (auto st = m->finish(); !st) return st.error();
  const auto base = path.parent_path();
  if (c.site_id.empty()) return fail("site_id is required");
  if (c.coordinator.empty()) return fail("coordinator is required (e.g. tcp://coordinator.example.org:5570)");
  if (c.coordinator.rfind("tcp://", 0) != 0 && c.coordinator.rfind("ipc://", 0) != 0 &&
      c.coordinator.rfind("inproc://", 0) != 0) {
    return fail("coordinator '" + c.coordinator + "' is not a ZeroMQ endpoint (tcp://HOST:PORT)");
  }
  if (data.empty()) return fail("data is required (the clinic folder holding one folder per subject)");
  c.data = fs::path(data).is_relative() ? (base / data).lexically_normal() : fs::path(data);
  if (!kit.empty()) c.kit = fs::path(kit).is_relative() ? (base / kit).lexically_normal() : fs::path(kit);
  if (cache.empty()) cache = "cache-" + c.site_id;
  c.cache_dir = fs::path(cache).is_relative() ? (base / cache).lexically_normal() : fs::path(cache);
  if (c.device != "cpu" && c.device != "cuda" && c.device.rfind("cuda:", 0) != 0) {
    return fail("device '" + c.device + "' (choose cpu or cuda)");
  }
  if (c.threads < 0) return fail("threads must be 0 (default) or more");
  if (c.heartbeat_ms < 10) return fail("heartbeat_ms must be at least 10");
  if (c.reconnect_min_ms < 1 || c.reconnect_max_ms < c.reconnect_min_ms) {
    return fail("reconnect_min_ms must be positive and at most reconnect_max_ms");
  }
  if (!(c.drain_timeout_s >= 0)) return fail("drain_timeout_s must not be negative");
  return c;
}

Result<std::vector<imaging::SubjectFiles>> site_subjects(const SiteConfig& c) {
  std::error_code ec;
  if (!fs::is_directory(c.data, ec)) return make_error(c.data.string() + ": data folder not found");
  auto folder = c.data.lexically_normal();
  if (folder.filename().empty()) folder = folder.parent_path();
  return imaging::find_clinic_subjects(folder.parent_path(), folder.filename().string());
}

CheckReport check_site(const SiteConfig& c) {
  CheckReport report;
  if (!c.kit.empty()) {
    auto kit = kit::load_site_kit(c.kit);
    if (!kit) {
      report.problems.push_back("kit: " + kit.error().message);
    } else if (kit->site_id != c.site_id) {
      report.problems.push_back("kit: issued to site '" + kit->site_id + "', not '" + c.site_id + "'");
    }
  }
  if (auto st = models::check_device(c.device); !st) report.problems.push_back("device: " + st.error().message);
  std::error_code ec;
  fs::create_directories(c.cache_dir, ec);
  if (ec || access(c.cache_dir.c_str(), W_OK) != 0) {
    report.problems.push_back("cache_dir " + c.cache_dir.string() + ": not writable");
  }
  auto subjects = site_subjects(c);
  if (!subjects) {
    report.problems.push_back(subjects.error().message);
    return report;
  }
  report.subjects = static_cast<int>(subjects->size());
  for (const auto& s : *subjects) {
    if (auto subject = imaging::read_subject(s.flair, s.t1, s.labels); !subject) {
      report.problems.push_back("subject " + s.subject + ": " + subject.error().message);
      continue;
    }
    ++report.usable;
  }
  return report;
}

}  // namespace fedda::site_agent
