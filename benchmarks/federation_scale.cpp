// fedda-bench-scale: the coordinator at many sites. For each site count, a real
// `fedda-coordinator serve` (a separate process, --insecure on loopback) runs one teacher job
// over that many lightweight fake sites, all multiplexed in this process on one thread (one
// DEALER each, the real protocol: hello, heartbeats, job_ready, update_ready, upload on credit).
// Every site returns the weights it got, so the figures are the federation's own: the time of a
// FedAvg round from the task's encoding to the round on disk, and the coordinator's peak
// resident memory. Prints one row per site count (--json: one JSON document). With
// --secure-aggregation each count is measured twice, plain FedAvg and secure aggregation (the
// fake sites then run the real secagg client: keys, shares, masks, unmasking), with the bytes
// each site sent per round and the seconds it spent in secure aggregation's cryptography.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "fedda/experiment/consortium.h"
#include "fedda/common/version.h"
#include "support/fake_sites.h"
#include "support/process.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string read_text(const fs::path& file) {
  std::ifstream in(file);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

struct Row {
  bool secure = false;
  double site_bytes = 0, site_secagg_s = 0;  // per site per round
  int sites = 0, per_round = 0, rounds = 0;
  double round_s = 0, aggregate_s = 0, overhead_s = 0, peak_mb = 0, setup_s = 0;
  std::int64_t task_bytes = 0;
  bool ok = false;
  std::string error;
};

Row measure(const fs::path& bin, const fs::path& work, int sites, int per_round, int rounds, int width, int depth, int grid,
            bool secure) {
  Row row;
  row.secure = secure;
  row.sites = sites;
  row.per_round = per_round ? per_round : sites;
  row.rounds = rounds;
  const auto dir = work / ("sites-" + std::to_string(sites) + (per_round ? "-sample-" + std::to_string(per_round) : "") +
                           (secure ? "-secure" : ""));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ostringstream list;
  for (int i = 0; i < sites; ++i) list << (i ? ", " : "") << "site" << i;
  const auto job = dir / "job.yaml";
  std::ofstream(job) << "id: scale\ntype: teacher\nsource: site0\nsites: [" << list.str() << "]\nrounds: " << rounds
                     << "\nlocal_steps: 1\nmin_sites: " << row.per_round << "\nevaluate: false\nround_deadline_s: 600\n"
                     << (per_round ? "sites_per_round: " + std::to_string(per_round) + "\n" : std::string())
                     << (secure ? "secure_aggregation: true\nsecagg_timeout_s: 600\n" : "")
                     << "model: {width: " << width << ", depth: " << depth << ", grid_size: " << grid << ", grid_spacing: 6}\n";
  const auto log = dir / "coordinator.log";
  const auto start = std::chrono::steady_clock::now();
  fedda::testing::Process coordinator(
      {(bin / "fedda-coordinator").string(), "serve", "--insecure", "--job", job.string(), "--bind", "tcp://127.0.0.1:0",
       "--endpoint-file", (dir / "endpoint").string(), "--state", (dir / "state").string(), "--heartbeat-ms", "2000",
       "--start-timeout", "600"},
      log);
  std::string endpoint;
  for (int i = 0; i < 600 && endpoint.empty(); ++i) {
    const auto text = read_text(dir / "endpoint");
    if (text.find('\n') != std::string::npos) endpoint = text.substr(0, text.find('\n'));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (endpoint.empty()) {
    row.error = "the coordinator did not start; see " + log.string();
    return row;
  }
  {
    fedda::testing::FakeSites fakes(endpoint, sites, "site", std::chrono::milliseconds(1000));
    const int rc = coordinator.wait(std::chrono::seconds(1800));
    row.site_bytes = static_cast<double>(fakes.bytes_sent()) / sites / rounds;
    row.site_secagg_s = fakes.secure_seconds() / sites / rounds;
    if (rc != 0) {
      row.error = "the coordinator exited with " + std::to_string(rc) + "; see " + log.string();
      return row;
    }
  }
  row.setup_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::vector<double> spans, aggregates, overheads;
  std::ifstream jsonl(dir / "state" / "jobs" / "scale" / "rounds.jsonl");
  for (std::string line; std::getline(jsonl, line);) {
    const auto r = json::parse(line);
    const auto& f = r.at("federation");
    spans.push_back(f.at("span_s").get<double>());
    aggregates.push_back(f.at("aggregate_s").get<double>());
    overheads.push_back(f.at("overhead_s").get<double>());
    row.task_bytes = f.at("task_bytes").get<std::int64_t>();
    if (static_cast<int>(r.at("sites").size()) != row.per_round) {
      row.error = "a round counted " + std::to_string(r.at("sites").size()) + " sites";
      return row;
    }
  }
  if (static_cast<int>(spans.size()) != rounds) {
    row.error = "rounds.jsonl has " + std::to_string(spans.size()) + " rounds";
    return row;
  }
  row.round_s = median(spans);
  row.aggregate_s = median(aggregates);
  row.overhead_s = median(overheads);
  std::smatch m;
  const auto text = read_text(log);
  if (std::regex_search(text, m, std::regex("peak memory ([0-9.]+) MB"))) row.peak_mb = std::stod(m[1]);
  row.ok = true;
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fedda-bench-scale: coordinator round time and peak memory at many lightweight sites (real coordinator "
               "process, fake sites multiplexed in this one, loopback, no kits)."};
  app.set_version_flag("--version", std::string("fedda-bench-scale ") + fedda::kVersion);
  std::vector<int> counts = {3, 100, 1000};
  int rounds = 3, width = 4, depth = 2, grid = 32, per_round = 0;
  std::string bin = fedda::experiment::executable_dir().string(), work = (fs::temp_directory_path() / "fedda-bench-scale").string();
  bool as_json = false, secure = false;
  app.add_option("--sites", counts, "site counts to measure (comma-separated)")->delimiter(',')->capture_default_str();
  app.add_option("--rounds", rounds, "rounds per job (the median round is reported)")->capture_default_str();
  app.add_option("--sites-per-round", per_round, "sample this many sites per round (0: all)")->capture_default_str();
  app.add_option("--width", width, "U-Net width of the job's model (the update's size)")->capture_default_str();
  app.add_option("--depth", depth, "U-Net depth")->capture_default_str();
  app.add_option("--grid", grid, "model grid (does not change the update's size)")->capture_default_str();
  app.add_option("--bin", bin, "folder of fedda-coordinator")->capture_default_str();
  app.add_option("--work", work, "scratch folder")->capture_default_str();
  app.add_flag("--json", as_json, "one JSON document");
  app.add_flag("--secure-aggregation", secure, "measure each count twice: plain FedAvg, then secure aggregation");
  CLI11_PARSE(app, argc, argv);
  fedda::testing::FakeSites::raise_open_file_limit();
  json out = json::array();
  if (!as_json) {
    std::cout << "sites  per round  secure  rounds  task KB  site KB/round  site secagg s  round s  aggregate s  overhead s"
                 "  coordinator peak MB  wall s"
              << std::endl;
  }
  int rc = 0;
  std::vector<std::pair<int, bool>> runs;
  for (const int n : counts) {
    runs.emplace_back(n, false);
    if (secure) runs.emplace_back(n, true);
  }
  for (const auto& [n, secure_run] : runs) {
    const auto row = measure(bin, work, n, per_round, rounds, width, depth, grid, secure_run);
    if (!row.ok) {
      std::cerr << n << " sites: " << row.error << "\n";
      rc = 1;
      continue;
    }
    out.push_back({{"sites", row.sites}, {"sites_per_round", row.per_round}, {"secure_aggregation", row.secure},
                   {"site_bytes_per_round", row.site_bytes}, {"site_secagg_s_per_round", row.site_secagg_s}, {"rounds", row.rounds},
                   {"task_bytes", row.task_bytes}, {"round_s", row.round_s}, {"aggregate_s", row.aggregate_s},
                   {"overhead_s", row.overhead_s}, {"coordinator_peak_mb", row.peak_mb}, {"wall_s", row.setup_s}});
    if (!as_json) {
      std::cout << std::setw(5) << row.sites << std::setw(11) << row.per_round << std::setw(8) << (row.secure ? "yes" : "no")
                << std::setw(8) << row.rounds << std::fixed << std::setprecision(1) << std::setw(9) << row.task_bytes / 1024.0
                << std::setw(15) << row.site_bytes / 1024.0 << std::setprecision(4) << std::setw(15) << row.site_secagg_s
                << std::setprecision(3) << std::setw(9)
                << row.round_s << std::setw(13) << row.aggregate_s << std::setw(12) << row.overhead_s << std::setprecision(1)
                << std::setw(21) << row.peak_mb << std::setw(8) << row.setup_s << std::endl;
    }
  }
  if (as_json) std::cout << out.dump(2) << "\n";
  return rc;
}
