// fedda-sim consortium: a local consortium (coordinator + one agent per clinic, separate
// processes on loopback) running job files, then a table of mean Dice per method and target.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

#include "fedda/common/files.h"
#include "fedda/common/log.h"
#include "fedda/common/protocol.h"
#include "fedda/experiment/consortium.h"
#include "experiment_commands.h"

namespace fedda::experiment::tools {

namespace {

// Mean Dice per (method, target) from a results.csv.
void print_dice_table(const std::filesystem::path& csv) {
  auto text = files::read_all(csv);
  auto rows = text ? protocol::parse_results_csv(*text) : Result<std::vector<protocol::ResultRow>>(text.error());
  if (!rows) {
    log::get("fedda-sim")->error("{}: {}", csv.string(), rows.error().message);
    return;
  }
  std::map<std::string, std::map<std::string, std::pair<double, int>>> dice;  // method -> target -> (sum, n)
  std::vector<std::string> methods, targets;
  for (const auto& r : *rows) {
    if (std::find(methods.begin(), methods.end(), r.method) == methods.end()) methods.push_back(r.method);
    if (std::find(targets.begin(), targets.end(), r.target) == targets.end()) targets.push_back(r.target);
    auto& cell = dice[r.method][r.target];
    if (std::isfinite(r.dsc)) {
      cell.first += r.dsc;
      cell.second += 1;
    }
  }
  std::cout << "\nMean Dice per target clinic (federated; n = test subjects)\n\n| method |";
  for (const auto& t : targets) std::cout << " " << t << " |";
  std::cout << "\n|---|";
  for (std::size_t i = 0; i < targets.size(); ++i) std::cout << "---|";
  std::cout << "\n";
  for (const auto& m : methods) {
    std::cout << "| " << m << " |";
    for (const auto& t : targets) {
      const auto& c = dice[m][t];
      if (c.second == 0) {
        std::cout << " - |";
      } else {
        std::cout << " " << std::fixed << std::setprecision(3) << c.first / c.second << " (n=" << c.second << ") |";
      }
    }
    std::cout << "\n";
  }
  std::cout << std::endl;
}

}  // namespace

void add_consortium(CLI::App& app, int& rc) {
  struct Args {
    ConsortiumOptions o;
    std::string data, out;
    std::vector<std::string> jobs;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "consortium",
      "Run job files on a local consortium: `fedda-coordinator serve` and one `fedda-agent run` per clinic of --data, "
      "as separate processes talking the real protocol over loopback; the jobs are submitted and watched through "
      "the coordinator's admin endpoint with an operator kit, as `fedda-admin submit` and `jobs` do. Each job's folder "
      "(OUT/jobs/<id>/: model.pt, results.csv, rounds.jsonl, summary.json) is kept, so a rerun resumes or "
      "skips finished jobs. Logs in OUT/logs/, site configs in OUT/sites/, merged results in OUT/results.csv. "
      "Example job files: configs/jobs/.");
  cmd->add_option("--data", a->data, "data folder, one sub-folder per clinic (fedda-sim generate, any --layout: each clinic's agent reads its folder as wmh, bids, datalist or dicom)")->required();
  cmd->add_option("--job", a->jobs, "job file (YAML); repeat to run several in order")->required();
  cmd->add_option("--out", a->out, "output folder")->required();
  cmd->add_option("--sites", a->o.sites, "clinics that run an agent (comma-separated); default: all")->delimiter(',');
  cmd->add_option("--device", a->o.device, "cpu or cuda, for every agent")->capture_default_str();
  cmd->add_option("--threads", a->o.threads_per_agent, "LibTorch threads per agent (0: every core)")->capture_default_str();
  cmd->add_option("--heartbeat-ms", a->o.heartbeat_ms, "heartbeat interval")->capture_default_str();
  cmd->add_option("--http", a->o.http,
                  "serve the coordinator's status page on HOST:PORT (e.g. 127.0.0.1:8470, port 0: any free one); the "
                  "address, with its token, is logged");
  auto insecure_flag = std::make_shared<bool>(false);
  cmd->add_flag("--insecure", *insecure_flag, "no kits: plain TCP, unsigned models, unencrypted caches (debugging only)");
  cmd->callback([a, insecure_flag, &rc]() {
    a->o.data = a->data;
    a->o.out = a->out;
    a->o.secure = !*insecure_flag;
    a->o.bin_dir = executable_dir();
    std::vector<std::filesystem::path> jobs(a->jobs.begin(), a->jobs.end());
    auto r = run_consortium(a->o, jobs);
    if (!r) {
      log::get("fedda-sim")->error("{}", r.error().message);
      rc = 1;
      return;
    }
    print_dice_table(r->results_csv);
    log::get("fedda-sim")->info("consortium finished in {:.0f} s; results in {}", r->seconds, r->results_csv.string());
    rc = 0;
  });
}

}  // namespace fedda::experiment::tools
