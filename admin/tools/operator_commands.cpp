// fedda-admin's commands to a running coordinator, over its admin endpoint with an operator kit:
// jobs (submit, jobs, status, abort, resume, clone, delete, download) and sites (sites, logs,
// admit, revoke).
#include <chrono>
#include <iostream>
#include <thread>

#include <unistd.h>

#include "admin_commands.h"
#include "answers.h"
#include "fedda/common/config.h"
#include "fedda/common/files.h"
#include "fedda/common/log.h"

namespace fedda::admin::tools {
namespace fs = std::filesystem;

int exit_code(const Error& error) {
  switch (error.kind) {
    case ErrorKind::not_found: return kExitNotFound;
    case ErrorKind::refused: return kExitRefused;
    default: return 1;
  }
}

Operator::Operator(CLI::App& app, int& rc) : rc_(rc) {
  app.add_option("--kit", kit_, "operator kit folder (fedda-admin provision --operators)")->envname("FEDDA_OPERATOR_KIT");
  app.add_option("--coordinator", options_.endpoint, "the coordinator's admin endpoint; default: the one in the kit");
  app.add_option("--timeout", timeout_s_, "seconds to wait for the coordinator's answer")->capture_default_str();
  app.add_flag("--json", as_json_, "print the coordinator's answer as one JSON document");
}

std::unique_ptr<admin::Client> Operator::connect() {
  options_.kit = kit_;
  options_.timeout = std::chrono::seconds(timeout_s_);
  auto client = admin::Client::connect(options_);
  if (!client) {
    log::get("fedda-admin")->error("{}", client.error().message);
    rc_ = 1;
    return nullptr;
  }
  return std::move(*client);
}

void Operator::fail(const Error& error) {
  log::get("fedda-admin")->error("{}", error.message);
  if (as_json_) {
    std::cout << json{{"ok", false}, {"error", error.message}, {"kind", error_kind_name(error.kind)}}.dump(
                     2, ' ', false, json::error_handler_t::replace)
              << "\n";
  }
  rc_ = exit_code(error);
}

void Operator::command(const Call& call, const Show& show, const std::function<Status(const protocol::AdminReply&)>& keep) {
  auto client = connect();
  if (!client) return;
  auto reply = call(*client);
  if (!reply) return fail(reply.error());
  if (keep) {
    if (auto st = keep(*reply); !st) return fail(st.error());  // under --json as JSON, as the call's own errors
  }
  const auto answer = json::parse(reply->json, nullptr, false);
  if (as_json_) {
    std::cout << answer.dump(2) << "\n";
  } else {
    show(answer, *reply);
  }
}

void Operator::follow(const protocol::AdminRequest& request, const std::function<void(const json&)>& show,
                      const std::function<std::optional<int>(const json&)>& ended, double every_s) {
  auto client = connect();
  if (!client) return;
  const bool terminal = isatty(STDOUT_FILENO) == 1;
  std::string last;
  for (;;) {
    auto reply = client->call(request);
    if (!reply) return fail(reply.error());
    const auto answer = json::parse(reply->json, nullptr, false);
    const auto now = answer.dump(-1, ' ', false, json::error_handler_t::replace);
    if (now != last) {
      if (as_json_) {
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
      rc_ = *code;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<long>(every_s * 1000)));
  }
}

protocol::AdminRequest simple_request(protocol::AdminCommand command, const std::string& target) {
  protocol::AdminRequest r;
  r.command = protocol::admin_command_name(command);
  r.target = target;
  return r;
}

namespace {

bool is_terminal_state(const std::string& state) { return state == "finished" || state == "failed" || state == "aborted"; }

// A command whose only argument is the job it is about.
CLI::App* job_command(CLI::App& app, const std::string& name, const std::string& help, std::shared_ptr<std::string> job) {
  auto* cmd = app.add_subcommand(name, help);
  cmd->add_option("job", *job, "job id")->required();
  return cmd;
}

// submit, jobs, status: what is queued and how it goes.
void add_queue_commands(CLI::App& app, Operator* o) {
  auto job_file = std::make_shared<std::string>();
  auto* submit = app.add_subcommand("submit", "Queue a job file (YAML, see configs/jobs/). The coordinator validates it "
                                              "and names the key at fault; a teacher model file it names is sent with it. "
                                              "Prints the job id.");
  submit->add_option("job", *job_file, "job file")->required()->check(CLI::ExistingFile);
  submit->callback([o, job_file] {
    o->command([job_file](admin::Client& c) { return c.submit(*job_file); },
               [](const json& a, const protocol::AdminReply&) { std::cout << "queued job " << text_of(a.at("id")) << "\n"; });
  });

  struct Watch {
    bool on = false;
    double every_s = 2;
  };
  auto watch = std::make_shared<Watch>();
  auto* jobs = app.add_subcommand("jobs", "List the jobs: queued, running (round k of n, time left from the rounds' "
                                          "times), finished, failed (why), aborted.");
  jobs->add_flag("--watch", watch->on,
                 "keep listing (every --every seconds, when something changed) until no job is queued or running; "
                 "exit code 0 then. With --json, one document per line");
  jobs->add_option("--every", watch->every_s, "seconds between two looks, with --watch")
      ->capture_default_str()
      ->check(CLI::Range(0.2, 3600.0));
  jobs->callback([o, watch] {
    if (watch->on) {
      return o->follow(simple_request(protocol::AdminCommand::jobs, ""), print_jobs, [](const json& a) -> std::optional<int> {
        for (const auto& j : a) {
          if (!is_terminal_state(j.value("state", ""))) return std::nullopt;
        }
        return 0;
      }, watch->every_s);
    }
    o->command([](admin::Client& c) { return c.call(simple_request(protocol::AdminCommand::jobs, "")); },
               [](const json& a, const protocol::AdminReply&) { print_jobs(a); });
  });

  auto job = std::make_shared<std::string>();
  auto follow_job = std::make_shared<Watch>();
  auto* status = job_command(app, "status", "One job: its state and each finished round (sites, samples, mean loss, "
                                            "seconds, the federation's share, who was missing and why).", job);
  status->add_flag("--follow", follow_job->on,
                   "keep showing the job (every --every seconds, when something changed) until it ends: exit code 0 "
                   "when it finished, 1 when it failed or was aborted. With --json, one document per line");
  status->add_option("--every", follow_job->every_s, "seconds between two looks, with --follow")
      ->capture_default_str()
      ->check(CLI::Range(0.2, 3600.0));
  status->callback([o, job, follow_job] {
    if (follow_job->on) {
      return o->follow(simple_request(protocol::AdminCommand::status, *job), print_status, [](const json& a) -> std::optional<int> {
        const auto state = a.value("state", "");
        if (!is_terminal_state(state)) return std::nullopt;
        return state == "finished" ? 0 : 1;
      }, follow_job->every_s);
    }
    o->command([job](admin::Client& c) { return c.call(simple_request(protocol::AdminCommand::status, *job)); },
               [](const json& a, const protocol::AdminReply&) { print_status(a); });
  });
}

// abort, resume, clone, delete, download: what an operator does with one job.
void add_job_actions(CLI::App& app, Operator* o) {
  auto job = std::make_shared<std::string>();
  job_command(app, "abort", "Stop a job after its current round (a queued job at once). Its state is kept: `resume` "
                            "queues it again and it continues from its last round.", job)
      ->callback([o, job] {
        o->command([job](admin::Client& c) { return c.call(simple_request(protocol::AdminCommand::abort, *job)); },
                   [job](const json& a, const protocol::AdminReply&) {
                     std::cout << "job " << *job << ": "
                               << (a.value("state", "") == "aborted" ? "aborted" : "stops after the current round") << "\n";
                   });
      });

  job_command(app, "resume", "Queue an aborted or failed job again; it continues after its last finished round.", job)
      ->callback([o, job] {
        o->command([job](admin::Client& c) { return c.call(simple_request(protocol::AdminCommand::resume, *job)); },
                   [job](const json& a, const protocol::AdminReply&) {
                     std::cout << "job " << *job << ": " << text_of(a.at("state")) << "\n";
                   });
      });

  struct Clone {
    std::string id;
    std::vector<std::string> settings;
  };
  auto clone_args = std::make_shared<Clone>();
  auto* clone = app.add_subcommand(
      "clone", "Queue a copy of a job under a new id, with changes: its job file as submitted, each --set laid over "
               "it (a dotted key reaches into a mapping: --set dp.target_epsilon=3, --set recipe.preset=nnunet), "
               "validated again by the coordinator as a submitted file is. It keeps the original's teacher.");
  clone->add_option("job", *job, "the job to copy")->required();
  clone->add_option("--id", clone_args->id, "the new job's id")->required();
  clone->add_option("--set", clone_args->settings, "KEY=VALUE, a change to the job file (repeat for more; VALUE is YAML)");
  clone->callback([o, job, clone_args] {
    std::vector<std::string> changes = {"id=" + clone_args->id};
    changes.insert(changes.end(), clone_args->settings.begin(), clone_args->settings.end());
    auto yaml = config::yaml_of_settings(changes);
    if (!yaml) {
      log::get("fedda-admin")->error("--set {}", yaml.error().message);
      o->rc() = 1;
      return;
    }
    auto request = simple_request(protocol::AdminCommand::clone, *job);
    request.job_yaml = *yaml;
    o->command([request](admin::Client& c) { return c.call(request); },
               [job](const json& a, const protocol::AdminReply&) {
                 std::cout << "queued job " << text_of(a.at("id")) << " (a clone of " << *job << "): "
                           << text_of(a.at("state")) << "\n";
               });
  });

  job_command(app, "delete", "Take a finished, failed or aborted job out of the queue. Nothing is destroyed: its folder "
                             "moves to the coordinator's STATE/deleted/ and the deletion is in the audit log; its id can "
                             "be used again.", job)
      ->callback([o, job] {
        o->command([job](admin::Client& c) { return c.call(simple_request(protocol::AdminCommand::remove, *job)); },
                   [job](const json& a, const protocol::AdminReply&) {
                     std::cout << "job " << *job << " deleted; its files are kept in " << text_of(a.at("archived_in")) << "\n";
                   });
      });

  auto download_dir = std::make_shared<std::string>();
  auto* download = job_command(app, "download", "Fetch a job's files over the admin channel: model.pt, results.csv, "
                                                "rounds.jsonl, summary.json, state.json, job.yaml (those that exist).", job);
  download->add_option("--out", *download_dir, "folder to write them to")->required();
  download->callback([o, job, download_dir] {
    o->command([job](admin::Client& c) { return c.call(simple_request(protocol::AdminCommand::download, *job)); },
               [download_dir](const json&, const protocol::AdminReply& reply) {
                 for (const auto& f : reply.files) {
                   std::cout << "wrote " << (fs::path(*download_dir) / f.name).string() << " (" << f.bytes.size() << " bytes)\n";
                 }
               },
               [download_dir](const protocol::AdminReply& reply) -> Status {
                 for (const auto& f : reply.files) {
                   if (f.name.empty() || f.name.find('/') != std::string::npos || f.name[0] == '.') {
                     return make_error("the coordinator sent a file named '" + f.name + "'; refused");
                   }
                   if (auto st = files::write_atomically(fs::path(*download_dir) / f.name, f.bytes); !st) return st;
                 }
                 return Status::success();
               });
  });
}

}  // namespace

void add_job_commands(CLI::App& app, Operator& op) {
  add_queue_commands(app, &op);
  add_job_actions(app, &op);
}

void add_site_commands(CLI::App& app, Operator& op) {
  auto* o = &op;
  auto* sites = app.add_subcommand("sites", "The consortium's sites: online or not, last seen, agent version, device "
                                            "and threads, the machine's resources as its agent reports them (cores, "
                                            "memory, free space in its cache folder, precision, GPUs), and per job its "
                                            "state (ready with its subjects, preparing, refused and why).");
  sites->callback([o] {
    o->command([](admin::Client& c) { return c.call(simple_request(protocol::AdminCommand::sites, "")); },
               [](const json& a, const protocol::AdminReply&) { print_sites(a); });
  });

  struct Logs {
    std::string site, job;
    int tail = 100;
  };
  auto logs_args = std::make_shared<Logs>();
  auto* logs = app.add_subcommand(
      "logs", "A site's recent log lines, as far as the site allows: its policy share_logs decides (none, the "
              "default: nothing; errors: warnings and errors; job: also every line naming --job), and what leaves is "
              "redacted as failure texts are (no local paths, no subject ids). The site's audit log records what it "
              "sent. The site's agent must be running; it answers within 20 s.");
  logs->add_option("site", logs_args->site, "site id")->required();
  logs->add_option("--job", logs_args->job, "only the lines naming this job");
  logs->add_option("--tail", logs_args->tail, "at most this many lines, the latest")->capture_default_str()->check(CLI::Range(1, 1000));
  logs->callback([o, logs_args] {
    auto request = simple_request(protocol::AdminCommand::logs, logs_args->site);
    request.job_yaml = json{{"job", logs_args->job}, {"tail", logs_args->tail}}.dump();
    o->command([request](admin::Client& c) { return c.call(request); },
               [](const json& a, const protocol::AdminReply&) {
                 const auto& lines = a.at("lines");
                 const auto job = text_of(a.at("job"));
                 std::cout << "site " << text_of(a.at("site")) << " (share_logs: " << text_of(a.at("policy")) << "): "
                           << lines.size() << (lines.size() == 1 ? " line" : " lines")
                           << (job.empty() ? "" : " naming job " + job) << "\n";
                 for (const auto& line : lines) std::cout << text_of(line) << "\n";
               });
  });

  struct Admit {
    std::string site, manifest;
  };
  auto admit_args = std::make_shared<Admit>();
  auto* admit = app.add_subcommand("admit", "Admit a site without restarting the coordinator: a kit made with add-site "
                                            "(its manifest in the coordinator's kit folder, or sent with --manifest), or "
                                            "a revoked site again.");
  admit->add_option("site", admit_args->site, "site id (or a revoked operator's name)")->required();
  admit->add_option("--manifest", admit_args->manifest, "the site kit's manifest.json (manifest.sig beside it is sent too)")
      ->check(CLI::ExistingFile);
  admit->callback([o, admit_args] {
    o->command(
        [admit_args](admin::Client& c) -> Result<protocol::AdminReply> {
          auto r = simple_request(protocol::AdminCommand::admit, admit_args->site);
          if (!admit_args->manifest.empty()) {
            auto text = files::read_all(admit_args->manifest);
            if (!text) return text.error();
            auto sig = files::read_all(fs::path(admit_args->manifest).replace_extension(".sig"));
            if (!sig) return sig.error();
            r.files = {{"manifest.json", *text}, {"manifest.sig", *sig}};
          }
          return c.call(r);
        },
        [admit_args](const json&, const protocol::AdminReply&) { std::cout << "site " << admit_args->site << " admitted\n"; });
  });

  auto revoked = std::make_shared<std::string>();
  auto* revoke = app.add_subcommand("revoke", "Revoke a site: it is disconnected at once and its key refused from then "
                                              "on (until admitted again). Or revoke another operator: its key is refused "
                                              "from its next command (until admitted again; an operator cannot revoke "
                                              "itself).");
  revoke->add_option("site", *revoked, "site id (or another operator's name)")->required();
  revoke->callback([o, revoked] {
    o->command([revoked](admin::Client& c) { return c.call(simple_request(protocol::AdminCommand::revoke, *revoked)); },
               [revoked](const json&, const protocol::AdminReply&) { std::cout << "site " << *revoked << " revoked\n"; });
  });
}

}  // namespace fedda::admin::tools
