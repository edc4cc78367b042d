#include "fedda/experiment/consortium.h"

#include <signal.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "fedda/admin/client.h"
#include "fedda/common/config.h"
#include "fedda/common/files.h"
#include "fedda/common/kit.h"
#include "fedda/common/log.h"
#include "fedda/common/process.h"
#include "fedda/imaging/dataset.h"
#include "fedda/imaging/subject_index.h"
#include "fedda/site_agent/site_config.h"

namespace fedda::experiment {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

constexpr const char* kOperator = "local";

// Exit status of `pid` if it has ended, else -1 (-2 when it was killed by a signal).
int poll_exit(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, WNOHANG) != pid) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return -2;
}

// SIGTERM, then SIGKILL after `grace`; the exit status (-2: killed).
int stop_process(pid_t pid, const std::string& name, std::chrono::seconds grace) {
  if (const int rc = poll_exit(pid); rc != -1) return rc;
  kill(pid, SIGTERM);
  const auto until = Clock::now() + grace;
  while (Clock::now() < until) {
    if (const int rc = poll_exit(pid); rc != -1) return rc;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  log::get("consortium")->warn("{} did not stop within {} s of SIGTERM; killing it", name, grace.count());
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return -2;
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

std::vector<JobView> parse_jobs(const std::string& text) {
  std::vector<JobView> out;
  const auto list = json::parse(text, nullptr, false);
  if (!list.is_array()) return out;
  for (const auto& j : list) {
    JobView v;
    v.id = j.value("id", "");
    v.state = j.value("state", "");
    v.error = j.value("error", "");
    v.activity = j.value("activity", "");
    v.round = j.value("round", 0);
    v.rounds = j.value("rounds", 0);
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace

Result<std::map<std::string, std::string>> site_pseudonyms(const fs::path& out, const std::string& clinic) {
  auto config = site_agent::read_site_config(out / "sites" / (clinic + ".yaml"));
  if (!config) return config.error();
  auto key = site_agent::pseudonym_key(*config);
  if (!key) return key.error();
  auto subjects = site_agent::site_subjects(*config);
  if (!subjects) return subjects.error();
  std::map<std::string, std::string> map;
  for (const auto& s : *subjects) map[site_agent::pseudonym(*key, s.subject)] = s.subject;
  return map;
}

fs::path executable_dir() {
  std::error_code ec;
  const auto self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::current_path() : self.parent_path();
}

struct LocalConsortium::Impl {
  ConsortiumOptions o;
  fs::path out;
  pid_t coordinator = -1;
  std::map<std::string, pid_t> agents;
  std::map<std::string, imaging::DataSource> layouts;  // each clinic folder's, as its agent reads it
  std::set<std::string> reported;
  std::unique_ptr<admin::Client> client;
  std::unique_ptr<Follower> follower;
  bool stopped = false;

  ~Impl() {
    if (auto st = stop_all(); !st) log::get("consortium")->warn("{}", st.error().message);
  }

  fs::path coordinator_log() const { return out / "logs" / "coordinator.log"; }

  // `site`'s agent: its site.yaml (its clinic's layout, the coordinator's endpoint, its kit and
  // the root it pins) and pseudonym key written, then the agent started.
  Status start_agent(const std::string& site, const std::string& endpoint, int threads, const std::string& pin);

  Status check_processes() {
    if (const int rc = poll_exit(coordinator); rc != -1) {
      coordinator = -1;
      return make_error("the coordinator exited (status " + std::to_string(rc) + "); its log ends:\n" +
                        tail(coordinator_log(), 12));
    }
    for (const auto& [site, pid] : agents) {
      if (!reported.count(site) && kill(pid, 0) == 0 && poll_exit(pid) != -1) {
        reported.insert(site);
        log::get("consortium")->warn("agent {} exited early; see {}", site, (out / "logs" / (site + ".log")).string());
      }
    }
    return Status::success();
  }

  Status stop_all() {
    if (stopped) return Status::success();
    stopped = true;
    client.reset();
    for (const auto& [site, pid] : agents) stop_process(pid, "agent " + site, std::chrono::seconds(30));
    if (coordinator > 0) {
      const int rc = stop_process(coordinator, "coordinator", std::chrono::seconds(60));
      if (rc != 0) return make_error("the coordinator stopped with status " + std::to_string(rc) + "; see " + coordinator_log().string());
    }
    return Status::success();
  }
};

namespace {

// Each clinic folder of `data` in whatever layout fedda-sim generate --layout wrote it, by name;
// its agent reads it through the same subject index a hospital's agent uses.
Result<std::map<std::string, imaging::DataSource>> clinic_layouts(const fs::path& data) {
  std::map<std::string, imaging::DataSource> layouts;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(data, ec)) {
    const auto name = entry.path().filename().string();
    if (!entry.is_directory() || name.rfind('.', 0) == 0) continue;
    auto source = imaging::detect_data_source(entry.path());
    if (source) layouts[name] = *source;
  }
  if (ec) return make_error(data.string() + ": " + ec.message());
  if (layouts.empty()) return make_error(data.string() + ": no clinic folders (fedda-sim generate writes them)");
  return layouts;
}

// The consortium's kits in `kits` (made once, kept across runs): root, coordinator, one per site
// and the harness's operator.
Status provision_kits(const fs::path& kits, const fs::path& data, const std::vector<std::string>& sites) {
  if (!fs::exists(kits / "root")) {
    kit::ProvisionOptions p{"local-" + data.filename().string(), "tcp://127.0.0.1:0", sites, kits, {kOperator}, {}};
    if (auto st = kit::provision(p); !st) return st;
  }
  for (const auto& s : sites) {
    if (!fs::exists(kits / "sites" / s)) {
      if (auto st = kit::provision_site(kits, s); !st) return st;
    }
  }
  if (!fs::exists(kits / "operators" / kOperator)) return kit::add_operator(kits, kOperator);  // kits made before operators
  return Status::success();
}

}  // namespace

Status LocalConsortium::Impl::start_agent(const std::string& site, const std::string& endpoint, int threads,
                                          const std::string& pin) {
  const auto kits = out / "kits";
  const auto agent_bin = o.bin_dir / "fedda-agent";
  const auto config = out / "sites" / (site + ".yaml");
  const auto& layout = layouts.at(site);
  std::string layout_keys = "data_layout: " + layout.layout + "\n";
  if (!layout.bids_labels.empty()) layout_keys += "bids_labels: " + layout.bids_labels + "\n";
  if (!layout.dicom_labels.empty()) layout_keys += "dicom_labels: " + fs::absolute(layout.dicom_labels).string() + "\n";
  const std::string yaml = "site_id: " + site + "\ncoordinator: " + endpoint + "\ndata: " +
                           fs::absolute(layout.path).string() + "\n" + layout_keys + "cache_dir: " + (out / "cache" / site).string() +
                           "\ndevice: " + o.device + "\nthreads: " + std::to_string(threads) +
                           "\nheartbeat_ms: " + std::to_string(o.heartbeat_ms) + "\nreconnect_min_ms: 200\n"
                           "reconnect_max_ms: 5000\n" +
                           (o.secure ? "kit: " + (kits / "sites" / site).string() + "\nroot_fingerprint: " + pin + "\n"
                                     : std::string());
  if (auto st = files::write_atomically(config, yaml); !st) return st.error();
  // The site's pseudonym key exists before its agent starts, so this harness and the agent
  // never each make one (without a kit it lives in the site's cache).
  auto site_config = site_agent::read_site_config(config);
  if (!site_config) return site_config.error();
  if (auto key = site_agent::pseudonym_key(*site_config); !key) return key.error();
  auto pid = process::spawn({"/usr/bin/env", "OMP_WAIT_POLICY=PASSIVE", agent_bin.string(), "run", "--config", config.string()},
                   out / "logs" / (site + ".log"));
  if (!pid) return pid.error();
  agents[site] = *pid;
  log::get("consortium")->info("agent {} started (pid {}, {} threads)", site, *pid, threads);
  return Status::success();
}

LocalConsortium::LocalConsortium(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LocalConsortium::~LocalConsortium() = default;
admin::Client& LocalConsortium::admin() { return *impl_->client; }
fs::path LocalConsortium::jobs_dir() const { return impl_->out / "jobs"; }
Status LocalConsortium::stop() { return impl_->stop_all(); }

Result<std::unique_ptr<LocalConsortium>> LocalConsortium::start(const ConsortiumOptions& o) {
  auto log = log::get("consortium");
  auto impl = std::make_unique<Impl>();
  impl->o = o;
  auto layouts = clinic_layouts(o.data);
  if (!layouts) return layouts.error();
  std::vector<std::string> sites = o.sites;
  if (sites.empty()) {
    for (const auto& [clinic, layout] : *layouts) sites.push_back(clinic);  // in name order
  }
  for (const auto& s : sites) {
    if (!layouts->count(s)) return make_error("site '" + s + "' has no clinic folder in " + o.data.string());
  }
  impl->layouts = *layouts;
  if (o.bin_dir.empty()) return make_error("the folder of fedda's executables is not set");
  const auto coordinator_bin = o.bin_dir / "fedda-coordinator", agent_bin = o.bin_dir / "fedda-agent";
  for (const auto& b : {coordinator_bin, agent_bin}) {
    if (!fs::exists(b)) return make_error(b.string() + ": not found (build fedda first)");
  }
  std::error_code ec;
  for (const char* sub : {"sites", "logs", "jobs", "cache"}) fs::create_directories(o.out / sub, ec);
  if (ec) return make_error(o.out.string() + ": cannot create: " + ec.message());
  const auto out = fs::absolute(o.out);
  impl->out = out;
  const auto endpoint_file = out / "coordinator.endpoint";
  fs::remove(endpoint_file, ec);

  const auto kits = out / "kits";
  if (o.secure) {
    if (auto st = provision_kits(kits, o.data, sites); !st) return make_error("provisioning kits: " + st.error().message);
  }
  std::vector<std::string> args = {coordinator_bin.string(), "serve", "--bind", "tcp://127.0.0.1:0", "--endpoint-file",
                                   endpoint_file.string(), "--state", out.string(),
                                   "--heartbeat-ms", std::to_string(o.heartbeat_ms)};
  if (!o.http.empty()) args.insert(args.end(), {"--http", o.http});
  if (o.secure) {
    args.insert(args.end(), {"--kit", (kits / "coordinator").string()});
  } else {
    std::string registry;
    for (const auto& s : sites) registry += (registry.empty() ? "" : ",") + s;
    args.insert(args.end(), {"--insecure", "--sites", registry});
  }
  auto coordinator = process::spawn(args, impl->coordinator_log());
  if (!coordinator) return coordinator.error();
  impl->coordinator = *coordinator;
  log->info("coordinator started (pid {}), log {}", *coordinator, impl->coordinator_log().string());

  std::string endpoint, admin_endpoint;
  for (const auto until = Clock::now() + std::chrono::seconds(60);;) {
    if (auto text = files::read_all(endpoint_file); text && std::count(text->begin(), text->end(), '\n') >= 2) {
      const auto first = text->find('\n');
      endpoint = text->substr(0, first);
      admin_endpoint = text->substr(first + 1, text->find('\n', first + 1) - first - 1);
      break;
    }
    if (auto st = impl->check_processes(); !st) return make_error(st.error().message);
    if (Clock::now() > until) return make_error("the coordinator did not start listening within 60 s; log " + impl->coordinator_log().string());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!o.http.empty()) {
    const auto read = files::read_all(endpoint_file);
    const std::string text = read ? *read : std::string();
    const auto lines = std::count(text.begin(), text.end(), '\n');
    const auto url = lines >= 3 ? text.substr(text.rfind('\n', text.size() - 2) + 1) : std::string();
    std::string token;
    if (o.secure) {
      if (auto coordinator_kit = kit::load_coordinator_kit(kits / "coordinator")) {
        if (auto t = kit::status_page_token(*coordinator_kit)) token = "/?token=" + *t;
      }
    }
    log->info("status page: {}{}", url.empty() ? "(not reported)" : url.substr(0, url.size() - 1), token);
  }
  admin::ClientOptions co;
  co.endpoint = admin_endpoint;
  co.name = kOperator;
  if (o.secure) co.kit = kits / "operators" / kOperator;
  auto client = admin::Client::connect(co);
  if (!client) return client.error();
  impl->client = std::move(*client);

  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  // Every agent gets every core: jobs often train at one site while the others wait (a teacher).
  // When they all train, idle OpenMP workers must sleep rather than spin on the shared cores
  // (OMP_WAIT_POLICY=PASSIVE below).
  const int threads = o.threads_per_agent > 0 ? o.threads_per_agent : static_cast<int>(cores);
  // The agents pin the root of the kits made above, as a site pins the one sent to it.
  auto pin = o.secure ? kit::root_fingerprint(kits / "root" / "root.pub") : Result<std::string>(std::string());
  if (!pin) return make_error("provisioning kits: " + pin.error().message);
  for (const auto& site : sites) {
    if (auto st = impl->start_agent(site, endpoint, threads, *pin); !st) return st.error();  // the destructor stops what started
  }
  if (o.show_progress) impl->follower = std::make_unique<Follower>(impl->coordinator_log());
  return std::unique_ptr<LocalConsortium>(new LocalConsortium(std::move(impl)));
}

Result<std::vector<JobView>> LocalConsortium::jobs() {
  protocol::AdminRequest r;
  r.command = protocol::admin_command_name(protocol::AdminCommand::jobs);
  auto reply = impl_->client->call(r);
  if (!reply) return reply.error();
  return parse_jobs(reply->json);
}

Result<std::string> LocalConsortium::submit(const fs::path& job_file) {
  auto mapping = config::Mapping::load(job_file);
  if (!mapping) return mapping.error();
  std::string id;
  mapping->get("id", id);
  auto listed = jobs();
  if (!listed) return listed.error();
  for (const auto& j : *listed) {
    if (j.id != id) continue;
    if (j.state == "failed" || j.state == "aborted") {
      protocol::AdminRequest r;
      r.command = protocol::admin_command_name(protocol::AdminCommand::resume);
      r.target = id;
      if (auto reply = impl_->client->call(r); !reply) return make_error(job_file.string() + ": " + reply.error().message);
    }
    return id;
  }
  auto reply = impl_->client->submit(job_file);
  if (!reply) return make_error(job_file.string() + ": " + reply.error().message);
  return json::parse(reply->json).at("id").get<std::string>();
}

Result<std::map<std::string, JobView>> LocalConsortium::wait(const std::vector<std::string>& ids,
                                                              const std::function<void(const std::vector<JobView>&)>& on_poll) {
  auto& m = *impl_;
  for (;;) {
    if (m.follower) m.follower->poll();
    if (auto st = m.check_processes(); !st) return st.error();
    auto listed = jobs();
    if (!listed) return listed.error();
    if (on_poll) on_poll(*listed);
    std::map<std::string, JobView> ended;
    for (const auto& j : *listed) {
      if (std::count(ids.begin(), ids.end(), j.id) && (j.state == "finished" || j.state == "failed" || j.state == "aborted")) {
        ended[j.id] = j;
      }
    }
    if (ended.size() == ids.size()) {
      if (m.follower) m.follower->poll();
      return ended;
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

Result<ConsortiumResult> run_consortium(const ConsortiumOptions& o, const std::vector<fs::path>& jobs) {
  const auto start = Clock::now();
  if (jobs.empty()) return make_error("no job files given");
  for (const auto& j : jobs) {
    if (!fs::exists(j)) return make_error(j.string() + ": job file not found");
  }
  auto consortium = LocalConsortium::start(o);
  if (!consortium) return consortium.error();
  std::vector<std::string> ids;
  for (const auto& j : jobs) {
    auto id = (*consortium)->submit(j);
    if (!id) return id.error();
    ids.push_back(*id);
  }
  auto ended = (*consortium)->wait(ids);
  if (!ended) return ended.error();
  if (auto st = (*consortium)->stop(); !st) return st.error();
  for (const auto& id : ids) {
    const auto& j = ended->at(id);
    if (j.state != "finished") return make_error("job " + id + " " + j.state + (j.error.empty() ? "" : ": " + j.error));
  }
  // Merge the jobs' results, in submission order.
  std::string merged;
  for (const auto& id : ids) {
    auto text = files::read_all((*consortium)->jobs_dir() / id / "results.csv");
    if (!text) continue;
    const auto body = text->find('\n');
    if (merged.empty()) merged = text->substr(0, body + 1);
    if (body != std::string::npos) merged += text->substr(body + 1);
  }
  ConsortiumResult result;
  result.results_csv = fs::absolute(o.out) / "results.csv";
  if (auto st = files::write_atomically(result.results_csv, merged); !st) return st.error();
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

}  // namespace fedda::experiment
