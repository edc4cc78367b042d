// fedda-agent's service (`run`) and its site administrator's commands: check, pending,
// approve/refuse, subjects, status.
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "agent_commands.h"
#include "fedda/common/files.h"
#include "fedda/common/log.h"
#include "fedda/site_agent/agent.h"
#include "fedda/site_agent/approvals.h"
#include "fedda/site_agent/site_status.h"

namespace fedda::site_agent::tools {
namespace {

// A site with nothing to contribute that joined anyway would look ready to the coordinator: say
// so before connecting, as `check` would. False: refused (logged).
bool has_subjects_or_may_join(const SiteConfig& config, const std::string& config_path, bool allow_no_subjects) {
  auto index = site_subject_index(config);
  if (index && !index->subjects.empty()) return true;
  const std::string why = index ? std::to_string(index->ignored.size()) + " files or folders left out" : index.error().message;
  const std::string what = "site " + config.site_id + ": no usable subject in " + data_location(config) + " (" +
                           config.data_layout + " layout; " + why + "); `fedda-agent check --config " + config_path +
                           "` lists what was found and why it was left out";
  if (!allow_no_subjects) {
    log::get("fedda-agent")->error("{}; --allow-no-subjects joins anyway", what);
    return false;
  }
  log::get("fedda-agent")->warn("{}; joining anyway (--allow-no-subjects)", what);
  return true;
}

Agent* running = nullptr;
void on_signal(int) {
  if (running) running->stop();
}

// The --config every site command takes.
void add_config_option(CLI::App* cmd, std::string& path, const std::string& what = "site config (YAML)") {
  cmd->add_option("--config", path, what)->required();
}

}  // namespace

std::optional<SiteConfig> load_config(const std::string& path, int& rc) {
  auto config = read_site_config(path);
  if (!config) {
    log::get("fedda-agent")->error("{}", config.error().message);
    rc = 2;
    return std::nullopt;
  }
  return std::move(*config);
}

void add_run(CLI::App& app, int& rc) {
  struct Args {
    std::string config;
    bool allow_no_subjects = false;
  };
  auto a = std::make_shared<Args>();
  auto* run = app.add_subcommand(
      "run",
      "Join the consortium as a long-running service: connect to the coordinator named in the site config, "
      "take part in its jobs, reconnect with backoff when it goes away. SIGTERM or SIGINT drains the running "
      "task and leaves cleanly. A subject that fails validation is skipped and reported by id. Exit code 0 "
      "after a clean stop, 1 on a configuration or data error, 3 when the drain timeout abandoned a task, 4 when the "
      "coordinator refused this agent because another agent with the same site kit was connected first.");
  add_config_option(run, a->config, "site config (YAML); see configs/site.example.yaml");
  run->add_flag("--allow-no-subjects", a->allow_no_subjects,
                "join even when the data folder holds no usable subject (the site can then only be offered jobs it "
                "has no data for); without it the agent refuses to start, as `check` would fail");
  run->callback([a, &rc]() {
    auto config = load_config(a->config, rc);
    if (!config) return;
    if (!has_subjects_or_may_join(*config, a->config, a->allow_no_subjects)) {
      rc = 1;
      return;
    }
    Agent agent(*config);
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
}

void add_check(CLI::App& app, int& rc) {
  auto config_path = std::make_shared<std::string>();
  auto* check = app.add_subcommand(
      "check",
      "Validate a site before joining: the config's settings and policy, the kit and the root it is pinned to "
      "(root_fingerprint), the device, the cache folder, and every scan (readable, 3-D, finite, FLAIR/T1/label "
      "geometry agreeing, labels in {0,1,2}). Lists each subject found (in the data_layout site.yaml names: wmh, "
      "bids or datalist), each file or folder left out and why, and each problem; exit code 0 when there is no "
      "problem, 1 otherwise.");
  add_config_option(check, *config_path);
  check->callback([config_path, &rc]() {
    auto config = load_config(*config_path, rc);
    if (!config) return;
    const auto report = check_site(*config);
    std::cout << "site " << config->site_id << ": coordinator " << config->coordinator << ", data "
              << data_location(*config) << " (" << config->data_layout << " layout), device " << config->device << "\n";
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
}

void add_pending(CLI::App& app, int& rc) {
  struct Args {
    std::string config;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  auto* pending = app.add_subcommand(
      "pending",
      "Offers waiting for this site's approval (policy approval: manual): what each job is and exactly what it will "
      "send from this site (tensors, shapes, bytes per round; metrics when it evaluates here).");
  add_config_option(pending, a->config);
  pending->add_flag("--json", a->json, "one JSON document");
  pending->callback([a, &rc]() {
    auto config = load_config(a->config, rc);
    if (!config) return;
    const auto offers = list_pending(config->cache_dir);
    if (a->json) {
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
      std::cout << "  fedda-agent approve " << o.job << " --config " << a->config << "   (or refuse)\n";
    }
  });
}

void add_decisions(CLI::App& app, int& rc) {
  for (const bool approve : {true, false}) {
    struct Args {
      std::string config, job;
    };
    auto a = std::make_shared<Args>();
    auto* cmd = app.add_subcommand(approve ? "approve" : "refuse",
                                   approve ? "Approve an offer that waits (fedda-agent pending); the running agent "
                                             "prepares the job within a second."
                                           : "Refuse an offer that waits; the coordinator is told by code.");
    cmd->add_option("job", a->job, "job id")->required();
    add_config_option(cmd, a->config);
    cmd->callback([a, approve, &rc]() {
      auto config = load_config(a->config, rc);
      if (!config) return;
      if (auto st = decide(config->cache_dir, a->job, approve); !st) {
        log::get("fedda-agent")->error("{}", st.error().message);
        rc = 1;
        return;
      }
      std::cout << "job " << a->job << ": " << (approve ? "approved" : "refused") << "\n";
    });
  }
}

void add_subjects(CLI::App& app, int& rc) {
  struct Args {
    std::string config;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  auto* subjects = app.add_subcommand(
      "subjects", "This site's subjects and their pseudonyms: only pseudonyms leave the site (in evaluations, skipped "
                  "subjects, and the subjects an on-the-fly job names). Keep this map at the site.");
  add_config_option(subjects, a->config);
  subjects->add_flag("--json", a->json, "one JSON object: pseudonym -> subject");
  subjects->callback([a, &rc]() {
    auto config = load_config(a->config, rc);
    if (!config) return;
    auto key = pseudonym_key(*config);
    auto list = site_subjects(*config);
    if (!key || !list) {
      log::get("fedda-agent")->error("{}", key ? list.error().message : key.error().message);
      rc = 1;
      return;
    }
    nlohmann::json map = nlohmann::json::object();
    for (const auto& s : *list) map[pseudonym(*key, s.subject)] = s.subject;
    if (a->json) {
      std::cout << map.dump(2) << "\n";
      return;
    }
    std::cout << "PSEUDONYM           SUBJECT\n";
    for (const auto& s : *list) std::cout << pseudonym(*key, s.subject) << "  " << s.subject << "\n";
  });
}

void add_status(CLI::App& app, int& rc) {
  struct Args {
    std::string config;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  auto* status = app.add_subcommand(
      "status", "What this site has sent, per job and day (messages, bytes, updates carrying tensors; from the audit "
                "log), what waits for approval, and the connection to the coordinator.");
  add_config_option(status, a->config);
  status->add_flag("--json", a->json, "one JSON document");
  status->callback([a, &rc]() {
    auto config = load_config(a->config, rc);
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
    const auto sent = summarize_audit(config->cache_dir / "audit.jsonl");
    const auto offers = list_pending(config->cache_dir);
    if (a->json) {
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
}

}  // namespace fedda::site_agent::tools
