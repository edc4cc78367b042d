#pragma once
// The federation tests' fixture: simulated clinics (quick profile, 4 subjects each) and a teacher
// trained on them, built once per build tree and shared by every test process; job files, site
// configs and real coordinator and agent processes on loopback.

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "fedda/common/kit.h"
#include "fedda/imaging/dataset.h"
#include "fedda/models/engine.h"
#include "fedda/simulation/generator.h"
#include "support/process.h"
#include "support/test_support.h"

namespace fedda {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::Process;

constexpr int kEpochs = 4, kSteps = 8, kBatch = 4;

class Federation : public ::testing::Test {
 protected:
  // The clinics and the teacher are built once per build tree and shared by every test process
  // (ctest runs each test in its own): generation is deterministic, and a lock keeps two
  // processes from building them at once.
  static void SetUpTestSuite() {
    const char* bin_dir = std::getenv("FEDDA_BIN_DIR");
    const fs::path cache = fs::path(bin_dir ? bin_dir : "build/bin").parent_path() / "test-cache" / "federation-v1";
    fs::create_directories(cache);
    const int lock = ::open((cache / ".lock").c_str(), O_CREAT | O_RDWR, 0644);
    ASSERT_GE(lock, 0);
    ::flock(lock, LOCK_EX);
    shared_ = cache;
    if (!fs::exists(cache / ".complete")) {
      fs::remove_all(cache / "data");
      simulation::GenerateOptions g;
      g.profile = simulation::Profile::kQuick;  // smoke's 6 mm slices leave too little lesion to score
      g.subjects = 4;
      g.out = data_dir();
      auto generated = simulation::generate(g);
      ASSERT_TRUE(generated) << generated.error().message;
      // The teacher every test distils (trained centrally: it is the fixture, not the subject).
      auto c = small_config();
      c.epochs = 40;
      c.batch_size = 8;
      c.learning_rate = 3e-3;
      c.threads = 2;
      auto source = imaging::find_clinic_subjects(data_dir(), "utrecht");
      ASSERT_TRUE(source);
      auto trained = models::train_supervised(*source, c, teacher());
      ASSERT_TRUE(trained) << trained.error().message;
      std::ofstream(cache / ".complete") << "ok\n";
    }
    ::flock(lock, LOCK_UN);
    ::close(lock);
  }
  static models::TrainConfig small_config() {
    models::TrainConfig c;
    c.unet.width = 16;  // width 8 often never leaves "no lesion" on this budget
    c.unet.depth = 3;
    c.grid.in_plane_size = {64, 64};
    c.grid.in_plane_spacing = {3.0, 3.0};
    c.epochs = kEpochs;
    c.steps_per_epoch = kSteps;
    c.batch_size = kBatch;
    c.threads = 1;
    c.seed = 3;
    return c;
  }
  static fs::path data_dir() { return shared_ / "data"; }
  static fs::path teacher() { return shared_ / "teacher.pt"; }

  // A kd job file in the test's folder.
  fs::path kd_job(const std::string& id, const std::vector<std::string>& sites, int rounds, int local_steps,
                  int min_sites, const std::string& evaluation_sites = "[amsterdam]", bool by_share = false) {
    std::string list;
    for (const auto& s : sites) list += (list.empty() ? "" : ", ") + s;
    const auto path = dir_ / (id + ".yaml");
    std::ofstream(path) << "id: " << id << "\ntype: kd\nteacher: " << teacher().string() << "\nsource: utrecht\nsites: ["
                        << list << "]\nevaluation_sites: " << evaluation_sites << "\nfold: 0\nrounds: " << rounds
                        << "\nlocal_steps: " << local_steps << "\nbatch_size: " << kBatch
                        << "\nmin_sites: " << min_sites << "\nround_deadline_s: 120\nseed: 3\nsteps_by_share: "
                        << (by_share ? "true" : "false") << "\n";
    return path;
  }

  fs::path site_config(const std::string& site, const std::string& endpoint, fs::path data = {}) {
    const auto path = dir_ / (site + ".yaml");
    if (data.empty()) data = data_dir() / site;
    std::ofstream(path) << (kit_.empty() ? "" : "kit: " + (kit_ / "sites" / site).string() + "\nroot_fingerprint: " +
                                                     kit::root_fingerprint(kit_ / "root" / "root.pub").value() + "\n")
                        << "site_id: " << site << "\ncoordinator: " << endpoint
                        << (site_config_extra_.find("data_layout: pacs") == std::string::npos ? "\ndata: " + data.string() : "")
                        << "\ncache_dir: " << (dir_ / ("cache-" + site)).string()
                        << "\nthreads: 1\nheartbeat_ms: 200\n"
                        << (site_config_extra_.find("reconnect_") == std::string::npos ? "reconnect_min_ms: 100\nreconnect_max_ms: 1000\n" : "")
                        << site_config_extra_;
    return path;
  }

  std::unique_ptr<Process> start_coordinator(const fs::path& job, const std::string& bind,
                                             const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {testing::bin("fedda-coordinator").string(), "serve", "--job", job.string(), "--bind", bind,
                                     "--state", dir_.path().string(), "--endpoint-file", endpoint_file().string(),
                                     "--heartbeat-ms", "200", "--start-timeout", "120"};
    args.insert(args.end(), extra.begin(), extra.end());
    if (!kit_.empty()) {
      args.insert(args.end(), {"--kit", (kit_ / "coordinator").string()});
    } else {
      args.insert(args.end(), {"--insecure", "--sites", "utrecht,amsterdam,singapore,spare"});
    }
    return std::make_unique<Process>(args, coordinator_log());
  }
  std::unique_ptr<Process> start_agent(const std::string& site, const std::string& endpoint, const fs::path& data = {}) {
    return std::make_unique<Process>(
        std::vector<std::string>{testing::bin("fedda-agent").string(), "run", "--config",
                                 site_config(site, endpoint, data).string()},
        dir_ / (site + ".log"));
  }
  static std::string second_line(const fs::path& file) {
    const auto text = testing::read_text(file);
    const auto first = text.find('\n');
    return text.substr(first + 1, text.find('\n', first + 1) - first - 1);
  }
  std::string wait_for_endpoint() {
    EXPECT_TRUE(testing::wait_for_text(endpoint_file(), "tcp://", 30s)) << testing::read_text(coordinator_log());
    auto text = testing::read_text(endpoint_file());
    return text.substr(0, text.find('\n'));
  }
  fs::path endpoint_file() const { return dir_ / "endpoint"; }
  fs::path coordinator_log() const { return dir_ / "coordinator.log"; }
  std::vector<nlohmann::json> rounds(const std::string& job) const {
    std::vector<nlohmann::json> out;
    std::ifstream in(dir_ / "jobs" / job / "rounds.jsonl");
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) out.push_back(nlohmann::json::parse(line));
    }
    return out;
  }
  static bool has_site(const nlohmann::json& round, const std::string& site) {
    for (const auto& s : round["sites"]) {
      if (s["site"] == site) return true;
    }
    return false;
  }

  testing::ScratchDir dir_;
  fs::path kit_;  // set: coordinator and agents run with these kits
  std::string site_config_extra_;  // YAML lines added to every site config

 private:
  static inline fs::path shared_;
};

}  // namespace fedda
