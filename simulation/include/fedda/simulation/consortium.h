#pragma once
// A whole consortium on one machine: one fedda-coordinator and one fedda-agent per clinic,
// each a separate process talking the real protocol over loopback TCP, run on simulated (or
// any WMH-layout) data. Used by `fedda-sim consortium`, `make demo` and the integration tests.
//
// Layout of `out`:
//   sites/<clinic>.yaml   the generated site configs      logs/<process>.log  each process's log
//   jobs/<job id>/        the coordinator's job folders   cache/<clinic>/     each site's cache
//   results.csv           every job's evaluation rows, merged (columns as in the job folders)
//   kits/                 the consortium's keys and kits (fedda-admin's layout), made on first use

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "fedda/common/result.h"

namespace fedda::simulation {

struct ConsortiumOptions {
  std::filesystem::path data;                 // one folder per clinic
  std::vector<std::filesystem::path> jobs;    // job files, run in order
  std::filesystem::path out;
  std::vector<std::string> sites;             // clinics that run an agent; default: every clinic in `data`
  std::string device = "cpu";
  int threads_per_agent = 0;                  // 0: every core
  int heartbeat_ms = 1000;
  std::filesystem::path bin_dir;              // holds fedda-coordinator and fedda-agent; default: beside this executable
  bool show_progress = true;                  // echo the coordinator's job and round lines to stdout
  bool secure = true;                         // provision kits (out/kits/): CurveZMQ, signed models,
                                              // encrypted caches, as a real consortium runs
  std::function<void()> on_poll;              // called about every 200 ms while the coordinator runs
};

struct ConsortiumResult {
  std::filesystem::path results_csv;
  double seconds = 0;
};

// Error names the process that failed and points at its log.
Result<ConsortiumResult> run_consortium(const ConsortiumOptions& options);

// Where fedda's executables are: the folder of the running executable.
std::filesystem::path executable_dir();

}  // namespace fedda::simulation
