#include "fedda/coordinator/service.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "fedda/common/files.h"
#include "fedda/common/kit.h"
#include "service_impl.h"

namespace fedda::coordinator {
namespace fs = std::filesystem;
using protocol::MessageType;
using nlohmann::json;

namespace {

// One coordinator per state folder: an exclusive lock on STATE/coordinator.lock, held for the
// service's life (the kernel drops it when the process dies, however it dies). A second
// coordinator started on the same folder would run the same jobs twice and tear their files.
Result<int> lock_state(const fs::path& state) {
  std::error_code ec;
  fs::create_directories(state, ec);
  if (ec) return make_error(state.string() + ": cannot create: " + ec.message());
  const auto path = state / "coordinator.lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return make_error(path.string() + ": cannot open: " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {};
    const auto n = ::pread(fd, pid, sizeof pid - 1, 0);
    ::close(fd);
    const std::string holder = n > 0 ? std::string(pid, static_cast<std::size_t>(n)) : std::string("?");
    return make_error(state.string() + " is in use by another coordinator (pid " +
                      holder.substr(0, holder.find('\n')) + "); stop it first, or give another --state");
  }
  const std::string text = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, text.data(), text.size(), 0) < 0) {}  // the pid is for people only
  return fd;
}

bool is_loopback(const std::string& endpoint) {
  return endpoint.rfind("tcp://127.", 0) == 0 || endpoint.rfind("tcp://localhost:", 0) == 0 ||
         endpoint.rfind("tcp://[::1]:", 0) == 0 || endpoint.rfind("ipc://", 0) == 0 || endpoint.rfind("inproc://", 0) == 0;
}

}  // namespace

Service::Impl::~Impl() {
  zap_stop = true;
  if (zap.joinable()) zap.join();
  if (state_lock >= 0) ::close(state_lock);
}

std::vector<std::string> Service::Impl::job_sites(const JobRecord& job) const {
  const auto& s = job.definition.spec;
  std::vector<std::string> out = s.sites;
  if (s.evaluate) out.insert(out.end(), s.evaluation_sites.begin(), s.evaluation_sites.end());
  return out;
}

// Starts the queued (or, after a restart, running) jobs whose turn it is: in queue order, a job
// starts when none of its sites is used by a running job or wanted by an earlier waiting one,
// and its teacher job (if any) has finished.
void Service::Impl::schedule(bool draining) {
  std::set<std::string> taken;
  for (const auto& [id, run] : runs) {
    for (const auto& s : job_sites(*jobs->find(id))) taken.insert(s);
  }
  for (auto* job : jobs->ordered()) {
    if (terminal(job->state) || runs.count(job->id())) continue;
    const auto sites = job_sites(*job);
    const bool free = std::none_of(sites.begin(), sites.end(), [&](const auto& s) { return taken.count(s) > 0; });
    for (const auto& s : sites) taken.insert(s);
    if (draining || !free) continue;
    const auto& teacher = job->definition.teacher;
    if (teacher.rfind("job:", 0) == 0) {
      const auto* source = jobs->find(teacher.substr(4));
      if (!source || source->state == JobState::failed) {
        const std::string why = "its teacher job '" + teacher.substr(4) + "' " + (source ? "failed" : "is not in the queue");
        log->error("job {} failed: {}", job->id(), why);
        if (auto st = jobs->set_state(*job, JobState::failed, why); !st) log->error("job {}: {}", job->id(), st.error().message);
        continue;
      }
      if (source->state != JobState::finished) continue;  // waits for it
    }
    if (auto st = jobs->set_state(*job, JobState::running); !st) {
      log->error("job {}: {}", job->id(), st.error().message);
      continue;
    }
    auto run = std::make_unique<JobRun>(*job, *this);
    log->info("job {} ({}) starting{}", job->id(), protocol::job_type_name(job->definition.spec.type),
              job->finished_round ? " (resuming)" : "");
    if (auto st = run->start(); !st) {
      log->error("job {} failed: {}", job->id(), st.error().message);
      if (auto saved = jobs->set_state(*job, JobState::failed, st.error().message); !saved) {
        log->error("job {}: {}", job->id(), saved.error().message);
      }
      continue;
    }
    runs[job->id()] = std::move(run);
  }
}

void Service::Impl::tick_runs() {
  for (auto it = runs.begin(); it != runs.end();) {
    it->second->tick();
    it = it->second->done() ? runs.erase(it) : std::next(it);
  }
}

bool Service::Impl::all_ended(const std::vector<std::string>& ids, bool& all_finished) {
  all_finished = true;
  for (const auto& id : ids) {
    const auto* job = jobs->find(id);
    if (!job || !terminal(job->state)) return false;
    all_finished = all_finished && job->state == JobState::finished;
  }
  return true;
}

int Service::Impl::run_loop(const std::vector<std::string>& until_done) {
  bool draining = false;
  Clock::time_point drain_until{};
  int rc = 0;
  for (;;) {
    if (stopping && !draining) {
      draining = true;
      drain_until = Clock::now() + options.drain_timeout;
      log->info("stopping: {} running job(s) finish their current round first (up to {} s)", runs.size(),
                options.drain_timeout.count());
      for (auto& [id, run] : runs) run->drain();
    }
    tick_runs();
    schedule(draining);
    tick_runs();  // a job that just started offers and, if its sites are ready, opens its round
    if (draining && (runs.empty() || Clock::now() >= drain_until)) {
      if (!runs.empty()) log->warn("drain timeout: {} job(s) stop mid-round; they resume from their last finished round", runs.size());
      break;
    }
    bool all_finished = true;
    if (!until_done.empty() && runs.empty() && all_ended(until_done, all_finished)) {
      rc = all_finished ? 0 : 1;
      break;
    }
    pump(Clock::now() + std::chrono::milliseconds(200));
  }
  const std::string reason = draining ? "coordinator stopping" : "all jobs finished";
  for (const auto& [id, site] : registry.all()) {
    if (site.alive) send_body(site.routing, MessageType::goodbye, "", 0, protocol::Goodbye{reason});
  }
  return rc;
}

Service::Service(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Service::~Service() = default;
std::string Service::endpoint() const { return impl_->endpoint; }
std::string Service::admin_endpoint() const { return impl_->admin_endpoint; }
std::string Service::http_url() const { return impl_->http ? impl_->http->url() : std::string(); }
void Service::stop() { impl_->stopping = true; }
int Service::run(const std::vector<std::string>& until_done) { return impl_->run_loop(until_done); }

Result<std::unique_ptr<Service>> Service::start(const ServiceOptions& options) {
  auto impl = std::make_unique<Impl>();
  auto& m = *impl;
  m.options = options;
  m.allowed.insert(options.allowed_sites.begin(), options.allowed_sites.end());
  std::string admin_bind = options.admin_bind;
  if (admin_bind.empty()) {
    auto derived = kit::default_admin_endpoint(options.bind);
    if (!derived) return make_error("--admin-bind: " + derived.error().message + "; give the admin endpoint");
    admin_bind = *derived;
  }
  if (options.kit.empty()) {
    if (!options.insecure) {
      return make_error("no consortium kit (--kit): refusing to run open to any peer; give the coordinator's kit "
                        "(fedda-admin provision), or --insecure for a trusted test network");
    }
    if (!is_loopback(options.bind) || !is_loopback(admin_bind)) {
      return make_error("--insecure binds loopback addresses only (" + options.bind + ", " + admin_bind + ")");
    }
    m.log->warn("INSECURE: {}", kInsecureNotice);
  } else {
    auto loaded = kit::load_coordinator_kit(options.kit);
    if (!loaded) return loaded.error();
    m.consortium = std::move(*loaded);
    if (!zmq_has("curve")) return make_error("this libzmq has no CURVE support");
  }
  auto lock = lock_state(options.state);
  if (!lock) return lock.error();
  m.state_lock = *lock;
  auto store = JobStore::open(options.state);
  if (!store) return store.error();
  m.jobs = std::move(*store);
  if (auto text = files::read_all(options.state / "revoked.json")) {
    try {
      const auto revoked = json::parse(*text);
      for (const auto& s : revoked.at("sites")) m.revoked_sites.insert(s.get<std::string>());
      for (const auto& s : revoked.value("operators", json::array())) m.revoked_operators.insert(s.get<std::string>());
    } catch (const std::exception& e) {
      return make_error((options.state / "revoked.json").string() + ": " + e.what());
    }
  }
  if (auto st = m.open_admission(); !st) return st.error();
  if (auto st = m.bind(admin_bind); !st) return st.error();
  m.admin_service = std::make_unique<AdminService>(m, options.state / "audit.jsonl");
  m.counters.started_ms = wall_ms();
  if (auto st = m.start_http(); !st) return st.error();
  if (!options.endpoint_file.empty()) {
    const std::string http_line = m.http ? m.http->url() + "\n" : "";
    if (auto st = files::write_atomically(options.endpoint_file, m.endpoint + "\n" + m.admin_endpoint + "\n" + http_line); !st) {
      return st.error();
    }
  }
  m.log->info("listening on {} (sites) and {} (operators); state in {}", m.endpoint, m.admin_endpoint, options.state.string());
  return std::unique_ptr<Service>(new Service(std::move(impl)));
}

Result<std::vector<std::string>> Service::enqueue(const std::vector<fs::path>& job_files) {
  auto& m = *impl_;
  std::vector<std::string> ids;
  for (const auto& file : job_files) {
    auto definition = read_job_file(file);
    if (!definition) return definition.error();
    const auto& spec = definition->spec;
    if (auto* existing = m.jobs->find(spec.id)) {
      const auto& before = existing->definition.spec;
      if (before.type != spec.type || before.sites != spec.sites || before.rounds != spec.rounds) {
        return make_error(file.string() + ": job '" + spec.id +
                          "' ran here before with different settings; use a new id or remove " +
                          m.jobs->dir(spec.id).string());
      }
      if (existing->state == JobState::finished) {
        m.log->info("job {} already finished ({} rounds); results in {}", spec.id, existing->finished_round,
                    m.jobs->dir(spec.id).string());
      } else if (existing->state == JobState::failed || existing->state == JobState::aborted) {
        if (auto st = m.resume(*existing, "local"); !st) return st.error();
      }
      ids.push_back(spec.id);
      continue;
    }
    auto text = files::read_all(file);
    if (!text) return text.error();
    auto job = m.submit(std::move(*definition), "local", *text, {});
    if (!job) return make_error(file.string() + ": " + job.error().message);
    ids.push_back((*job)->id());
  }
  return ids;
}

Result<std::string> status_token(const fs::path& kit_dir) {
  auto loaded = kit::load_coordinator_kit(kit_dir);
  if (!loaded) return loaded.error();
  return kit::status_page_token(*loaded);
}

}  // namespace fedda::coordinator
