#include "fedda/simulation/consortium.h"

#include <signal.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include "fedda/common/files.h"
#include "fedda/common/kit.h"
#include "fedda/common/log.h"
#include "fedda/imaging/dataset.h"

extern char** environ;

namespace fedda::simulation {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// Starts `argv` with stdout and stderr appended to `log_file`; returns its pid.
Result<pid_t> spawn(const std::vector<std::string>& argv, const fs::path& log_file) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return make_error("cannot start " + argv[0] + ": " + std::strerror(rc));
  return pid;
}

// Exit status of `pid` if it has ended, else -1 (-2 when it was killed by a signal).
int poll_exit(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, WNOHANG) != pid) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return -2;
}

void stop_process(pid_t pid, const std::string& name, std::chrono::seconds grace) {
  if (poll_exit(pid) != -1) return;
  kill(pid, SIGTERM);
  const auto until = Clock::now() + grace;
  while (Clock::now() < until) {
    if (poll_exit(pid) != -1) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  log::get("consortium")->warn("{} did not stop within {} s of SIGTERM; killing it", name, grace.count());
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

std::string tail(const fs::path& file, std::size_t lines) {
  std::ifstream in(file);
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) all.push_back(line);
  std::string out;
  for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) out += "  " + all[i] + "\n";
  return out;
}

// Echoes new lines of the coordinator's log that report job progress.
class Follower {
 public:
  explicit Follower(fs::path file) : file_(std::move(file)) {}
  void poll() {
    std::ifstream in(file_);
    if (!in) return;
    in.seekg(static_cast<std::streamoff>(offset_));
    std::string line;
    while (std::getline(in, line)) {
      if (in.eof()) break;  // a partial line: read it whole next time
      offset_ += line.size() + 1;
      if (line.find("] job ") != std::string::npos || line.find("[error]") != std::string::npos ||
          line.find("[warning]") != std::string::npos) {
        std::cout << line << std::endl;
      }
    }
  }

 private:
  fs::path file_;
  std::size_t offset_ = 0;
};

}  // namespace

fs::path executable_dir() {
  std::error_code ec;
  const auto self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::current_path() : self.parent_path();
}

Result<ConsortiumResult> run_consortium(const ConsortiumOptions& o) {
  auto log = log::get("consortium");
  const auto start = Clock::now();
  if (o.jobs.empty()) return make_error("no job files given");
  for (const auto& j : o.jobs) {
    if (!fs::exists(j)) return make_error(j.string() + ": job file not found");
  }
  auto subjects = imaging::find_subjects(o.data);
  if (!subjects) return subjects.error();
  std::vector<std::string> clinics;
  for (const auto& s : *subjects) {
    if (clinics.empty() || clinics.back() != s.clinic) clinics.push_back(s.clinic);
  }
  std::vector<std::string> sites = o.sites.empty() ? clinics : o.sites;
  for (const auto& s : sites) {
    if (!std::count(clinics.begin(), clinics.end(), s)) return make_error("site '" + s + "' has no clinic folder in " + o.data.string());
  }
  const fs::path bin = o.bin_dir.empty() ? executable_dir() : o.bin_dir;
  const auto coordinator_bin = bin / "fedda-coordinator", agent_bin = bin / "fedda-agent";
  for (const auto& b : {coordinator_bin, agent_bin}) {
    if (!fs::exists(b)) return make_error(b.string() + ": not found (build fedda first)");
  }
  std::error_code ec;
  for (const char* sub : {"sites", "logs", "jobs", "cache"}) fs::create_directories(o.out / sub, ec);
  if (ec) return make_error(o.out.string() + ": cannot create: " + ec.message());
  const auto out = fs::absolute(o.out);
  const auto endpoint_file = out / "coordinator.endpoint";
  fs::remove(endpoint_file, ec);

  const auto kits = out / "kits";
  if (o.secure) {
    if (!fs::exists(kits / "root")) {
      kit::ProvisionOptions p{"local-" + o.data.filename().string(), "tcp://127.0.0.1:0", sites, kits};
      if (auto st = kit::provision(p); !st) return make_error("provisioning kits: " + st.error().message);
    }
    for (const auto& s : sites) {
      if (!fs::exists(kits / "sites" / s)) {
        if (auto st = kit::add_site(kits, s); !st) return make_error("provisioning kits: " + st.error().message);
      }
    }
  }
  std::vector<std::string> args = {coordinator_bin.string(), "--bind", "tcp://127.0.0.1:0", "--endpoint-file",
                                   endpoint_file.string(), "--out", (out / "jobs").string(),
                                   "--heartbeat-ms", std::to_string(o.heartbeat_ms)};
  std::string registry;
  for (const auto& s : sites) registry += (registry.empty() ? "" : ",") + s;
  args.insert(args.end(), {"--sites", registry});
  for (const auto& j : o.jobs) args.insert(args.end(), {"--job", fs::absolute(j).string()});
  if (o.secure) args.insert(args.end(), {"--kit", (kits / "coordinator").string()});
  const auto coordinator_log = out / "logs" / "coordinator.log";
  auto coordinator = spawn(args, coordinator_log);
  if (!coordinator) return coordinator.error();
  log->info("coordinator started (pid {}), log {}", *coordinator, coordinator_log.string());

  std::string endpoint;
  for (const auto until = Clock::now() + std::chrono::seconds(60); endpoint.empty();) {
    if (auto text = files::read_all(endpoint_file); text && !text->empty()) {
      endpoint = text->substr(0, text->find('\n'));
      break;
    }
    if (const int rc = poll_exit(*coordinator); rc != -1) {
      return make_error("the coordinator exited (status " + std::to_string(rc) + ") before listening; its log:\n" +
                        tail(coordinator_log, 10));
    }
    if (Clock::now() > until) {
      stop_process(*coordinator, "coordinator", std::chrono::seconds(5));
      return make_error("the coordinator did not start listening within 60 s; log " + coordinator_log.string());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  // Every agent gets every core: jobs often train at one site while the others wait (a teacher).
  // When they all train, idle OpenMP workers must sleep rather than spin on the shared cores
  // (OMP_WAIT_POLICY=PASSIVE below).
  const int threads = o.threads_per_agent > 0 ? o.threads_per_agent : static_cast<int>(cores);
  std::map<std::string, pid_t> agents;
  for (const auto& site : sites) {
    const auto config = out / "sites" / (site + ".yaml");
    const std::string yaml = "site_id: " + site + "\ncoordinator: " + endpoint + "\ndata: " +
                             fs::absolute(o.data / site).string() + "\ncache_dir: " + (out / "cache" / site).string() +
                             "\ndevice: " + o.device + "\nthreads: " + std::to_string(threads) +
                             "\nheartbeat_ms: " + std::to_string(o.heartbeat_ms) + "\nreconnect_min_ms: 200\n"
                             "reconnect_max_ms: 5000\n" +
                             (o.secure ? "kit: " + (kits / "sites" / site).string() + "\n" : std::string());
    if (auto st = files::write_atomically(config, yaml); !st) return st.error();
    auto pid = spawn({"/usr/bin/env", "OMP_WAIT_POLICY=PASSIVE", agent_bin.string(), "run", "--config", config.string()},
                     out / "logs" / (site + ".log"));
    if (!pid) {
      stop_process(*coordinator, "coordinator", std::chrono::seconds(5));
      for (const auto& [name, p] : agents) stop_process(p, name, std::chrono::seconds(5));
      return pid.error();
    }
    agents[site] = *pid;
    log->info("agent {} started (pid {}, {} threads)", site, *pid, threads);
  }

  Follower follower(coordinator_log);
  int coordinator_rc = -1;
  std::set<std::string> reported;
  while ((coordinator_rc = poll_exit(*coordinator)) == -1) {
    if (o.show_progress) follower.poll();
    if (o.on_poll) o.on_poll();
    for (const auto& [site, pid] : agents) {
      if (!reported.count(site) && kill(pid, 0) == 0 && poll_exit(pid) != -1) {
        reported.insert(site);
        log->warn("agent {} exited early; see {}", site, (out / "logs" / (site + ".log")).string());
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (o.show_progress) follower.poll();
  for (const auto& [site, pid] : agents) stop_process(pid, "agent " + site, std::chrono::seconds(30));
  if (coordinator_rc != 0) {
    return make_error("the coordinator failed (status " + std::to_string(coordinator_rc) + "); its log ends:\n" +
                      tail(coordinator_log, 12));
  }

  // Merge every job's results, in job-folder order.
  std::string merged;
  std::vector<fs::path> csvs;
  for (const auto& entry : fs::directory_iterator(out / "jobs")) {
    if (fs::exists(entry.path() / "results.csv")) csvs.push_back(entry.path() / "results.csv");
  }
  std::sort(csvs.begin(), csvs.end());
  for (const auto& csv : csvs) {
    auto text = files::read_all(csv);
    if (!text) return text.error();
    const auto body = text->find('\n');
    if (merged.empty()) merged = text->substr(0, body + 1);
    if (body != std::string::npos) merged += text->substr(body + 1);
  }
  ConsortiumResult result;
  result.results_csv = out / "results.csv";
  if (auto st = files::write_atomically(result.results_csv, merged); !st) return st.error();
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

}  // namespace fedda::simulation
