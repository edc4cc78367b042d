#pragma once
// A whole consortium on one machine: `fedda-coordinator serve` and one `fedda-agent run` per
// clinic, each a separate process talking the real protocol over loopback TCP, on simulated (or
// any WMH-layout) data; jobs go in through the coordinator's admin endpoint with an operator
// kit, exactly as `fedda-admin submit` sends them, and are watched with `jobs`. Used by
// `fedda-sim consortium`, `fedda-sim experiment`, `make demo` and the integration tests.
//
// Layout of `out`:
//   sites/<clinic>.yaml   the generated site configs      logs/<process>.log  each process's log
//   jobs/<job id>/        the coordinator's job folders   cache/<clinic>/     each site's cache
//   audit.jsonl           the coordinator's admin log     kits/               keys and kits, made on first use
//   results.csv           (run_consortium) every job's evaluation rows, merged
// The coordinator's state is `out` itself, so a consortium started again on the same folder
// resumes its unfinished jobs and skips finished ones.

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fedda/common/result.h"

namespace fedda::admin {
class Client;
}

namespace fedda::experiment {

struct ConsortiumOptions {
  std::filesystem::path data;                 // one folder per clinic
  std::filesystem::path out;
  std::vector<std::string> sites;             // clinics that run an agent; default: every clinic in `data`
  std::string device = "cpu";
  int threads_per_agent = 0;                  // 0: every core
  int heartbeat_ms = 1000;
  std::filesystem::path bin_dir;              // holds fedda-coordinator and fedda-agent (required)
  bool show_progress = true;                  // echo the coordinator's job and round lines to stdout
  bool secure = true;                         // provision kits (out/kits/): CurveZMQ, signed models,
                                              // encrypted caches, an operator kit for the admin channel
  std::string http;                           // the coordinator's status page (HOST:PORT, loopback); empty: off
};

// A job as the coordinator's `jobs` command lists it.
struct JobView {
  std::string id, state, error, activity;
  int round = 0, rounds = 0;
};

class LocalConsortium {
 public:
  // Provisions kits (first use), starts the coordinator and the agents. Error names the process
  // that failed and shows the end of its log.
  static Result<std::unique_ptr<LocalConsortium>> start(const ConsortiumOptions& options);
  // Stops every process (SIGTERM, then SIGKILL after a grace period).
  ~LocalConsortium();

  // Queues a job file through the admin channel. A job this coordinator knows already is left
  // as it is when finished, queued or running, and resumed when failed or aborted, provided it
  // has the same type, sites and rounds. Returns the job's id.
  Result<std::string> submit(const std::filesystem::path& job_file);
  // Every job, as `jobs` lists it.
  Result<std::vector<JobView>> jobs();
  // Waits until the jobs `ids` have all ended (finished, failed or aborted); `on_poll` is called
  // about once a second with the jobs' current views. Error when the coordinator died.
  Result<std::map<std::string, JobView>> wait(const std::vector<std::string>& ids,
                                              const std::function<void(const std::vector<JobView>&)>& on_poll = {});
  // Stops the processes; error when the coordinator did not exit cleanly.
  Status stop();

  admin::Client& admin();
  std::filesystem::path jobs_dir() const;

 private:
  struct Impl;
  explicit LocalConsortium(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct ConsortiumResult {
  std::filesystem::path results_csv;
  double seconds = 0;
};

// Starts a local consortium, runs `jobs` in order, merges their results.csv into OUT/results.csv
// and stops it. Error names the first job that did not finish and why.
Result<ConsortiumResult> run_consortium(const ConsortiumOptions& options, const std::vector<std::filesystem::path>& jobs);

// Subject pseudonyms of one clinic of a local consortium folder (pseudonym -> subject id), from
// the site config the consortium wrote and that site's key: only pseudonyms leave a site, and the
// harness, which runs every site itself, maps results back with this. Error when the consortium
// has not run that site yet.
Result<std::map<std::string, std::string>> site_pseudonyms(const std::filesystem::path& out, const std::string& clinic);

// Where fedda's executables are: the folder of the running executable (for main()s to inject).
std::filesystem::path executable_dir();

}  // namespace fedda::experiment
