// fedda-agent: the site agent, run by a hospital. `run` joins the consortium as a service,
// `check` validates a site before joining, `segment` segments one scan locally.
#include <chrono>
#include <csignal>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "fedda/common/cli.h"
#include "fedda/common/files.h"
#include "fedda/common/log.h"
#include "fedda/imaging/subject_index.h"
#include "fedda/common/version.h"
#include "fedda/models/engine.h"
#include "fedda/site_agent/agent.h"
#include "fedda/site_agent/approvals.h"
#include "fedda/site_agent/site_config.h"
#include "fedda/site_agent/site_status.h"

using namespace fedda;

namespace {
site_agent::Agent* running = nullptr;
void on_signal(int) {
  if (running) running->stop();
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fedda-agent: the fedda site agent, run by a hospital to segment and adapt models on local data.\n"
               "Only model weights, discriminator gradients and summary metrics ever leave the site."};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("fedda-agent ") + kVersion);
  std::string log_level = "info";
  cli::add_log_level(app, log_level);

  int rc = 0;
  std::string config_path;
  // Reads --config; on error logs it and sets the usage exit code.
  const auto load_config = [&]() -> std::optional<site_agent::SiteConfig> {
    auto config = site_agent::read_site_config(config_path);
    if (!config) {
      log::get("fedda-agent")->error("{}", config.error().message);
      rc = 2;
      return std::nullopt;
    }
    return std::move(*config);
  };
  auto* run = app.add_subcommand(
      "run",
      "Join the consortium as a long-running service: connect to the coordinator named in the site config, "
      "take part in its jobs, reconnect with backoff when it goes away. SIGTERM or SIGINT drains the running "
      "task and leaves cleanly. A subject that fails validation is skipped and reported by id.");
  run->add_option("--config", config_path, "site config (YAML); see configs/site.example.yaml")->required();
  run->callback([&]() {
    auto config = load_config();
    if (!config) return;
    site_agent::Agent agent(*config);
    running = &agent;
    std::signal(SIGTERM, on_signal);
    std::signal(SIGINT, on_signal);
    rc = agent.run();
    running = nullptr;
    if (rc == 3) {
      spdlog::shutdown();
      std::_Exit(3);
    }
  });

  auto* check = app.add_subcommand(
      "check",
      "Validate a site before joining: the config's settings and policy, the kit and the root it is pinned to "
      "(root_fingerprint), the device, the cache folder, and every scan (readable, 3-D, finite, FLAIR/T1/label "
      "geometry agreeing, labels in {0,1,2}). Lists each subject found (in the data_layout site.yaml names: wmh, "
      "bids or datalist), each file or folder left out and why, and each problem; exit code 0 when there is no "
      "problem, 1 otherwise.");
  check->add_option("--config", config_path, "site config (YAML)")->required();
  check->callback([&]() {
    auto config = load_config();
    if (!config) return;
    const auto report = site_agent::check_site(*config);
    std::cout << "site " << config->site_id << ": coordinator " << config->coordinator << ", data "
              << config->data.string() << " (" << config->data_layout << " layout), device " << config->device << "\n";
    for (const auto& f : report.found) std::cout << "subject " << f << "\n";
    for (const auto& i : report.ignored) std::cout << "ignored: " << i << "\n";
    std::cout << report.usable << " of " << report.subjects << " subjects usable\n";
    for (const auto& p : report.problems) std::cout << "problem: " << p << "\n";
    rc = report.problems.empty() && report.usable > 0 ? 0 : 1;
  });

  bool as_json = false;
  std::string job;
  auto* pending = app.add_subcommand(
      "pending",
      "Offers waiting for this site's approval (policy approval: manual): what each job is and exactly what it will "
      "send from this site (tensors, shapes, bytes per round; metrics when it evaluates here).");
  pending->add_option("--config", config_path, "site config (YAML)")->required();
  pending->add_flag("--json", as_json, "one JSON document");
  pending->callback([&]() {
    auto config = load_config();
    if (!config) return;
    const auto offers = site_agent::list_pending(config->cache_dir);
    if (as_json) {
      nlohmann::json list = nlohmann::json::array();
      for (const auto& o : offers) list.push_back({{"job", o.job}, {"digest", o.digest}, {"offer", nlohmann::json::parse(o.description)}});
      std::cout << list.dump(2) << "\n";
      return;
    }
    if (offers.empty()) std::cout << "no offer waits for approval\n";
    for (const auto& o : offers) {
      const auto d = nlohmann::json::parse(o.description);
      std::cout << "job " << o.job << ": " << d.value("type", "") << ", source " << d.value("source", "") << ", sites "
                << d["sites"].dump() << ", " << d.value("rounds", 0) << " rounds of " << d.value("local_steps", 0)
                << " steps, batch " << d.value("batch_size", 0) << "\n";
      std::cout << "  sends per round: " << d["sends_per_round"].size() << " tensors, " << d.value("bytes_per_round", 0)
                << " bytes (" << d.value("transfer_precision", "") << "), and " << d["also_per_round"].dump() << "\n";
      if (!d["evaluation"].is_null()) std::cout << "  evaluates here: " << d["evaluation"].dump() << "\n";
      std::cout << "  fedda-agent approve " << o.job << " --config " << config_path << "   (or refuse)\n";
    }
  });
  for (const bool approve : {true, false}) {
    auto* decide = app.add_subcommand(approve ? "approve" : "refuse",
                                      approve ? "Approve an offer that waits (fedda-agent pending); the running agent "
                                                "prepares the job within a second."
                                              : "Refuse an offer that waits; the coordinator is told by code.");
    decide->add_option("job", job, "job id")->required();
    decide->add_option("--config", config_path, "site config (YAML)")->required();
    decide->callback([&, approve]() {
      auto config = load_config();
      if (!config) return;
      if (auto st = site_agent::decide(config->cache_dir, job, approve); !st) {
        log::get("fedda-agent")->error("{}", st.error().message);
        rc = 1;
        return;
      }
      std::cout << "job " << job << ": " << (approve ? "approved" : "refused") << "\n";
    });
  }

  auto* subjects = app.add_subcommand(
      "subjects", "This site's subjects and their pseudonyms: only pseudonyms leave the site (in evaluations, skipped "
                  "subjects, and the subjects an on-the-fly job names). Keep this map at the site.");
  subjects->add_option("--config", config_path, "site config (YAML)")->required();
  subjects->add_flag("--json", as_json, "one JSON object: pseudonym -> subject");
  subjects->callback([&]() {
    auto config = load_config();
    if (!config) return;
    auto key = site_agent::pseudonym_key(*config);
    auto list = site_agent::site_subjects(*config);
    if (!key || !list) {
      log::get("fedda-agent")->error("{}", key ? list.error().message : key.error().message);
      rc = 1;
      return;
    }
    nlohmann::json map = nlohmann::json::object();
    for (const auto& s : *list) map[site_agent::pseudonym(*key, s.subject)] = s.subject;
    if (as_json) {
      std::cout << map.dump(2) << "\n";
      return;
    }
    std::cout << "PSEUDONYM           SUBJECT\n";
    for (const auto& s : *list) std::cout << site_agent::pseudonym(*key, s.subject) << "  " << s.subject << "\n";
  });

  auto* status = app.add_subcommand(
      "status", "What this site has sent, per job and day (messages, bytes, updates carrying tensors; from the audit "
                "log), what waits for approval, and the connection to the coordinator.");
  status->add_option("--config", config_path, "site config (YAML)")->required();
  status->add_flag("--json", as_json, "one JSON document");
  status->callback([&]() {
    auto config = load_config();
    if (!config) return;
    nlohmann::json connection;
    if (auto text = files::read_all(config->cache_dir / "status.json")) connection = nlohmann::json::parse(*text, nullptr, false);
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    std::string state = "not running (no status written yet)";
    std::string metrics;
    if (connection.is_object()) {
      metrics = connection.value("metrics", "");
      const auto age = (now - connection.value("updated_ms", std::int64_t{0})) / 1000;
      state = connection.value("state", "");
      if (state != "stopped" && age > 10) state = "not running? (last status " + std::to_string(age) + " s ago: " + state + ")";
    }
    const auto sent = site_agent::summarize_audit(config->cache_dir / "audit.jsonl");
    const auto offers = site_agent::list_pending(config->cache_dir);
    if (as_json) {
      nlohmann::json rows = nlohmann::json::array();
      for (const auto& r : sent) {
        rows.push_back({{"job", r.job}, {"day", r.day}, {"messages", r.messages}, {"bytes", r.bytes},
                        {"updates_with_tensors", r.updates_with_tensors}, {"by_type", r.by_type}});
      }
      nlohmann::json waiting = nlohmann::json::array();
      for (const auto& o : offers) waiting.push_back(o.job);
      std::cout << nlohmann::json{{"site", config->site_id}, {"coordinator", config->coordinator}, {"connection", state},
                                  {"metrics", metrics}, {"sent", rows}, {"pending", waiting}}.dump(2) << "\n";
      return;
    }
    std::cout << "site " << config->site_id << ", coordinator " << config->coordinator << ": " << state << "\n";
    if (!metrics.empty()) std::cout << "metrics: " << metrics << "\n";
    std::cout << "sent (from " << (config->cache_dir / "audit.jsonl").string() << "):\n";
    std::cout << "  DAY         JOB                  MESSAGES  BYTES       UPDATES  TYPES\n";
    for (const auto& r : sent) {
      std::string types;
      for (const auto& [t, n] : r.by_type) types += (types.empty() ? "" : ", ") + t + " " + std::to_string(n);
      std::printf("  %-10s  %-19s  %8ld  %10lld  %7ld  %s\n", r.day.c_str(), r.job.empty() ? "(none)" : r.job.c_str(),
                  r.messages, static_cast<long long>(r.bytes), r.updates_with_tensors, types.c_str());
    }
    std::cout << "waiting for approval: " << offers.size() << (offers.empty() ? "" : " (fedda-agent pending)") << "\n";
  });

  std::string model, flair, t1, out, device = "cpu", dicom, dicom_flair = "flair", dicom_t1 = "t1";
  auto* segment = app.add_subcommand(
      "segment",
      "Segment one scan locally: FLAIR and T1 of one subject (same geometry) in, a WMH label map out "
      "(0 background, 1 WMH) in the FLAIR's exact geometry. The model file carries its architecture and "
      "preprocessing grid. With --dicom, the subject's DICOM folder instead: its FLAIR and T1 series are "
      "chosen by --dicom-flair / --dicom-t1 (SeriesDescription rules), checked and converted with dcm2niix, and "
      "the label map is written in the converted FLAIR's geometry (the same voxels in space, axes in ITK's RAI "
      "order).");
  segment->add_option("--model", model, "fedda model file (.pt)")->required();
  auto* flair_option = segment->add_option("--flair", flair, "FLAIR NIfTI");
  auto* t1_option = segment->add_option("--t1", t1, "T1 NIfTI, same grid as the FLAIR");
  auto* dicom_option = segment->add_option("--dicom", dicom, "a subject's DICOM folder (instead of --flair and --t1)");
  flair_option->excludes(dicom_option);
  t1_option->excludes(dicom_option);
  segment->add_option("--dicom-flair", dicom_flair, "--dicom: SeriesDescription rule of the FLAIR (case-insensitive regex)")
      ->capture_default_str();
  segment->add_option("--dicom-t1", dicom_t1, "--dicom: SeriesDescription rule of the T1")->capture_default_str();
  segment->add_option("--out", out, "output segmentation (.nii or .nii.gz)")->required();
  segment->add_option("--device", device, "cpu or cuda")->capture_default_str();
  segment->callback([&]() {
    auto log = log::get("fedda-agent");
    std::filesystem::path converted;  // --dicom: the series as NIfTI, removed afterwards
    if (!dicom.empty()) {
      char folder[] = "/tmp/fedda-segment-XXXXXX";
      if (!::mkdtemp(folder)) {
        log->error("cannot make a temporary folder: {}", std::strerror(errno));
        rc = 1;
        return;
      }
      converted = folder;
      imaging::DataSource source;
      source.layout = "dicom";
      source.path = dicom;
      source.dicom_flair = dicom_flair;
      source.dicom_t1 = dicom_t1;
      source.cache = converted;
      auto index = imaging::index_subjects(source);
      std::string problem;
      if (!index) {
        problem = index.error().message;
      } else if (index->subjects.size() != 1) {
        problem = dicom + ": " + std::to_string(index->subjects.size()) + " subjects (PatientIDs) found; --dicom takes one subject's folder";
      }
      if (!problem.empty()) {
        log->error("{}", problem);
        std::error_code ec;
        std::filesystem::remove_all(converted, ec);
        rc = 1;
        return;
      }
      for (const auto& i : index->ignored) log->warn("ignored {}: {}", i.path.string(), i.reason);
      flair = index->subjects[0].flair.string();
      t1 = index->subjects[0].t1.string();
    } else if (flair.empty() || t1.empty()) {
      log->error("segment needs --flair and --t1, or --dicom");
      rc = 2;
      return;
    }
    auto st = models::segment_scan(model, flair, t1, out, device);
    std::error_code ec;
    if (!converted.empty()) std::filesystem::remove_all(converted, ec);
    if (!st) {
      log->error("{}", st.error().message);
      rc = 1;
      return;
    }
    log->info("wrote {}", out);
  });

  return cli::run(app, argc, argv, rc, "fedda-agent");
}
