// fedda-coordinator: one per consortium. Runs the given jobs in order over the sites that
// connect, writes each job's state, model and results under --out, and exits when all are done.
#include <csignal>
#include <fstream>
#include <string>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <CLI/CLI.hpp>

#include "fedda/common/cli.h"
#include "fedda/common/log.h"
#include "fedda/coordinator/coordinator.h"

using namespace fedda;

namespace {
coordinator::Coordinator* running = nullptr;
void on_signal(int) {
  if (running) running->stop();
}
}  // namespace

int main(int argc, char** argv) {
#if defined(__GLIBC__)
  // Model-sized buffers (tasks, updates, the running average) are mapped and unmapped whole
  // instead of coming from glibc's heap, whose threshold otherwise grows to fit them and which
  // then keeps fragments of them: resident memory returns to its baseline after every upload,
  // so it stays flat in the number of sites (100 sites: +4 MB over 3 sites, against +12 to
  // +20 MB with glibc's adaptive threshold; docs/performance.md).
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
  CLI::App app{
      "fedda-coordinator: runs federated jobs (teacher, kd, ada, evaluate) over the site agents that connect to it.\n"
      "Sites connect outbound to --bind. Each job's state is saved after every round under --out/<job id>/; "
      "running the same job again resumes it from the last finished round (a finished job is reported, not rerun).\n"
      "Outputs per job: model.pt (final global model), results.csv (per-subject metrics at the evaluation sites), "
      "rounds.jsonl (per-round, per-site records), summary.json, state.json."};
  std::string log_level = "info";
  cli::add_log_level(app, log_level);
  coordinator::CoordinatorOptions o;
  std::vector<std::string> job_files;
  std::string out = o.out.string(), endpoint_file;
  int heartbeat_ms = static_cast<int>(o.heartbeat.count());
  int start_timeout = static_cast<int>(o.start_timeout.count());
  std::size_t max_message_mb = o.max_message_bytes >> 20;
  app.add_option("--job", job_files, "job file (YAML); repeat to run several in order")->required()->check(CLI::ExistingFile);
  app.add_option("--bind", o.bind, "ZeroMQ endpoint to listen on (port 0: any free port)")->capture_default_str();
  app.add_option("--out", out, "folder for job state and results")->capture_default_str();
  app.add_option("--endpoint-file", endpoint_file, "write the bound endpoint to this file once listening");
  std::string kit;
  app.add_option("--kit", kit, "the coordinator's kit folder (fedda-admin provision): CurveZMQ with provisioned "
                               "site keys only, signed models")->check(CLI::ExistingDirectory);
  app.add_option("--sites", o.allowed_sites, "site ids admitted (comma-separated); default: any")->delimiter(',');
  app.add_option("--heartbeat-ms", heartbeat_ms, "heartbeat interval")->capture_default_str()->check(CLI::Range(10, 60000));
  app.add_option("--liveness", o.liveness, "heartbeats missed before a site counts as gone")->capture_default_str()->check(CLI::Range(2, 100));
  app.add_option("--start-timeout", start_timeout, "seconds to wait for min_sites before giving up a round")->capture_default_str();
  app.add_option("--max-message-mb", max_message_mb, "largest message accepted, in MiB")->capture_default_str()->check(CLI::Range(1, 4096));
  int rc = 0;
  app.callback([&]() {
    auto log = log::get("fedda-coordinator");
    o.out = out;
    o.kit = kit;
    o.endpoint_file = endpoint_file;
    o.heartbeat = std::chrono::milliseconds(heartbeat_ms);
    o.start_timeout = std::chrono::seconds(start_timeout);
    o.max_message_bytes = max_message_mb << 20;
    std::vector<coordinator::JobDefinition> jobs;
    for (const auto& f : job_files) {
      auto job = coordinator::read_job_file(f);
      if (!job) {
        log->error("{}", job.error().message);
        rc = 2;
        return;
      }
      jobs.push_back(std::move(*job));
    }
    auto c = coordinator::Coordinator::start(o);
    if (!c) {
      log->error("{}", c.error().message);
      rc = 1;
      return;
    }
    running = c->get();
    std::signal(SIGTERM, on_signal);
    std::signal(SIGINT, on_signal);
    for (const auto& job : jobs) {
      auto outcome = (*c)->run(job);
      if (!outcome) {
        log->error("job {}: {}", job.spec.id, outcome.error().message);
        rc = 1;
        break;
      }
      log->info("job {}: {} rounds, model {}{}", outcome->id, outcome->rounds, outcome->model.string(),
                outcome->results_csv.empty() ? "" : ", results " + outcome->results_csv.string());
    }
    (*c)->say_goodbye(rc == 0 ? "all jobs finished" : "coordinator stopping");
    running = nullptr;
    // VmHWM, not getrusage: ru_maxrss survives exec and would report the parent's peak.
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("VmHWM:", 0) == 0) log->info("peak memory {:.1f} MB", std::stod(line.substr(6)) / 1024.0);
    }
  });
  return cli::run(app, argc, argv, rc, "fedda-coordinator");
}
