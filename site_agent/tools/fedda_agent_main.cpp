// fedda-agent: the site agent, run by a hospital. `run` joins the consortium as a service,
// `check` validates a site before joining, `segment` segments one scan locally.
#include <chrono>
#include <csignal>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <ctime>
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
#include "fedda/models/quality.h"
#include "fedda/site_agent/agent.h"
#include "fedda/site_agent/approvals.h"
#include "fedda/site_agent/monitor.h"
#include "fedda/site_agent/site_config.h"
#include "fedda/site_agent/site_status.h"
#include "segment_command.h"

using namespace fedda;

namespace {

// A site with nothing to contribute that joined anyway would look ready to the coordinator: say
// so before connecting, as `check` would. False: refused (logged).
bool has_subjects_or_may_join(const site_agent::SiteConfig& config, const std::string& config_path, bool allow_no_subjects) {
  auto index = site_agent::site_subject_index(config);
  if (index && !index->subjects.empty()) return true;
  const std::string why = index ? std::to_string(index->ignored.size()) + " files or folders left out" : index.error().message;
  const std::string what = "site " + config.site_id + ": no usable subject in " + site_agent::data_location(config) + " (" +
                           config.data_layout + " layout; " + why + "); `fedda-agent check --config " + config_path +
                           "` lists what was found and why it was left out";
  if (!allow_no_subjects) {
    log::get("fedda-agent")->error("{}; --allow-no-subjects joins anyway", what);
    return false;
  }
  log::get("fedda-agent")->warn("{}; joining anyway (--allow-no-subjects)", what);
  return true;
}

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
      "task and leaves cleanly. A subject that fails validation is skipped and reported by id. Exit code 0 "
      "after a clean stop, 1 on a configuration or data error, 3 when the drain timeout abandoned a task, 4 when the "
      "coordinator refused this agent because another agent with the same site kit was connected first.");
  run->add_option("--config", config_path, "site config (YAML); see configs/site.example.yaml")->required();
  bool allow_no_subjects = false;
  run->add_flag("--allow-no-subjects", allow_no_subjects,
                "join even when the data folder holds no usable subject (the site can then only be offered jobs it "
                "has no data for); without it the agent refuses to start, as `check` would fail");
  run->callback([&]() {
    auto config = load_config();
    if (!config) return;
    if (!has_subjects_or_may_join(*config, config_path, allow_no_subjects)) {
      rc = 1;
      return;
    }
    site_agent::Agent agent(*config);
    running = &agent;
    std::signal(SIGTERM, on_signal);
    std::signal(SIGINT, on_signal);
    rc = agent.run();
    running = nullptr;
    if (rc == 3 || rc == 4) {  // a task abandoned on its worker thread: leave without waiting for it
      spdlog::shutdown();
      std::_Exit(rc);
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
              << site_agent::data_location(*config) << " (" << config->data_layout << " layout), device " << config->device << "\n";
    for (const auto& f : report.found) std::cout << "subject " << f << "\n";
    for (const auto& i : report.ignored) std::cout << "ignored: " << i << "\n";
    // What was counted and what was not: a subject with a problem, and files or folders left out.
    std::cout << report.usable << " of " << report.subjects << " subjects usable";
    if (report.usable < report.subjects) std::cout << "; " << report.subjects - report.usable << " with a problem (below)";
    if (!report.ignored.empty()) std::cout << "; " << report.ignored.size() << " left out (ignored: above)";
    std::cout << "\n";
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

  site_agent::add_segment_command(app, rc);

  // The subjects of a folder in any layout the agent reads (imaging/subject_index.h), or of the
  // site config's data; error logged and rc set when there are none.
  std::string data_dir, data_layout;
  const auto data_subjects = [&](const std::optional<site_agent::SiteConfig>& config,
                                 const std::filesystem::path& dicom_cache) -> std::optional<std::vector<imaging::SubjectFiles>> {
    auto log = log::get("fedda-agent");
    if (config) {
      auto list = site_agent::site_subjects(*config);
      if (!list) {
        log->error("{}", list.error().message);
        rc = 1;
        return std::nullopt;
      }
      return std::move(*list);
    }
    auto source = imaging::detect_data_source(data_dir);
    if (!source) {
      log->error("{}", source.error().message);
      rc = 1;
      return std::nullopt;
    }
    if (!data_layout.empty()) source->layout = data_layout;
    if (source->layout == "dicom" && source->cache.empty()) source->cache = dicom_cache;
    auto index = imaging::index_subjects(*source);
    if (!index) {
      log->error("{}", index.error().message);
      rc = 1;
      return std::nullopt;
    }
    for (const auto& i : index->ignored) log->warn("ignored {}: {}", i.path.string(), i.reason);
    return std::move(index->subjects);
  };

  std::string model, out, device = "cpu", teacher, baseline, estimator_from, precision = "auto";
  double flag_below = 0.2;
  bool score = false;
  auto* monitor = app.add_subcommand(
      "monitor",
      "How well a model works on this site's scans, without labels: per scan an estimated Dice with a 90% interval "
      "(from the quality estimator the model file carries; fedda-agent calibrate fits one at a labelled site) and the "
      "signals behind it (the model's entropy and self-expected Dice, its agreement under test-time augmentation and "
      "with --teacher, predicted lesion volume and count, intensity histogram and noise). Writes OUT/estimates.csv, "
      "OUT/report.html (thumbnails of flagged scans), OUT/site-profile.json (this run's image statistics, the "
      "--baseline of a later run) and OUT/summary.json (aggregates only, the one file meant to leave the site). A scan "
      "is flagged when its estimate is below --flag-below, when its signals leave the estimator's range, or when it "
      "drifted from --baseline. With --config: the site's data, OUT defaults to cache_dir/reports/monitor-<time>, and "
      "the baseline to cache_dir/reports/site-profile.json (written by the first run).");
  monitor->add_option("--model", model, "fedda model file (.pt)")->required();
  monitor->add_option("--teacher", teacher, "the teacher it was distilled from (agreement with it is a signal)");
  monitor->add_option("--estimator-from", estimator_from,
                      "use the quality estimator this model file carries (e.g. the teacher's, for a model adapted from "
                      "it with no estimator of its own; what jobs do) instead of --model's");
  auto* monitor_data = monitor->add_option("--data", data_dir, "the scans: a folder in any layout the agent reads");
  auto* monitor_config = monitor->add_option("--config", config_path, "site config (YAML): its data and cache_dir");
  monitor_data->excludes(monitor_config);
  monitor->add_option("--layout", data_layout, "--data's layout when detection is not enough (wmh, bids, datalist, dicom)");
  monitor->add_option("--out", out, "report folder (created)");
  monitor->add_option("--baseline", baseline, "an earlier run's site-profile.json: flag scans that drifted from it");
  monitor->add_option("--flag-below", flag_below, "flag scans whose estimated Dice is below this")->capture_default_str();
  monitor->add_flag("--score", score, "also score against the labels where present (true_dsc column; for validation: "
                                      "the estimate never reads them)");
  monitor->add_option("--device", device, "cpu or cuda")->capture_default_str();
  monitor->add_option("--precision", precision, "auto, float32 or bfloat16")->capture_default_str();
  monitor->callback([&]() {
    auto log = log::get("fedda-agent");
    if (data_dir.empty() && config_path.empty()) {
      log->error("monitor needs --data or --config");
      rc = 2;
      return;
    }
    std::optional<site_agent::SiteConfig> config;
    if (!config_path.empty()) {
      config = load_config();
      if (!config) return;
    }
    site_agent::MonitorOptions options;
    options.model = model;
    if (!teacher.empty()) options.teacher = teacher;
    if (!estimator_from.empty()) options.estimator_from = estimator_from;
    options.flag_below = flag_below;
    options.score = score;
    options.device = device;
    options.precision = precision;
    if (config) {
      const auto reports = config->cache_dir / "reports";
      if (baseline.empty()) options.site_baseline = reports / "site-profile.json";
      if (out.empty()) {
        const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
        char stamp[32];
        std::strftime(stamp, sizeof stamp, "monitor-%Y%m%dT%H%M%SZ", std::gmtime(&now));
        out = (reports / stamp).string();
      }
    }
    if (out.empty()) {
      log->error("monitor needs --out (or --config)");
      rc = 2;
      return;
    }
    options.out = out;
    if (!baseline.empty()) options.baseline = baseline;
    auto subjects = data_subjects(config, options.out / "dicom-cache");
    if (!subjects) return;
    const auto& against = options.baseline ? options.baseline : options.site_baseline;
    log->info("monitoring {} scans with {}{}", subjects->size(), model,
              against ? " against baseline " + against->string() : std::string());
    auto summary = site_agent::run_monitor(options, *subjects, [&](int done, int total) {
      if (done == total || done % 5 == 0) log->info("{} of {} scans", done, total);
    });
    if (!summary) {
      log->error("{}", summary.error().message);
      rc = 1;
      return;
    }
    for (const auto& s : summary->skipped) log->warn("skipped {}", s);
    if (!summary->has_estimator) log->warn("{} carries no quality estimator: signals only (fedda-agent calibrate fits one)", model);
    if (summary->has_estimator) {
      std::cout << summary->scans << " scans, " << summary->flagged << " flagged, estimated Dice median "
                << summary->median << " (IQR " << summary->q1 << " to " << summary->q3 << ")";
    } else {  // nothing was estimated, so "0 flagged" would read as "all well"
      std::cout << summary->scans << " scans, no Dice estimates: " << model
                << " carries no quality estimator (fedda-agent calibrate fits one at a labelled site)";
    }
    if (summary->compared) {
      std::cout << ", " << summary->drifted << " drifted from the baseline" << (summary->site_drifted ? ": SITE DRIFTED" : "");
    }
    std::cout << "\nreport: " << (options.out / "report.html").string() << "\n";
    if (!summary->baseline_problem.empty()) log->warn("baseline not used: {}", summary->baseline_problem);
    if (summary->became_baseline) log->info("this run is the site's baseline from now on: {}", options.site_baseline->string());
  });

  auto* calibrate = app.add_subcommand(
      "calibrate",
      "Fit the label-free quality estimator of a model where labels exist (a source site; the labelled half in "
      "simulation): each labelled scan is segmented as it is and under 7 acquisition changes (contrast curves, noise, "
      "blur, a bias field), its signals regressed on its Dice, and the estimator written into a copy of the model "
      "file (--out), which sites without labels then monitor with. With --teacher the teacher's agreement is one of "
      "the signals, and monitor needs the same teacher.");
  calibrate->add_option("--model", model, "fedda model file (.pt)")->required();
  calibrate->add_option("--teacher", teacher, "the teacher it was distilled from");
  calibrate->add_option("--data", data_dir, "labelled scans: a folder in any layout the agent reads")->required();
  calibrate->add_option("--layout", data_layout, "--data's layout when detection is not enough");
  calibrate->add_option("--out", out, "the model file with its estimator (may be --model itself)")->required();
  calibrate->add_option("--device", device, "cpu or cuda")->capture_default_str();
  calibrate->add_option("--precision", precision, "auto, float32 or bfloat16")->capture_default_str();
  calibrate->callback([&]() {
    auto log = log::get("fedda-agent");
    auto subjects = data_subjects(std::nullopt, std::filesystem::path(out).parent_path() / "dicom-cache");
    if (!subjects) return;
    std::vector<imaging::SubjectFiles> labelled;
    for (const auto& s : *subjects) {
      if (s.labels) labelled.push_back(s);
    }
    if (labelled.empty()) {
      log->error("{}: none of its {} scans has labels; calibration needs labelled scans", data_dir, subjects->size());
      rc = 1;
      return;
    }
    models::CalibrationOptions options;
    if (!teacher.empty()) options.teacher = teacher;
    options.device = device;
    options.precision = precision;
    auto estimator = models::calibrate_quality(model, labelled, options, [&](int done, int total) {
      if (done == total || done % 10 == 0) log->info("{} of {} samples", done, total);
    });
    if (!estimator) {
      log->error("{}", estimator.error().message);
      rc = 1;
      return;
    }
    if (auto st = models::attach_estimator(model, *estimator, out); !st) {
      log->error("{}", st.error().message);
      rc = 1;
      return;
    }
    std::cout << "fitted on " << estimator->fitted_on << ": " << estimator->samples << " samples, the model's mean Dice "
              << estimator->fit_mean_dsc << ", Spearman " << estimator->fit_spearman << ", mean absolute error "
              << estimator->fit_mae << ", 90% interval +-" << 1.645 * estimator->residual_sd << "\nwrote " << out << "\n";
    if (estimator->fit_mean_dsc < 0.05) {  // every estimate would be "about 0": it tells nothing
      log->warn("{} segments almost nothing on its labelled scans here (mean Dice {:.3f}): an estimator of such a model "
                "says little; train the model (or check the labels) before relying on its estimates",
                model, estimator->fit_mean_dsc);
    }
  });

  return cli::run(app, argc, argv, rc, "fedda-agent");
}
