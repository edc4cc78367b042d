// fedda-coordinator: one per consortium. `serve` runs the coordinator as a service that site
// agents connect to and operators submit jobs to (fedda-admin); with --job it is the batch form
// that queues those job files and exits when they have ended.
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <CLI/CLI.hpp>

#include "fedda/common/cli.h"
#include "fedda/common/log.h"
#include "fedda/common/version.h"
#include "fedda/coordinator/service.h"

using namespace fedda;

namespace {
coordinator::Service* running = nullptr;
void on_signal(int) {
  if (running) running->stop();
}

// One file descriptor per connected site: lift the soft limit to the hard one.
void raise_open_file_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

// serve's options, as the command line gives them (ServiceOptions takes durations and bytes).
struct ServeArgs {
  coordinator::ServiceOptions o;
  std::vector<std::string> job_files;
  std::string state = o.state.string(), endpoint_file, kit;
  int heartbeat_ms = static_cast<int>(o.heartbeat.count());
  int start_timeout = static_cast<int>(o.start_timeout.count());
  int drain_timeout = static_cast<int>(o.drain_timeout.count());
  std::size_t max_message_mb = o.max_message_bytes >> 20;

  coordinator::ServiceOptions options() const {
    auto out = o;
    out.state = state;
    out.kit = kit;
    out.endpoint_file = endpoint_file;
    out.heartbeat = std::chrono::milliseconds(heartbeat_ms);
    out.start_timeout = std::chrono::seconds(start_timeout);
    out.drain_timeout = std::chrono::seconds(drain_timeout);
    out.max_message_bytes = max_message_mb << 20;
    return out;
  }
};

void add_serve_options(CLI::App* serve, ServeArgs& a) {
  auto& o = a.o;
  serve->add_option("--kit", a.kit, "the coordinator's kit folder (fedda-admin provision): CurveZMQ with provisioned "
                                    "site and operator keys only, signed models, sealed state")
      ->check(CLI::ExistingDirectory);
  serve->add_option("--bind", o.bind, "endpoint sites connect to (port 0: any free port)")->capture_default_str();
  serve->add_option("--admin-bind", o.admin_bind,
                    "endpoint operators connect to; default: the --bind host and the next port (0 stays 0)");
  serve->add_option("--state", a.state, "folder for the job queue, job state and results, and the audit log")
      ->capture_default_str();
  serve->add_option("--endpoint-file", a.endpoint_file,
                    "once listening, write the bound endpoints here (first line sites, second line operators)");
  serve->add_option("--job", a.job_files, "batch form: queue this job file (repeat for several) and exit when they end")
      ->check(CLI::ExistingFile);
  serve->add_flag("--insecure", o.insecure,
                  "run without a kit (plain TCP, unsigned models, any site id accepted): loopback test networks only");
  serve->add_option("--sites", o.allowed_sites, "without a kit: the site ids admitted (comma-separated); default any")
      ->delimiter(',');
  serve->add_option("--heartbeat-ms", a.heartbeat_ms, "heartbeat interval")->capture_default_str()->check(CLI::Range(10, 60000));
  serve->add_option("--liveness", o.liveness, "heartbeats missed before a site counts as gone")
      ->capture_default_str()->check(CLI::Range(2, 100));
  serve->add_option("--start-timeout", a.start_timeout, "seconds to wait for min_sites before a round fails the job")
      ->capture_default_str();
  serve->add_option("--drain-timeout", a.drain_timeout, "on SIGTERM, seconds running rounds may take to finish")
      ->capture_default_str();
  serve->add_option("--max-message-mb", a.max_message_mb, "largest message accepted, in MiB")
      ->capture_default_str()->check(CLI::Range(1, 4096));
  serve->add_option("--max-uploads", o.max_concurrent_uploads, "updates uploaded at once (memory: one model each)")
      ->capture_default_str()->check(CLI::Range(1, 64));
  serve->add_option("--http", o.http,
                    "serve the status page, its JSON API (/api/...) and Prometheus metrics (/metrics) on HOST:PORT, "
                    "e.g. 127.0.0.1:8470 (off by default). With --kit every request needs the bearer token "
                    "`fedda-coordinator status-token` prints; without a kit it listens on loopback only");
}

// Starts the service, queues --job's files and serves until stopped (or until they ended).
int serve(const ServeArgs& a) {
  auto log = log::get("fedda-coordinator");
  raise_open_file_limit();
  auto service = coordinator::Service::start(a.options());
  if (!service) {
    log->error("{}", service.error().message);
    return 1;
  }
  std::vector<std::string> ids;
  if (!a.job_files.empty()) {
    std::vector<std::filesystem::path> files(a.job_files.begin(), a.job_files.end());
    auto queued = (*service)->enqueue(files);
    if (!queued) {
      log->error("{}", queued.error().message);
      return 2;
    }
    ids = std::move(*queued);
  }
  running = service->get();
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  const int rc = (*service)->run(ids);
  running = nullptr;
  // VmHWM, not getrusage: ru_maxrss survives exec and would report the parent's peak.
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) log->info("peak memory {:.1f} MB", std::stod(line.substr(6)) / 1024.0);
  }
  return rc;
}

void add_serve(CLI::App& app, int& rc) {
  auto* cmd = app.add_subcommand(
      "serve",
      "Run the coordinator. Outputs per job under STATE/jobs/<id>/: model.pt (final global model), results.csv "
      "(per-subject metrics at the evaluation sites), rounds.jsonl (per round and site), summary.json, state.json. "
      "STATE/audit.jsonl records every operator command. With --job, the given job files are queued (a finished job "
      "is reported, an unfinished one resumed) and the coordinator exits when they have ended: 0 when all finished.");
  auto args = std::make_shared<ServeArgs>();
  add_serve_options(cmd, *args);
  cmd->callback([args, &rc] { rc = serve(*args); });
}

void add_status_token(CLI::App& app, int& rc) {
  auto* cmd = app.add_subcommand(
      "status-token",
      "Print the bearer token of the status page (serve --kit --http): send it as "
      "`Authorization: Bearer TOKEN` (Prometheus: `authorization: {credentials: TOKEN}`), or open the page once "
      "as http://HOST:PORT/?token=TOKEN. It is derived from the kit's storage key: whoever holds the kit can print it.");
  auto kit = std::make_shared<std::string>();
  cmd->add_option("--kit", *kit, "the coordinator's kit folder")->required()->check(CLI::ExistingDirectory);
  cmd->callback([kit, &rc] {
    auto t = coordinator::status_token(*kit);
    if (!t) {
      log::get("fedda-coordinator")->error("{}", t.error().message);
      rc = 1;
      return;
    }
    std::printf("%s\n", t->c_str());
  });
}

}  // namespace

int main(int argc, char** argv) {
#if defined(__GLIBC__)
  // Model-sized buffers (tasks, updates, the running average) are mapped and unmapped whole
  // instead of coming from glibc's heap, whose threshold otherwise grows to fit them and which
  // then keeps fragments of them: resident memory returns to its baseline after every upload,
  // so it stays flat in the number of sites (docs/performance.md).
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
  CLI::App app{
      "fedda-coordinator: the coordinator of a fedda consortium, run as a service.\n"
      "Site agents connect to --bind; operators submit, watch, abort and download jobs through the admin endpoint "
      "with fedda-admin. Jobs wait in a queue under --state and survive restarts: a running job resumes from its "
      "last finished round. SIGTERM lets running rounds finish, persists them and exits 0."};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("fedda-coordinator ") + kVersion);
  std::string log_level = "info";
  cli::add_log_level(app, log_level);
  int rc = 0;
  add_serve(app, rc);
  add_status_token(app, rc);
  return cli::run(app, argc, argv, rc, "fedda-coordinator");
}
