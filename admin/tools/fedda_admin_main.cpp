// fedda-admin: a consortium's keys and kits (provision, add-site, add-operator, verify-kit), and
// the operator's commands to a running coordinator (submit, jobs, status, abort, resume, clone,
// delete, download, sites, logs, admit, revoke) over its admin endpoint with an operator kit; and the privacy
// accountant on its own (privacy).
#include <algorithm>
#include <cmath>
#include <ctime>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "fedda/admin/client.h"
#include "fedda/common/cli.h"
#include "fedda/common/config.h"
#include "fedda/common/files.h"
#include "fedda/common/kit.h"
#include "fedda/common/log.h"
#include "fedda/common/privacy.h"
#include "fedda/common/version.h"

using namespace fedda;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string text_of(const json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

std::string when(const json& ms) {
  if (!ms.is_number()) return "-";
  const std::time_t t = static_cast<std::time_t>(ms.get<std::int64_t>() / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &tm);
  return text;
}

std::string duration(const json& seconds) {
  if (!seconds.is_number()) return "-";
  const long s = std::lround(seconds.get<double>());
  std::ostringstream out;
  if (s >= 3600) out << s / 3600 << "h" << std::setw(2) << std::setfill('0') << (s % 3600) / 60 << "m";
  else if (s >= 60) out << s / 60 << "m" << std::setw(2) << std::setfill('0') << s % 60 << "s";
  else out << s << "s";
  return out.str();
}

// Rows padded to their columns' widths.
void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()));
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  }
}

// The open round's sites: "round 4: answered amsterdam, utrecht; waiting for singapore"; "" when none is open.
std::string round_sites_text(const json& r) {
  if (!r.is_object()) return "";
  const auto names = [](const json& list) {
    std::string out;
    for (const auto& s : list) out += (out.empty() ? "" : ", ") + text_of(s);
    return out;
  };
  const auto answered = names(r.value("answered", json::array())), waiting = names(r.value("waiting", json::array()));
  return (r.value("evaluation", false) ? std::string("evaluation") : "round " + std::to_string(r.value("round", 0))) +
         ": answered " + (answered.empty() ? "none yet" : answered) + (waiting.empty() ? "" : "; waiting for " + waiting);
}

void print_jobs(const json& jobs) {
  if (jobs.empty()) {
    std::cout << "no jobs\n";
    return;
  }
  std::vector<std::vector<std::string>> rows = {{"JOB", "TYPE", "STATE", "ROUND", "ETA", "SUBMITTED", "BY", "NOW"}};
  for (const auto& j : jobs) {
    std::string now = j.value("activity", "");
    if (now.empty()) now = j.value("error", "");
    rows.push_back({j.at("id"), j.at("type"), j.at("state"),
                    std::to_string(j.at("round").get<int>()) + "/" + std::to_string(j.at("rounds").get<int>()),
                    duration(j.at("eta_s")), when(j.at("submitted_ms")), j.value("submitted_by", ""), now});
  }
  print_table(rows);
}

void print_status(const json& j) {
  std::cout << "job " << text_of(j.at("id")) << " (" << text_of(j.at("type")) << ", method " << text_of(j.at("method"))
            << "): " << text_of(j.at("state")) << ", round " << j.at("round") << " of " << j.at("rounds") << "\n";
  std::cout << "  sites " << j.at("sites").dump() << (j.value("source", "").empty() ? "" : ", source " + j.value("source", ""))
            << (j.value("teacher", "").empty() ? "" : ", teacher " + j.value("teacher", "")) << "\n";
  if (j.value("max_sample_share", 0.0) > 0) {
    std::cout << "  no site above " << std::lround(100 * j.value("max_sample_share", 0.0)) << "% of a round's samples (max_sample_share)\n";
  }
  std::cout << "  submitted " << when(j.at("submitted_ms")) << " by " << j.value("submitted_by", "") << ", started "
            << when(j.at("started_ms")) << ", ended " << when(j.at("ended_ms")) << "\n";
  if (j.contains("history") && j.at("history").size() > 1) {  // more than "submitted": what happened to it
    std::string steps;
    for (const auto& e : j.at("history")) {
      steps += (steps.empty() ? "" : ", ") + e.value("what", "") + " " + when(e.at("ms")) +
               (e.value("by", "").empty() ? "" : " by " + e.value("by", ""));
    }
    std::cout << "  history: " << steps << "\n";
  }
  if (!j.value("activity", "").empty()) std::cout << "  now: " << j.value("activity", "") << ", about " << duration(j.at("eta_s")) << " left\n";
  if (const auto sites = round_sites_text(j.value("round_sites", json())); !sites.empty()) std::cout << "  " << sites << "\n";
  if (!j.value("error", "").empty()) std::cout << "  " << j.value("error", "") << "\n";
  const auto& rounds = j.at("rounds_done");
  if (!rounds.empty()) {
    std::vector<std::vector<std::string>> rows = {
        {"ROUND", "SECONDS", "LR", "SITES", "SAMPLES", "MEAN LOSS", "FEDERATION", "MISSING"}};
    for (const auto& r : rounds) {
      double loss = 0, samples = 0;
      std::vector<std::string> names;
      for (const auto& s : r.at("sites")) {
        loss += s.at("loss").get<double>() * s.at("samples").get<double>();
        samples += s.at("samples").get<double>();
        names.push_back(s.at("site").get<std::string>());
      }
      std::sort(names.begin(), names.end());  // listed in arrival order; shown by name
      std::string sites;
      for (const auto& n : names) sites += (sites.empty() ? "" : ",") + n;
      std::ostringstream l, sec, lr, fed;
      l << std::fixed << std::setprecision(4) << (samples > 0 ? loss / samples : 0.0);
      sec << std::fixed << std::setprecision(1) << r.at("seconds").get<double>();
      lr << r.at("learning_rate").get<double>();
      if (r.contains("federation")) {
        fed << std::fixed << std::setprecision(0) << 1000 * r["federation"].value("overhead_s", 0.0) << " ms ("
            << std::setprecision(1) << 100 * r["federation"].value("overhead_share", 0.0) << "%)";
      }
      std::string missing;
      for (const auto& m : r.at("missing")) missing += (missing.empty() ? "" : "; ") + m.get<std::string>();
      rows.push_back({std::to_string(r.at("round").get<int>()), sec.str(), lr.str(), sites,
                      std::to_string(static_cast<long>(samples)), l.str(), fed.str(), missing.empty() ? "-" : missing});
    }
    print_table(rows);
    // Differential privacy: each site's epsilon so far, as its latest update said.
    std::map<std::string, std::pair<double, double>> spent;  // site -> (epsilon, noise multiplier)
    for (const auto& r : rounds) {
      for (const auto& s : r.at("sites")) {
        if (s.contains("epsilon")) spent[s.at("site").get<std::string>()] = {s.at("epsilon").get<double>(), s.value("noise_multiplier", 0.0)};
      }
    }
    if (!spent.empty()) {
      std::ostringstream line;
      line << std::fixed << std::setprecision(3);
      for (const auto& [site, e] : spent) {
        line << (line.tellp() > 0 ? ", " : "") << site << " " << e.first << " (noise " << e.second << ")";
      }
      std::cout << "  differential privacy, epsilon spent per site so far: " << line.str() << "\n";
    }
  }
  if (j.contains("summary") && j["summary"].is_object() && j["summary"].contains("mean_dsc")) {
    for (const auto& [site, dsc] : j["summary"]["mean_dsc"].items()) {
      std::cout << "  mean Dice at " << site << ": " << std::fixed << std::setprecision(3) << dsc.get<double>() << "\n";
    }
  }
  if (j.contains("summary") && j["summary"].is_object() && j["summary"].contains("evaluation_missing")) {
    for (const auto& m : j["summary"]["evaluation_missing"]) std::cout << "  not evaluated at " << text_of(m) << "\n";
  }
}

// Bytes in GiB with `decimals` decimals.
std::string gib(double bytes, int decimals) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(decimals) << bytes / double(1ull << 30) << " GiB";
  return out.str();
}

// A site's machine as its agent reported it: "16 cores, 62.8 GiB, 410 GiB free, bfloat16, GPU
// NVIDIA H200"; "-" before its first hello or from an agent too old to say.
std::string resources_text(const json& r) {
  if (!r.is_object()) return "-";
  std::vector<std::string> parts;
  if (r.value("cores", json()).is_number()) parts.push_back(std::to_string(r["cores"].get<long long>()) + " cores");
  if (r.value("memory_bytes", json()).is_number()) parts.push_back(gib(r["memory_bytes"].get<double>(), 1));
  if (r.value("cache_free_bytes", json()).is_number()) parts.push_back(gib(r["cache_free_bytes"].get<double>(), 0) + " free");
  if (r.value("precision", json()).is_string()) parts.push_back(r["precision"].get<std::string>());
  for (const auto& gpu : r.value("gpus", json::array())) {
    if (gpu.is_string()) parts.push_back("GPU " + gpu.get<std::string>());
  }
  std::string text;
  for (const auto& p : parts) text += (text.empty() ? "" : ", ") + p;
  return text.empty() ? "-" : text;
}

void print_sites(const json& sites) {
  std::vector<std::vector<std::string>> rows = {
      {"SITE", "ONLINE", "LAST SEEN", "AGENT", "DEVICE", "THREADS", "RESOURCES", "JOBS"}};
  for (const auto& s : sites) {
    std::string jobs;
    for (const auto& [job, p] : s.at("jobs").items()) {
      std::string state = p.at("state");
      if (state == "ready") state += " " + std::to_string(p.at("subjects").get<int>()) + "+" +
                                     std::to_string(p.at("evaluation_subjects").get<int>()) + " subjects";
      if (state == "refused") {
        state += " (" + p.value("code", "") + (p.value("rule", "").empty() ? "" : ": " + p.value("rule", "")) + "): " +
                 p.value("reason", "");
      }
      if (p.value("refused_updates", 0) > 0) state += ", " + std::to_string(p.value("refused_updates", 0)) + " updates refused";
      jobs += (jobs.empty() ? "" : "; ") + job + " " + state;
    }
    rows.push_back({s.at("site"), s.at("revoked").get<bool>() ? "revoked" : s.at("online").get<bool>() ? "yes" : "no",
                    when(s.at("last_seen_ms")), s.value("agent_version", "-"), s.value("device", "-"),
                    std::to_string(s.value("threads", 0)), resources_text(s.value("resources", json())),
                    jobs.empty() ? "-" : jobs});
  }
  print_table(rows);
}

// `privacy`: the accountant on its own, for choosing a job's noise before it is written.
void add_privacy(CLI::App& app, const bool& as_json, int& rc) {
  struct Options {
    double noise = 0, target = 0, q = 0, delta = 1e-5;
    long long steps = 0;
  };
  auto o = std::make_shared<Options>();
  auto* privacy = app.add_subcommand(
      "privacy",
      "What DP-SGD with the patient as the unit spends: each step samples every patient with probability Q, clips "
      "each sampled patient's gradient to C and adds Gaussian noise of S * C. Prints epsilon at delta D for noise S "
      "over N steps (Rényi accountant of the subsampled Gaussian mechanism, Opacus's orders), or with "
      "--target-epsilon the smallest S that stays within it. Nothing is sent anywhere.");
  auto* noise = privacy->add_option("--noise-multiplier", o->noise, "S: the noise's standard deviation over the clip norm");
  auto* target = privacy->add_option("--target-epsilon", o->target, "E: print the noise multiplier that spends at most E");
  noise->excludes(target);
  privacy->add_option("--sample-rate", o->q, "Q: a patient's chance of being in one step's batch (0 < Q <= 1)")->required();
  privacy->add_option("--steps", o->steps, "N: the steps that touch the site's data")->required();
  privacy->add_option("--delta", o->delta, "D: the chance the guarantee fails; well under 1 / patients")->capture_default_str();
  privacy->callback([o, noise, target, &as_json, &rc] {
    const auto fail = [&rc](const std::string& message) {
      std::cerr << "fedda-admin privacy: " << message << "\n";
      rc = 1;
    };
    if (noise->count() == 0 && target->count() == 0) {
      return fail("give --noise-multiplier S (to get epsilon) or --target-epsilon E (to get S)");
    }
    double sigma = o->noise;
    if (target->count() > 0) {
      auto found = privacy::noise_for_epsilon(o->target, o->q, o->steps, o->delta);
      if (!found) return fail(found.error().message);
      sigma = *found;
    }
    auto spent = privacy::epsilon({sigma, o->q, o->steps}, o->delta);
    if (!spent) return fail(spent.error().message);
    if (as_json) {
      std::cout << json{{"epsilon", spent->epsilon}, {"delta", o->delta}, {"noise_multiplier", sigma},
                        {"sample_rate", o->q}, {"steps", o->steps}, {"order", spent->order}}.dump(2) << "\n";
      return;
    }
    std::ostringstream line;
    line << std::setprecision(6);
    if (target->count() > 0) line << "noise multiplier " << sigma << " reaches ";
    line << "epsilon " << spent->epsilon << " at delta " << o->delta << " (noise multiplier " << sigma
         << ", sample rate " << o->q << ", " << o->steps << " steps; Rényi order " << spent->order << ")";
    std::cout << line.str() << "\n";
  });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fedda-admin: a fedda consortium's kits, and the operator's commands to its coordinator.\n"
               "Kits: provision, add-site, add-operator, verify-kit. The privacy accountant: privacy. Keep OUT/root/ offline: whoever holds root.key can "
               "admit sites. Give each site only its OUT/sites/<site>/ folder, each operator only OUT/operators/<name>/, "
               "the coordinator only OUT/coordinator/.\n"
               "Operator commands (with --kit OPERATOR_KIT, or $FEDDA_OPERATOR_KIT): submit, jobs, status, abort, resume, "
               "clone, delete, download, sites, logs, admit, revoke. Each prints for people, or one JSON document with --json; exit code 0 on "
               "success, 1 with a message naming what failed."};
  app.require_subcommand(1);
  app.fallthrough();
  app.set_version_flag("--version", std::string("fedda-admin ") + kVersion);
  std::string log_level = "info";
  cli::add_log_level(app, log_level);
  int rc = 0;
  auto log = log::get("fedda-admin");

  // ---- kits ---------------------------------------------------------------------------------
  kit::ProvisionOptions p;
  std::string out;
  auto* provision = app.add_subcommand(
      "provision",
      "Create a consortium: Ed25519 root key, the coordinator's CurveZMQ key pair and model-signing key, one kit per "
      "site (its CurveZMQ key pair, the coordinator's public keys, the root's public key, a manifest signed by the "
      "root, a key for encryption at rest) and one per operator. Secret files are created 0600.");
  provision->add_option("--consortium", p.consortium, "consortium name")->required();
  provision->add_option("--coordinator", p.coordinator, "endpoint sites connect to, tcp://HOST:PORT")->required();
  provision->add_option("--admin-endpoint", p.admin, "endpoint operators connect to; default: the same host, port + 1");
  provision->add_option("--sites", p.sites, "site ids, comma-separated")->required()->delimiter(',');
  provision->add_option("--operators", p.operators,
                        "operator names, comma-separated, each NAME or NAME:ROLE; ROLE lead (everything, the default), "
                        "member (submit and clone, abort and resume its own jobs) or viewer (read only)")
      ->delimiter(',');
  provision->add_option("--out", out, "output folder")->required();
  provision->callback([&]() {
    p.out = out;
    if (auto st = kit::provision(p); !st) {
      log->error("{}", st.error().message);
      rc = 1;
      return;
    }
    log->info("consortium {}: root in {}/root (keep offline), coordinator kit in {}/coordinator, {} site kit(s) in {}/sites, "
              "{} operator kit(s) in {}/operators",
              p.consortium, out, out, p.sites.size(), out, p.operators.size(), out);
    auto fingerprint = kit::root_fingerprint(fs::path(out) / "root" / "root.pub");
    if (fingerprint) {
      std::cout << "root fingerprint: " << *fingerprint << "\n"
                << "(send it to each site by another channel than its kit; the site pins it in site.yaml as "
                   "root_fingerprint)\n";
    }
  });

  std::string id;
  auto* add = app.add_subcommand(
      "add-site", "Add one site's kit to an existing consortium folder; other kits are unchanged. A running coordinator "
                  "admits it with `fedda-admin admit SITE` (no restart).");
  add->add_option("--consortium-dir", out, "the folder `provision` wrote")->required()->check(CLI::ExistingDirectory);
  add->add_option("--site", id, "the new site's id")->required();
  add->callback([&]() {
    if (auto st = kit::add_site(out, id); !st) {
      log->error("{}", st.error().message);
      rc = 1;
      return;
    }
    log->info("site {}: kit in {}/sites/{}; admit it with `fedda-admin admit {}`", id, out, id, id);
  });

  auto* add_operator = app.add_subcommand(
      "add-operator", "Add one operator's kit to an existing consortium folder. The coordinator admits operators it "
                      "has a manifest of in its kit's operators/ folder when it starts.");
  add_operator->add_option("--consortium-dir", out, "the folder `provision` wrote")->required()->check(CLI::ExistingDirectory);
  add_operator->add_option("--operator", id, "the operator's name")->required();
  std::string operator_role = "lead";
  add_operator->add_option("--role", operator_role,
                           "lead (everything: admit, revoke, delete), member (submit and clone; abort and resume its "
                           "own jobs) or viewer (read only); signed in the operator's manifest")
      ->capture_default_str();
  add_operator->callback([&]() {
    if (auto st = kit::add_operator(out, id, operator_role); !st) {
      log->error("{}", st.error().message);
      rc = 1;
      return;
    }
    log->info("operator {} ({}): kit in {}/operators/{}", id, operator_role, out, id);
  });

  std::string dir;
  auto* verify = app.add_subcommand("verify-kit", "Check a site or operator kit: manifest signed by the kit's root, "
                                                  "secrets 0600, key pair matching the manifest; prints the root's "
                                                  "fingerprint to compare with the consortium's. Exit code 0 when sound.");
  verify->add_option("dir", dir, "a site or operator kit folder")->required();
  verify->callback([&]() {
    if (fs::exists(fs::path(dir) / "operator.curve.secret")) {
      auto k = kit::load_operator_kit(dir);
      if (!k) {
        std::cout << "kit refused: " << k.error().message << "\n";
        rc = 1;
        return;
      }
      std::cout << "kit OK: operator " << k->name << " of consortium " << k->consortium << ", admin endpoint "
                << k->admin_endpoint << ", operator key " << k->operator_curve_public << "\n"
                << "root fingerprint: " << k->root_fingerprint << "\n";
      return;
    }
    auto k = kit::load_site_kit(dir);
    if (!k) {
      std::cout << "kit refused: " << k.error().message << "\n";
      rc = 1;
      return;
    }
    std::cout << "kit OK: site " << k->site_id << " of consortium " << k->consortium << ", coordinator "
              << k->coordinator_endpoint << ", site key " << k->site_curve_public << "\n"
              << "root fingerprint: " << k->root_fingerprint << "\n"
              << "(the kit is signed by the root it carries; compare this fingerprint with the one the consortium "
                 "sent you separately before trusting it)\n";
  });

  // ---- operator commands --------------------------------------------------------------------
  admin::ClientOptions co;
  std::string operator_kit;
  bool as_json = false;
  int timeout_s = 30;
  app.add_option("--kit", operator_kit, "operator kit folder (fedda-admin provision --operators)")
      ->envname("FEDDA_OPERATOR_KIT");
  app.add_option("--coordinator", co.endpoint, "the coordinator's admin endpoint; default: the one in the kit");
  app.add_option("--timeout", timeout_s, "seconds to wait for the coordinator's answer")->capture_default_str();
  app.add_flag("--json", as_json, "print the coordinator's answer as one JSON document");
  add_privacy(app, as_json, rc);

  // Sends one request; `keep` (if any) acts on the answer, then `show` prints it for people (or
  // it is printed as JSON).
  // The client of the kit and endpoint given; null (the error logged, rc 1) when it cannot be made.
  const auto connect = [&]() -> std::unique_ptr<admin::Client> {
    co.kit = operator_kit;
    co.timeout = std::chrono::seconds(timeout_s);
    auto client = admin::Client::connect(co);
    if (!client) {
      log->error("{}", client.error().message);
      rc = 1;
      return nullptr;
    }
    return std::move(*client);
  };
  const auto command = [&](const std::function<Result<protocol::AdminReply>(admin::Client&)>& call,
                           const std::function<void(const json&, const protocol::AdminReply&)>& show,
                           const std::function<Status(const protocol::AdminReply&)>& keep = nullptr) {
    auto client = connect();
    if (!client) return;
    auto reply = call(*client);
    if (!reply) {
      log->error("{}", reply.error().message);
      rc = 1;
      return;
    }
    if (keep) {
      if (auto st = keep(*reply); !st) {
        log->error("{}", st.error().message);
        rc = 1;
        return;
      }
    }
    const auto answer = json::parse(reply->json, nullptr, false);
    if (as_json) {
      std::cout << answer.dump(2) << "\n";
    } else {
      show(answer, *reply);
    }
  };
  const auto simple = [](const std::string& name, const std::string& target) {
    protocol::AdminRequest r;
    r.command = name;
    r.target = target;
    return r;
  };

  std::string job_file, target, download_dir, manifest;
  auto* submit = app.add_subcommand("submit", "Queue a job file (YAML, see configs/jobs/). The coordinator validates it "
                                              "and names the key at fault; a teacher model file it names is sent with it. "
                                              "Prints the job id.");
  submit->add_option("job", job_file, "job file")->required()->check(CLI::ExistingFile);
  submit->callback([&] {
    command([&](admin::Client& c) { return c.submit(job_file); },
            [](const json& a, const protocol::AdminReply&) { std::cout << "queued job " << text_of(a.at("id")) << "\n"; });
  });

  // Asks `request` again every `every_s` seconds on one connection and shows each answer that
  // differs from the last (a terminal: redrawn in place; a pipe or a file: appended under the
  // time; --json: one compact document per line), until `ended` gives an exit code. Ctrl-C leaves.
  double every_s = 2;
  const auto follow = [&](const protocol::AdminRequest& request, const std::function<void(const json&)>& show,
                          const std::function<std::optional<int>(const json&)>& ended) {
    auto client = connect();
    if (!client) return;
    const bool terminal = isatty(STDOUT_FILENO) == 1;
    std::string last;
    for (;;) {
      auto reply = client->call(request);
      if (!reply) {
        log->error("{}", reply.error().message);
        rc = 1;
        return;
      }
      const auto answer = json::parse(reply->json, nullptr, false);
      const auto now = answer.dump(-1, ' ', false, json::error_handler_t::replace);
      if (now != last) {
        if (as_json) {
          std::cout << now << "\n";
        } else {
          if (terminal) std::cout << "\033[H\033[2J";
          std::cout << "--- " << when(json(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch()).count()))
                    << " (every " << every_s << " s; Ctrl-C leaves) ---\n";
          show(answer);
        }
        std::cout.flush();
        last = now;
      }
      if (const auto code = ended(answer)) {
        rc = *code;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<long>(every_s * 1000)));
    }
  };
  const auto is_terminal_state = [](const std::string& state) {
    return state == "finished" || state == "failed" || state == "aborted";
  };

  bool watch = false;
  auto* jobs = app.add_subcommand("jobs", "List the jobs: queued, running (round k of n, time left from the rounds' "
                                          "times), finished, failed (why), aborted.");
  jobs->add_flag("--watch", watch,
                 "keep listing (every --every seconds, when something changed) until no job is queued or running; "
                 "exit code 0 then. With --json, one document per line");
  jobs->add_option("--every", every_s, "seconds between two looks, with --watch")->capture_default_str()->check(CLI::Range(0.2, 3600.0));
  jobs->callback([&] {
    if (watch) {
      return follow(simple("jobs", ""), print_jobs, [&](const json& a) -> std::optional<int> {
        for (const auto& j : a) {
          if (!is_terminal_state(j.value("state", ""))) return std::nullopt;
        }
        return 0;
      });
    }
    command([&](admin::Client& c) { return c.call(simple("jobs", "")); },
            [](const json& a, const protocol::AdminReply&) { print_jobs(a); });
  });

  bool follow_job = false;
  auto* status = app.add_subcommand("status", "One job: its state and each finished round (sites, samples, mean loss, "
                                              "seconds, the federation's share, who was missing and why).");
  status->add_option("job", target, "job id")->required();
  status->add_flag("--follow", follow_job,
                   "keep showing the job (every --every seconds, when something changed) until it ends: exit code 0 "
                   "when it finished, 1 when it failed or was aborted. With --json, one document per line");
  status->add_option("--every", every_s, "seconds between two looks, with --follow")->capture_default_str()->check(CLI::Range(0.2, 3600.0));
  status->callback([&] {
    if (follow_job) {
      return follow(simple("status", target), print_status, [&](const json& a) -> std::optional<int> {
        const auto state = a.value("state", "");
        if (!is_terminal_state(state)) return std::nullopt;
        return state == "finished" ? 0 : 1;
      });
    }
    command([&](admin::Client& c) { return c.call(simple("status", target)); },
            [](const json& a, const protocol::AdminReply&) { print_status(a); });
  });

  auto* abort = app.add_subcommand("abort", "Stop a job after its current round (a queued job at once). Its state is "
                                            "kept: `resume` queues it again and it continues from its last round.");
  abort->add_option("job", target, "job id")->required();
  abort->callback([&] {
    command([&](admin::Client& c) { return c.call(simple("abort", target)); },
            [&](const json& a, const protocol::AdminReply&) {
              std::cout << "job " << target << ": " << (a.value("state", "") == "aborted" ? "aborted" : "stops after the current round") << "\n";
            });
  });

  auto* resume = app.add_subcommand("resume", "Queue an aborted or failed job again; it continues after its last "
                                              "finished round.");
  resume->add_option("job", target, "job id")->required();
  resume->callback([&] {
    command([&](admin::Client& c) { return c.call(simple("resume", target)); },
            [&](const json& a, const protocol::AdminReply&) { std::cout << "job " << target << ": " << text_of(a.at("state")) << "\n"; });
  });

  std::string clone_id;
  std::vector<std::string> settings;
  auto* clone = app.add_subcommand(
      "clone", "Queue a copy of a job under a new id, with changes: its job file as submitted, each --set laid over "
               "it (a dotted key reaches into a mapping: --set dp.target_epsilon=3, --set recipe.preset=nnunet), "
               "validated again by the coordinator as a submitted file is. It keeps the original's teacher.");
  clone->add_option("job", target, "the job to copy")->required();
  clone->add_option("--id", clone_id, "the new job's id")->required();
  clone->add_option("--set", settings, "KEY=VALUE, a change to the job file (repeat for more; VALUE is YAML)");
  clone->callback([&] {
    std::vector<std::string> changes = {"id=" + clone_id};
    changes.insert(changes.end(), settings.begin(), settings.end());
    auto yaml = config::yaml_of_settings(changes);
    if (!yaml) {
      log->error("--set {}", yaml.error().message);
      rc = 1;
      return;
    }
    auto request = simple("clone", target);
    request.job_yaml = *yaml;
    command([&](admin::Client& c) { return c.call(request); },
            [&](const json& a, const protocol::AdminReply&) {
              std::cout << "queued job " << text_of(a.at("id")) << " (a clone of " << target << "): "
                        << text_of(a.at("state")) << "\n";
            });
  });

  auto* remove = app.add_subcommand(
      "delete", "Take a finished, failed or aborted job out of the queue. Nothing is destroyed: its folder moves to "
                "the coordinator's STATE/deleted/ and the deletion is in the audit log; its id can be used again.");
  remove->add_option("job", target, "job id")->required();
  remove->callback([&] {
    command([&](admin::Client& c) { return c.call(simple("delete", target)); },
            [&](const json& a, const protocol::AdminReply&) {
              std::cout << "job " << target << " deleted; its files are kept in " << text_of(a.at("archived_in")) << "\n";
            });
  });

  auto* download = app.add_subcommand("download", "Fetch a job's files over the admin channel: model.pt, results.csv, "
                                                  "rounds.jsonl, summary.json, state.json, job.yaml (those that exist).");
  download->add_option("job", target, "job id")->required();
  download->add_option("--out", download_dir, "folder to write them to")->required();
  download->callback([&] {
    command([&](admin::Client& c) { return c.call(simple("download", target)); },
            [&](const json&, const protocol::AdminReply& reply) {
              for (const auto& f : reply.files) {
                std::cout << "wrote " << (fs::path(download_dir) / f.name).string() << " (" << f.bytes.size() << " bytes)\n";
              }
            },
            [&](const protocol::AdminReply& reply) -> Status {
              for (const auto& f : reply.files) {
                if (f.name.empty() || f.name.find('/') != std::string::npos || f.name[0] == '.') {
                  return make_error("the coordinator sent a file named '" + f.name + "'; refused");
                }
                if (auto st = files::write_atomically(fs::path(download_dir) / f.name, f.bytes); !st) return st;
              }
              return Status::success();
            });
  });

  auto* sites = app.add_subcommand("sites", "The consortium's sites: online or not, last seen, agent version, device "
                                            "and threads, the machine's resources as its agent reports them (cores, "
                                            "memory, free space in its cache folder, precision, GPUs), and per job its state (ready with its subjects, preparing, "
                                            "refused and why).");
  sites->callback([&] {
    command([&](admin::Client& c) { return c.call(simple("sites", "")); },
            [](const json& a, const protocol::AdminReply&) { print_sites(a); });
  });

  std::string logs_job;
  int logs_tail = 100;
  auto* logs = app.add_subcommand(
      "logs", "A site's recent log lines, as far as the site allows: its policy share_logs decides (none, the "
              "default: nothing; errors: warnings and errors; job: also every line naming --job), and what leaves is "
              "redacted as failure texts are (no local paths, no subject ids). The site's audit log records what it "
              "sent. The site's agent must be running; it answers within 20 s.");
  logs->add_option("site", target, "site id")->required();
  logs->add_option("--job", logs_job, "only the lines naming this job");
  logs->add_option("--tail", logs_tail, "at most this many lines, the latest")->capture_default_str()->check(CLI::Range(1, 1000));
  logs->callback([&] {
    auto request = simple("logs", target);
    request.job_yaml = json{{"job", logs_job}, {"tail", logs_tail}}.dump();
    command([&](admin::Client& c) { return c.call(request); },
            [](const json& a, const protocol::AdminReply&) {
              const auto& lines = a.at("lines");
              std::cout << "site " << text_of(a.at("site")) << " (share_logs: " << text_of(a.at("policy")) << "): "
                        << lines.size() << (lines.size() == 1 ? " line" : " lines") << (text_of(a.at("job")).empty() ? "" : " naming job " + text_of(a.at("job")))
                        << "\n";
              for (const auto& line : lines) std::cout << text_of(line) << "\n";
            });
  });

  auto* admit = app.add_subcommand("admit", "Admit a site without restarting the coordinator: a kit made with add-site "
                                            "(its manifest in the coordinator's kit folder, or sent with --manifest), or "
                                            "a revoked site again.");
  admit->add_option("site", target, "site id (or a revoked operator's name)")->required();
  admit->add_option("--manifest", manifest, "the site kit's manifest.json (manifest.sig beside it is sent too)")
      ->check(CLI::ExistingFile);
  admit->callback([&] {
    command(
        [&](admin::Client& c) -> Result<protocol::AdminReply> {
          auto r = simple("admit", target);
          if (!manifest.empty()) {
            auto text = files::read_all(manifest);
            if (!text) return text.error();
            auto sig = files::read_all(fs::path(manifest).replace_extension(".sig"));
            if (!sig) return sig.error();
            r.files = {{"manifest.json", *text}, {"manifest.sig", *sig}};
          }
          return c.call(r);
        },
        [&](const json&, const protocol::AdminReply&) { std::cout << "site " << target << " admitted\n"; });
  });

  auto* revoke = app.add_subcommand("revoke", "Revoke a site: it is disconnected at once and its key refused from then "
                                              "on (until admitted again). Or revoke another operator: its key is refused "
                                              "from its next command (until admitted again; an operator cannot revoke "
                                              "itself).");
  revoke->add_option("site", target, "site id (or another operator's name)")->required();
  revoke->callback([&] {
    command([&](admin::Client& c) { return c.call(simple("revoke", target)); },
            [&](const json&, const protocol::AdminReply&) { std::cout << "site " << target << " revoked\n"; });
  });
  return cli::run(app, argc, argv, rc, "fedda-admin");
}
