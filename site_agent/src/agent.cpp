#include "fedda/site_agent/agent.h"

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include <fcntl.h>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "fedda/common/files.h"
#include "fedda/common/kit.h"
#include "fedda/common/log.h"
#include "fedda/common/recent_log.h"
#include "fedda/common/version.h"
#include "fedda/monitoring/http_server.h"
#include "fedda/monitoring/metrics.h"
#include "fedda/site_agent/egress.h"
#include "resources.h"
#include "secure_rounds.h"
#include "shared_logs.h"
#include "session.h"
#include "site_worker.h"

namespace fedda::site_agent {
using protocol::MessageType;

constexpr std::size_t kRecentLogLines = 2000;  // kept in memory where the policy shares log lines

// Two threads: the network loop (this one, in run(): the session, heartbeats, uploads) and the
// worker (offers and tasks with the training engine), so heartbeats go on while a round trains.
// They meet at `inbox` and `outbox` under `mutex`; the worker wakes the loop through a pipe.
struct Agent::Impl {
  SiteConfig config;
  std::shared_ptr<spdlog::logger> log = log::get("agent");
  std::atomic<bool> stopping{false};

  std::mutex mutex;
  std::condition_variable wake;
  std::deque<Inbound> inbox;
  std::deque<Outgoing> outbox;
  bool busy = false;
  bool worker_exit = false;
  int wake_pipe[2] = {-1, -1};

  // For metrics_listen: written by the network loop, read by the HTTP server's threads.
  struct Counters {
    std::atomic<int> state{0};  // 0 connecting, 1 joined, 2 reconnecting
    std::atomic<bool> training{false};
    std::atomic<std::uint64_t> connects{0}, bytes_sent{0}, bytes_received{0}, tasks{0}, updates{0}, failures{0},
        pending{0};
  } counters;
  std::string metrics_url;  // with metrics_listen, as bound

  std::string metrics_text() const {
    using monitoring::MetricType;
    monitoring::MetricsText m;
    const auto d = [](const std::atomic<std::uint64_t>& v) { return static_cast<double>(v.load()); };
    m.add("fedda_agent_build_info", MetricType::gauge, "The agent's version.", 1, {{"version", kVersion}, {"site", config.site_id}});
    m.add("fedda_agent_connected", MetricType::gauge, "1 while the coordinator has welcomed this agent.",
          counters.state == 1 ? 1 : 0);
    m.add("fedda_agent_connects_total", MetricType::counter, "Connections made to the coordinator (reconnects included).",
          d(counters.connects));
    m.add("fedda_agent_training", MetricType::gauge, "1 while a job offer or round task is being worked on.",
          counters.training ? 1 : 0);
    m.add("fedda_agent_tasks_received_total", MetricType::counter, "Job offers, round tasks and goodbyes received.",
          d(counters.tasks));
    m.add("fedda_agent_updates_sent_total", MetricType::counter, "Round updates offered to the coordinator.", d(counters.updates));
    m.add("fedda_agent_jobs_refused_total", MetricType::counter, "Jobs or rounds this site refused or failed (job_failed).",
          d(counters.failures));
    m.add("fedda_agent_jobs_pending_total", MetricType::counter, "Job offers held for the administrator's approval.",
          d(counters.pending));
    m.add("fedda_agent_bytes_sent_total", MetricType::counter, "Bytes of messages handed to the session.", d(counters.bytes_sent));
    m.add("fedda_agent_bytes_received_total", MetricType::counter, "Bytes of job offers and round tasks received.",
          d(counters.bytes_received));
    return m.text();
  }

  Result<std::unique_ptr<monitoring::HttpServer>> start_metrics() {
    if (config.metrics_listen.empty()) return std::unique_ptr<monitoring::HttpServer>();
    using monitoring::HttpRequest;
    using monitoring::HttpResponse;
    std::vector<monitoring::Route> routes = {
        {"/metrics", [this](const HttpRequest&) { return HttpResponse{200, monitoring::kMetricsContentType, metrics_text()}; }},
        {"/healthz", [](const HttpRequest&) { return HttpResponse{200, "application/json", "{\"ok\": true}"}; }}};
    auto server = monitoring::HttpServer::start(config.metrics_listen, std::move(routes), {}, "agent");
    if (!server) return make_error("metrics_listen: " + server.error().message);
    return server;
  }

  void worker_loop(SiteWorker& worker) {
    for (;;) {
      std::optional<Inbound> work;
      {
        std::unique_lock<std::mutex> lock(mutex);
        // Wakes for work, or once a second to see whether the administrator decided on an offer.
        wake.wait_for(lock, std::chrono::seconds(1), [&] { return worker_exit || !inbox.empty(); });
        if (worker_exit && inbox.empty()) return;
        if (!inbox.empty()) {
          work = std::move(inbox.front());
          inbox.pop_front();
        }
        busy = true;
      }
      counters.training = work.has_value();
      auto answers = work ? worker.handle(*work) : worker.check_approvals();
      {
        std::lock_guard<std::mutex> lock(mutex);
        for (auto& a : answers) outbox.push_back(std::move(a));
        busy = false;
      }
      counters.training = false;
      // Wake the network loop now rather than at its next poll timeout (a full pipe already wakes it).
      if (::write(wake_pipe[1], "!", 1) < 0) {}
    }
  }

  void close_pipe() {
    for (int& fd : wake_pipe) {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  }

  // The site's kit, if it has one; error when it is unusable or another site's.
  Result<std::optional<kit::SiteKit>> load_kit() const {
    if (config.kit.empty()) return std::optional<kit::SiteKit>();
    auto loaded = kit::load_site_kit(config.kit);
    if (!loaded) return make_error("kit: " + loaded.error().message);
    if (loaded->site_id != config.site_id) {
      return make_error("kit " + config.kit.string() + " was issued to site '" + loaded->site_id + "', not '" +
                        config.site_id + "'");
    }
    // A kit vouches only for itself (its manifest is checked against the root.pub it carries):
    // the root pinned in site.yaml is what tells a forged kit from the consortium's.
    if (!config.root_fingerprint.empty() && config.root_fingerprint != loaded->root_fingerprint) {
      return make_error("kit " + config.kit.string() + " is signed by root " + loaded->root_fingerprint +
                        ", not by the consortium root pinned in root_fingerprint (" + config.root_fingerprint + ")");
    }
    if (config.root_fingerprint.empty()) {  // without the pin a forged kit would be trusted: refused, as check does
      return make_error("root_fingerprint is not set in the site config: without it this site would trust whatever root its kit carries (this kit's is " +
                        loaded->root_fingerprint + "); pin the consortium root's fingerprint, sent to you apart from the kit");
    }
    log->info("site {}: consortium {}, CurveZMQ with the provisioned keys", config.site_id, loaded->consortium);
    return std::optional<kit::SiteKit>(std::move(*loaded));
  }

  SessionOptions session_options(const std::optional<kit::SiteKit>& site_kit) const {
    SessionOptions so;
    so.site_id = config.site_id;
    so.endpoint = config.coordinator;
    so.agent_version = kVersion;
    so.device = config.device;
    so.threads = config.threads;
    so.resources = [cache = config.cache_dir, device = config.device, precision = config.precision] {
      return site_resources(cache, device, precision);
    };
    so.heartbeat = std::chrono::milliseconds(config.heartbeat_ms);
    so.reconnect_min = std::chrono::milliseconds(config.reconnect_min_ms);
    so.reconnect_max = std::chrono::milliseconds(config.reconnect_max_ms);
    if (site_kit) so.curve = CurveKeys{site_kit->coordinator_curve_public, site_kit->site_curve_public, site_kit->site_curve_secret};
    return so;
  }

  static bool is_secagg(MessageType t) {
    return t == MessageType::secagg_keys || t == MessageType::secagg_roster || t == MessageType::secagg_relay ||
           t == MessageType::secagg_unmask;
  }

  void send_out(Session& session, Outgoing& o) {
    counters.bytes_sent += o.frames.body.size();
    if (o.type == MessageType::round_update) ++counters.updates;
    if (o.type == MessageType::job_failed) ++counters.failures;
    if (o.type == MessageType::job_pending) ++counters.pending;
    if (o.type == MessageType::round_update) {
      session.offer_update(o.job_id, o.round, std::move(o.frames), std::move(o.tensors), o.evaluation);
    } else {
      session.send(o.type, o.job_id, o.round, o.frames, o.tensors, o.detail);
    }
  }

  // An operator's `fedda-admin logs`: what policy share_logs lets leave of the recent lines
  // (shared_logs.h). The site's subjects are listed afresh, so that every id is taken out; when
  // they cannot be listed nothing is sent.
  Outgoing answer_logs(const Inbound& work) {
    auto request = protocol::decode_body<protocol::LogsRequest>(work.body);
    protocol::LogsReply reply;
    if (!request) {
      log->warn("dropped a malformed logs request: {}", request.error().message);
      reply.policy = config.policy.share_logs;
      reply.refused = "the request did not decode";
    } else if (config.policy.share_logs == "none") {
      reply = shared_log_lines(*request, config.policy.share_logs, {}, {}, {});
    } else {
      auto subjects = site_subjects(config);
      std::vector<std::string> ids;
      if (subjects) {
        for (const auto& s : *subjects) ids.push_back(s.subject);
        reply = shared_log_lines(*request, config.policy.share_logs, log::recent_lines(), ids, config.data.string());
      } else {
        reply.request = request->request;
        reply.policy = config.policy.share_logs;
        reply.refused = "this site could not list its subjects to take them out of its log lines, so none is sent";
        log->warn("logs asked for: {}; nothing sent", subjects.error().message);
      }
    }
    log->info("logs asked for by the coordinator{}: {} lines sent (share_logs: {}){}",
              request && !request->job.empty() ? " (job " + request->job + ")" : "", reply.lines.size(),
              config.policy.share_logs, reply.refused.empty() ? "" : "; " + reply.refused);
    return make_outgoing(config.site_id, MessageType::logs_reply, "", 0, reply, {},
                         std::to_string(reply.lines.size()) + " log lines (share_logs: " + config.policy.share_logs + ")");
  }

  // Hands the session's work to the worker (secure aggregation's stages to `secure`, here: they
  // come while the worker trains), and the answers to the session.
  void exchange(Session& session, SecureRounds& secure, bool stopping_now) {
    for (auto& work : session.poll(std::chrono::milliseconds(50), wake_pipe[0])) {
      if (work.header.type == MessageType::logs_request) {  // answered here: the worker may be training
        auto answer = answer_logs(work);
        send_out(session, answer);
        continue;
      }
      if (is_secagg(work.header.type)) {
        for (auto& o : secure.handle(work)) send_out(session, o);
        continue;
      }
      if (work.header.type == MessageType::goodbye) secure.forget(work.header.job_id);
      if (stopping_now && work.header.type != MessageType::goodbye) {
        log->info("stopping: {} for job {} not started", protocol::type_name(work.header.type), work.header.job_id);
        continue;
      }
      ++counters.tasks;
      counters.bytes_received += work.body.size();
      {
        std::lock_guard<std::mutex> lock(mutex);
        inbox.push_back(std::move(work));
      }
      wake.notify_one();
    }
    char drained[64];
    while (::read(wake_pipe[0], drained, sizeof drained) > 0) {}
    std::deque<Outgoing> out;
    {
      std::lock_guard<std::mutex> lock(mutex);
      out.swap(outbox);
    }
    for (auto& o : out) {
      if (o.type == MessageType::job_ready) secure.prepared(o.job_id, o.training_sites, o.steps_by_share);
      if (o.secure) {
        for (auto& masked : secure.update(std::move(o))) send_out(session, masked);
      } else {
        send_out(session, o);
      }
    }
  }

  // CACHE/status.json: the connection as `fedda-agent status` shows it.
  void write_status(const Session& session, const char* override_state = nullptr) {
    counters.state = session.state() == Session::State::joined ? 1 : session.state() == Session::State::connected ? 0 : 2;
    counters.connects = static_cast<std::uint64_t>(session.connects());
    const char* state = override_state ? override_state
                        : session.state() == Session::State::joined    ? "joined"
                        : session.state() == Session::State::connected ? "connecting"
                                                                       : "reconnecting";
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    nlohmann::json status = {{"site", config.site_id}, {"coordinator", config.coordinator}, {"state", state},
                             {"connects", session.connects()}, {"pid", static_cast<long>(::getpid())},
                             {"updated_ms", now}};
    if (!metrics_url.empty()) status["metrics"] = metrics_url + "/metrics";
    if (auto st = files::write_atomically(config.cache_dir / "status.json", status.dump(2) + "\n"); !st) {
      log->debug("{}", st.error().message);
    }
  }

  bool worker_busy() {
    std::lock_guard<std::mutex> lock(mutex);
    return busy;
  }

  // Once stop() was called: takes no new work and says whether the drain is over (the running
  // task finished and its update had a short grace period for its upload credit, or the drain
  // timeout passed). `stop_requested` is when the drain began.
  bool drained(Session& session, Clock::time_point& stop_requested) {
    if (stopping && stop_requested == Clock::time_point{}) {
      stop_requested = Clock::now();
      std::lock_guard<std::mutex> lock(mutex);
      inbox.clear();  // no new work; the running task may finish
      log->info("stopping: draining the current task (up to {:.0f} s)", config.drain_timeout_s);
    }
    if (stop_requested == Clock::time_point{}) return false;
    bool idle;
    {
      std::lock_guard<std::mutex> lock(mutex);
      idle = !busy && outbox.empty();
    }
    const bool timed_out = Clock::now() - stop_requested > std::chrono::duration<double>(config.drain_timeout_s);
    const bool uploaded = !session.holds_updates() || Clock::now() - stop_requested > std::chrono::seconds(5);
    return (idle && uploaded) || timed_out;
  }

  int run() {
    // The lines `fedda-admin logs` may be given, kept only where the policy shares any.
    if (config.policy.share_logs != "none") log::keep_recent_lines(kRecentLogLines);
    auto loaded = load_kit();
    if (!loaded) {
      log->error("{}", loaded.error().message);
      return 1;
    }
    const auto& site_kit = *loaded;
    auto metrics = start_metrics();
    if (!metrics) {
      log->error("{}", metrics.error().message);
      return 1;
    }
    if (*metrics) metrics_url = (*metrics)->url();
    if (::pipe2(wake_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
      log->error("cannot create the worker's wake-up pipe: {}", std::strerror(errno));
      return 1;
    }
    // Heap-held: a worker abandoned at the drain timeout may still be running when run() returns
    // (the caller then exits the process without unwinding).
    auto created = SiteWorker::create(config, site_kit);
    if (!created) {
      log->error("{}", created.error().message);
      close_pipe();
      return 1;
    }
    auto worker = std::move(*created);
    std::thread worker_thread([this, w = worker.get()] { worker_loop(*w); });
    const auto stop_worker = [&](bool join) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        worker_exit = true;
        inbox.clear();
      }
      wake.notify_all();
      if (join) {
        worker_thread.join();
        close_pipe();
      } else {
        worker_thread.detach();
        (void)worker.release();
      }
    };

    zmq::context_t context{1};
    AuditLog audit(config.cache_dir / "audit.jsonl");
    std::unique_ptr<Session> session;
    try {
      session = std::make_unique<Session>(context, session_options(site_kit), &audit);
    } catch (const zmq::error_t& e) {
      log->error("cannot connect to {}: {}", config.coordinator, e.what());
      stop_worker(true);
      return 1;
    }
    log->info("site {}: data {} ({} layout); connecting to {}", config.site_id, data_location(config), config.data_layout,
              config.coordinator);

    SecureRounds secure(config.site_id, site_kit);
    Clock::time_point stop_requested{}, next_status{};
    for (;;) {
      if (drained(*session, stop_requested)) break;
      exchange(*session, secure, stop_requested != Clock::time_point{});
      if (!session->refusal().empty()) {
        // Another agent runs with this site's kit: stop at once (nothing this one computes would
        // be taken), and exit 4 so a service manager does not start it again (the unit's
        // RestartPreventExitStatus).
        log->error("site {}: stopping: another agent with this site's kit was connected first; run one agent per "
                   "site kit", config.site_id);
        write_status(*session, "refused");
        session.reset();
        stop_worker(!worker_busy());  // clears the inbox; a running task is abandoned, not waited for
        return 4;
      }
      if (Clock::now() >= next_status) {
        write_status(*session);
        next_status = Clock::now() + std::chrono::seconds(2);
      }
    }
    write_status(*session, "stopped");
    session->say_goodbye("agent stopping");
    session.reset();
    if (worker_busy()) {
      log->warn("site {}: drain timeout passed; abandoning the running task", config.site_id);
      stop_worker(false);
      return 3;
    }
    stop_worker(true);
    log->info("site {}: stopped", config.site_id);
    return 0;
  }
};

Agent::Agent(SiteConfig config) : impl_(std::make_unique<Impl>()) { impl_->config = std::move(config); }
Agent::~Agent() = default;
int Agent::run() { return impl_->run(); }
void Agent::stop() { impl_->stopping = true; }

}  // namespace fedda::site_agent
