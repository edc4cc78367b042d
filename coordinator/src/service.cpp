#include "fedda/coordinator/service.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <atomic>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <thread>
#include <variant>

#include <nlohmann/json.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "admin_service.h"
#include "admission.h"
#include "duplicate_sessions.h"
#include "fedda/common/files.h"
#include "fedda/common/kit.h"
#include "fedda/common/crypto.h"
#include "fedda/common/log.h"
#include "fedda/common/version.h"
#include "job_store.h"
#include "log_requests.h"
#include "job_run.h"
#include "site_registry.h"
#include "status_api.h"

namespace fedda::coordinator {
namespace fs = std::filesystem;
using protocol::MessageType;
using protocol::RejectCode;
using nlohmann::json;

namespace {

constexpr const char* kInsecureNotice =
    "this coordinator runs without a consortium kit (--insecure): any peer can claim any site id, models are "
    "unsigned and traffic is not encrypted";

void release_shared(void*, void* hint) { delete static_cast<std::shared_ptr<const std::string>*>(hint); }

// A zmq message that references a shared body instead of copying it.
zmq::message_t shared_message(const std::shared_ptr<const std::string>& body) {
  auto* hold = new std::shared_ptr<const std::string>(body);
  return zmq::message_t(const_cast<char*>(body->data()), body->size(), release_shared, hold);
}

// The peer's address of a received frame (libzmq gives the host); "" where the transport has none.
std::string peer_address_of(const zmq::message_t& frame) {
  const char* address = zmq_msg_gets(frame.handle(), "Peer-Address");
  return address ? address : "";
}

// "ADDRESS, connected at HH:MM:SS" (local time) for a log line naming one of two connections.
std::string connection(const std::string& address, std::int64_t connected_ms) {
  const std::time_t t = static_cast<std::time_t>(connected_ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char at[16];
  std::strftime(at, sizeof at, "%H:%M:%S", &tm);
  return (address.empty() ? std::string("an unknown address") : address) + ", connected at " + at;
}

// ", from ADDRESS" for a log line, or nothing.
std::string from(const std::string& address) { return address.empty() ? "" : ", from " + address; }

// "tcp://host:0" -> "tcp://host:*" (libzmq's any-port wildcard).
std::string wildcard_port(std::string endpoint) {
  if (endpoint.size() > 2 && endpoint.compare(endpoint.size() - 2, 2, ":0") == 0) endpoint.replace(endpoint.size() - 1, 1, "*");
  return endpoint;
}

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

// How long an operator's `logs SITE` waits for the site's answer.
constexpr std::chrono::seconds kLogsTimeout{20};

bool is_loopback(const std::string& endpoint) {
  return endpoint.rfind("tcp://127.", 0) == 0 || endpoint.rfind("tcp://localhost:", 0) == 0 ||
         endpoint.rfind("tcp://[::1]:", 0) == 0 || endpoint.rfind("ipc://", 0) == 0 || endpoint.rfind("inproc://", 0) == 0;
}

}  // namespace

struct Service::Impl : JobHost, AdminBackend {
  ServiceOptions o;
  zmq::context_t context{1};
  zmq::socket_t router{context, zmq::socket_type::router};
  zmq::socket_t admin{context, zmq::socket_type::router};
  zmq::socket_t monitor{context, zmq::socket_type::pair};        // libzmq's connection events, for the log
  zmq::socket_t admin_monitor{context, zmq::socket_type::pair};  // the same for the admin endpoint
  std::string endpoint, admin_endpoint;
  std::shared_ptr<spdlog::logger> log = log::get("coordinator");
  std::optional<kit::CoordinatorKit> consortium;
  std::unique_ptr<Admission> admission;
  std::thread zap;
  std::atomic<bool> zap_stop{false};
  SiteRegistry registry;
  std::unique_ptr<JobStore> jobs;
  std::map<std::string, std::unique_ptr<JobRun>> runs;
  std::unique_ptr<AdminService> admin_service;
  LogRequests log_requests;  // operators' `logs SITE` waiting for the site's answer
  std::uint64_t sequence = 0;
  Clock::time_point next_heartbeat{};
  std::atomic<bool> stopping{false};
  std::set<std::string> allowed;  // without a kit: the registry (empty admits any id)
  std::set<std::string> revoked_sites, revoked_operators;
  std::map<std::string, std::pair<Clock::time_point, int>> handshake_failures;  // plane+event -> last logged, since
  ServiceCounters counters;  // for /metrics
  log::Budget peer_lines;    // warnings about what one peer sent: a bounded rate per peer and in all
  DuplicateSessions duplicates;  // two agents with one site's key, told from a restarted agent
  std::string peer_address;      // of the message being handled ("" where ZeroMQ has none)
  std::unique_ptr<StatusBridge> status;            // with --http: the HTTP threads' questions
  std::unique_ptr<monitoring::HttpServer> http;    // destroyed before the bridge and the context

  struct Upload {
    std::string site, job;
    int round = 0;
  };
  std::deque<Upload> upload_queue;
  std::map<std::string, Upload> uploading;  // site -> the upload it holds credit for

  int state_lock = -1;  // held while this service runs (lock_state)

  ~Impl() override {
    zap_stop = true;
    if (zap.joinable()) zap.join();
    if (state_lock >= 0) ::close(state_lock);
  }

  // ---- JobHost ------------------------------------------------------------------------------

  SiteRegistry& sites() override { return registry; }
  JobStore& store() override { return *jobs; }
  const kit::CoordinatorKit* kit() const override { return consortium ? &*consortium : nullptr; }
  Clock::duration start_timeout() const override { return o.start_timeout; }
  Clock::time_point now() const override { return Clock::now(); }

  protocol::Header header(MessageType type, const std::string& job_id, int round) {
    protocol::Header h;
    h.type = type;
    h.sender = protocol::kCoordinatorSender;
    h.job_id = job_id;
    h.round = round;
    h.sequence = ++sequence;
    return h;
  }

  // Sends never block: the ROUTER drops a message for a peer that is gone or whose queue is full
  // (the round's deadline then counts it missing).
  void send_to(zmq::socket_t& socket, const std::string& routing, protocol::Header h, zmq::message_t body,
               std::uint32_t crc, const std::string& signature = {}) {
    h.body_bytes = body.size();
    h.body_crc32 = crc;
    (&socket == &admin ? counters.bytes_sent_admin : counters.bytes_sent_sites) += body.size() + signature.size();
    try {
      socket.send(zmq::buffer(routing), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      socket.send(zmq::buffer(protocol::encode_header(h)), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      socket.send(body, signature.empty() ? zmq::send_flags::dontwait : zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      if (!signature.empty()) socket.send(zmq::buffer(signature), zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      log->warn("cannot send {}: {}", protocol::type_name(h.type), e.what());
    }
  }

  void send(const SiteInfo& site, MessageType type, const std::string& job, int round, const Broadcast& b) override {
    send_to(router, site.routing, header(type, job, round), shared_message(b.body), b.crc, b.signature);
  }

  template <typename Body>
  void send_body(const std::string& routing, MessageType type, const std::string& job, int round, const Body& body) {
    auto frames = protocol::encode(protocol::Header{}, body);
    send_to(router, routing, header(type, job, round), zmq::message_t(frames.body.data(), frames.body.size()),
            frames.body_crc32);
  }

  void send_empty(const std::string& routing, MessageType type, const std::string& job, int round) {
    send_to(router, routing, header(type, job, round), zmq::message_t(), crc32_of(std::string()));
  }

  void reject(const std::string& routing, RejectCode code, const std::string& reason) {
    if (code != RejectCode::say_hello_first && code != RejectCode::not_an_operator) ++counters.refused_hellos;
    send_body(routing, MessageType::reject, "", 0, protocol::Reject{code, reason});
  }

  log::Budget& log_budget() override { return peer_lines; }

  void queue_upload(const std::string& site, const std::string& job, int round) override {
    for (const auto& u : upload_queue) {
      if (u.site == site && u.job == job && u.round == round) return;
    }
    if (uploading.count(site)) return;
    upload_queue.push_back({site, job, round});
  }

  void forget_uploads(const std::string& site) {
    uploading.erase(site);
    upload_queue.erase(std::remove_if(upload_queue.begin(), upload_queue.end(), [&](const Upload& u) { return u.site == site; }),
                       upload_queue.end());
  }

  bool upload_wanted(const Upload& u) {
    const auto run = runs.find(u.job);
    const auto* site = registry.find(u.site);
    return run != runs.end() && site && site->alive && run->second->wants_upload(u.site, u.round);
  }

  // A few uploads at a time, so the coordinator's memory does not grow with the sites.
  void grant_uploads() {
    for (auto it = uploading.begin(); it != uploading.end();) {  // rounds that closed without it
      it = upload_wanted(it->second) ? std::next(it) : uploading.erase(it);
    }
    while (uploading.size() < static_cast<std::size_t>(o.max_concurrent_uploads) && !upload_queue.empty()) {
      const auto u = upload_queue.front();
      upload_queue.pop_front();
      if (!upload_wanted(u)) continue;
      uploading[u.site] = u;
      send_empty(registry.find(u.site)->routing, MessageType::upload, u.job, u.round);
    }
  }

  // ---- sites --------------------------------------------------------------------------------

  bool site_revoked(const std::string& id) const {
    return revoked_sites.count(id) || (admission && admission->revoked(id));
  }

  void mark_lost(const std::string& id, const std::string& why) {
    if (!registry.end_session(id)) return;
    log->warn("site {}: {}", id, why);
    forget_uploads(id);
    for (auto& [job, run] : runs) run->site_lost(id, why);
  }

  void handle_hello(const std::string& routing, const protocol::Header& h, const std::string& body) {
    auto hello = protocol::decode_body<protocol::Hello>(body);
    if (!hello) {
      // With a kit the header's sender is the key's site (checked before this); without, a claim.
      const std::string who = consortium ? "site " + h.sender : "a peer calling itself '" + h.sender + "'";
      if (const auto held = peer_lines.take(who)) {
        log->warn("dropped a malformed hello from {}: {}{}", who, hello.error().message,
                  held_back(*held));
      }
      return;
    }
    const auto& id = hello->site_id;
    if (id.empty() || id != h.sender) {
      log->warn("dropped hello whose site id '{}' differs from its sender '{}'", id, h.sender);
      return reject(routing, RejectCode::sender_mismatch, "site id and sender differ");
    }
    if (!kit::safe_id(id)) {
      log->warn("dropped hello with an invalid site id");
      return reject(routing, RejectCode::not_registered, "not a valid site id");
    }
    if (site_revoked(id)) {
      log->warn("refused site '{}': revoked", id);
      return reject(routing, RejectCode::revoked, "this site's key was revoked by the consortium");
    }
    if (!consortium && !allowed.empty() && !allowed.count(id)) {
      log->warn("refused site '{}': not in this consortium's registry", id);
      return reject(routing, RejectCode::not_registered, "site '" + id + "' is not registered with this consortium");
    }
    const auto* before = registry.find(id);
    const bool rejoin = before && before->alive;
    // Two agents with one kit, told from a restart by the agents' instances (duplicate_sessions.h).
    DuplicateSessions::Session current, first;
    if (rejoin) current = {before->instance, before->address, before->connected_ms};
    switch (duplicates.hello(id, hello->instance, rejoin ? &current : nullptr, &first)) {
      case DuplicateSessions::Verdict::refused: return refuse_second_agent(id, routing);
      case DuplicateSessions::Verdict::second_agent: refuse_later_of_two(id, first); break;
      case DuplicateSessions::Verdict::take_over: break;
    }
    forget_uploads(id);  // a restarted agent holds no update the old session was granted credit for
    auto& site = registry.begin_session(id, routing, h.sequence, hello->agent_version, hello->device, hello->threads);
    site.address = peer_address;
    site.instance = hello->instance;
    site.resources = hello->resources;
    log->info("site {} {} (agent {}, device {}, {} threads{})", id, rejoin ? "reconnected" : "joined",
              hello->agent_version, hello->device, hello->threads, from(peer_address));
    send_body(routing, MessageType::welcome, "", 0,
              protocol::Welcome{static_cast<std::int32_t>(o.heartbeat.count()), o.liveness});
    for (auto& [job, run] : runs) run->site_joined(site);
  }

  // The later of two agents with site `id`'s key, on `routing`: told why; it stops.
  void refuse_second_agent(const std::string& id, const std::string& routing) {
    reject(routing, RejectCode::duplicate_session,
           "another agent with site " + id + "'s key was connected first and still is; this one is refused: stop it "
           "(one agent per site kit)");
  }

  // Two agents with one site's key: `first` (whose session the current one replaced) has said
  // hello again, so it lives. The current session is the later agent's: refused, for good; the
  // hello being handled then takes the site back for the first.
  void refuse_later_of_two(const std::string& id, const DuplicateSessions::Session& first) {
    const auto* later = registry.find(id);
    log->warn("site {}: two connections with its key, from {} (first) and {} (second); keeping the first, refusing "
              "the second: one agent per site kit", id, connection(peer_address, first.connected_ms),
              connection(later->address, later->connected_ms));
    duplicates.refuse(id, later->instance);
    refuse_second_agent(id, later->routing);
    for (auto& [job, run] : runs) run->site_lost(id, "a second agent with its key, refused");
  }

  void handle_data(const std::string& routing, const protocol::Header& h, const std::string& body) {
    if (h.type == MessageType::hello) return handle_hello(routing, h, body);
    auto* site = registry.by_routing(routing);
    if (!site) {
      log->debug("dropped {} from a peer that has not said hello", protocol::type_name(h.type));
      return reject(routing, RejectCode::say_hello_first, "say hello first");
    }
    if (h.sender != site->id) {
      log->warn("site {}: dropped {} claiming to be from '{}'", site->id, protocol::type_name(h.type), h.sender);
      return;
    }
    if (!registry.accept(*site, h.sequence)) {
      log->warn("site {}: dropped {} with sequence {} (replayed or reordered; last {})", site->id,
                protocol::type_name(h.type), h.sequence, site->last_sequence);
      return;
    }
    switch (h.type) {
      case MessageType::heartbeat: return;
      case MessageType::goodbye: return mark_lost(site->id, "left (goodbye)");
      case MessageType::job_ready:
      case MessageType::job_failed:
      case MessageType::job_pending:
      case MessageType::update_ready:
      case MessageType::secagg_keys:
      case MessageType::secagg_shares:
      case MessageType::secagg_unmask:
      case MessageType::round_update: {
        const auto run = runs.find(h.job_id);
        if (run == runs.end()) break;
        if (h.type == MessageType::round_update) {
          const auto credit = uploading.find(site->id);
          if (credit == uploading.end() || credit->second.job != h.job_id || credit->second.round != h.round) {
            log->warn("site {}: update for round {} of {} discarded (no upload credit for it)", site->id, h.round, h.job_id);
            return;
          }
          uploading.erase(credit);
        } else if (h.type == MessageType::job_failed) {
          forget_uploads(site->id);
        }
        return run->second->handle(*site, h, body);
      }
      case MessageType::logs_reply: return handle_logs_reply(*site, body);
      default:
        log->warn("site {}: dropped unexpected {}", site->id, protocol::type_name(h.type));
        return;
    }
    log->warn("site {}: dropped {} for job '{}', which is not running", site->id, protocol::type_name(h.type), h.job_id);
  }

  // ---- operators ----------------------------------------------------------------------------

  void handle_admin(const std::string& routing, const std::string& authenticated, const std::string& header_frame,
                    const std::string& body) {
    auto h = protocol::decode_header(header_frame, body, o.max_message_bytes);
    if (!h) {
      log->warn("admin: dropped a malformed message: {}", h.error().message);
      return;
    }
    if (h->type != MessageType::admin_request) {
      log->warn("admin: dropped {} on the admin endpoint", protocol::type_name(h->type));
      return;
    }
    protocol::AdminReply reply;
    auto request = protocol::decode_body<protocol::AdminRequest>(body);
    if (!request) {
      reply.error = "malformed request: " + request.error().message;
    } else {
      const std::string who = consortium ? authenticated : (h->sender.empty() ? "anonymous" : h->sender) + " (unauthenticated)";
      if (request->command == protocol::admin_command::logs) return ask_site_logs(routing, h->sequence, who, *request);
      reply = admin_service->handle(who, *request);
    }
    reply_admin(routing, h->sequence, std::move(reply));
  }

  // The answer to the operator's request `sequence` on its connection `routing`.
  void reply_admin(const std::string& routing, std::uint64_t sequence, protocol::AdminReply reply) {
    if (!consortium) reply.notice = kInsecureNotice;
    auto frames = protocol::encode(protocol::Header{}, reply);
    auto rh = header(MessageType::admin_reply, "", 0);
    rh.sequence = sequence;  // the answer names the request it answers
    send_to(admin, routing, rh, zmq::message_t(frames.body.data(), frames.body.size()), frames.body_crc32);
  }

  // `logs SITE`: relayed to the site's agent; the operator is answered when the site's
  // logs_reply comes (handle_logs_reply) or kLogsTimeout after (expire_log_requests).
  void ask_site_logs(const std::string& routing, std::uint64_t sequence, const std::string& who,
                     const protocol::AdminRequest& request) {
    auto ask = admin_service->ask_logs(who, request);
    if (auto* refusal = std::get_if<protocol::AdminReply>(&ask)) return reply_admin(routing, sequence, std::move(*refusal));
    const auto& what = std::get<AdminService::LogsAsk>(ask);
    const auto id = log_requests.add({routing, sequence, who, request, what.site, Clock::now() + kLogsTimeout});
    if (id.empty()) {
      return reply_admin(routing, sequence,
                         admin_service->answer_logs(who, request, nullptr, "too many log requests wait for sites' answers; try again"));
    }
    send_body(registry.find(what.site)->routing, MessageType::logs_request, "", 0,
              protocol::LogsRequest{id, what.job, what.tail});
    log->info("admin: {} asked site {} for its log lines{}", who, what.site, what.job.empty() ? "" : " of job " + what.job);
  }

  void handle_logs_reply(const SiteInfo& site, const std::string& body) {
    auto reply = protocol::decode_body<protocol::LogsReply>(body);
    if (!reply) {
      log->warn("site {}: dropped a malformed logs_reply: {}", site.id, reply.error().message);
      return;
    }
    auto waiting = log_requests.take(reply->request, site.id);
    if (!waiting) {
      log->warn("site {}: dropped a logs_reply no operator waits for", site.id);
      return;
    }
    reply_admin(waiting->routing, waiting->sequence, admin_service->answer_logs(waiting->who, waiting->request, &*reply, ""));
  }

  void expire_log_requests() {
    if (log_requests.empty()) return;
    for (auto& w : log_requests.expired(Clock::now())) {
      const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(kLogsTimeout).count();
      reply_admin(w.routing, w.sequence,
                  admin_service->answer_logs(w.who, w.request, nullptr,
                                             "site " + w.site + " did not answer within " + std::to_string(seconds) + " s"));
    }
  }

  // ---- AdminBackend -------------------------------------------------------------------------

  const SiteRegistry& site_registry() const override { return registry; }

  std::set<std::string> known_sites() const override {
    std::set<std::string> ids = admission ? admission->site_ids() : allowed;
    for (const auto& [id, site] : registry.all()) ids.insert(id);
    return ids;
  }

  bool revoked(const std::string& site) const override { return site_revoked(site); }

  std::string operator_role(const std::string& name) const override {
    if (!consortium) return "lead";  // --insecure: whoever reaches the endpoint runs everything
    const auto it = consortium->operator_roles.find(name);
    return it == consortium->operator_roles.end() ? "lead" : it->second;
  }

  std::string activity(const std::string& job) const override {
    const auto it = runs.find(job);
    return it == runs.end() ? std::string() : it->second->activity();
  }

  std::optional<RoundSites> round_sites(const std::string& job) const override {
    const auto it = runs.find(job);
    return it == runs.end() ? std::nullopt : it->second->round_sites();
  }

  Status check_sites_known(const protocol::JobSpec& spec) {
    if (!consortium && allowed.empty()) return Status::success();
    for (const auto* list : {&spec.sites, &spec.evaluation_sites}) {
      for (const auto& s : *list) {
        const bool known = admission ? admission->knows_site(s) : allowed.count(s) > 0;
        if (!known) return make_error(std::string(list == &spec.sites ? "sites" : "evaluation_sites") + ": '" + s +
                                      "' is not a site of this consortium");
      }
    }
    return Status::success();
  }

  Result<JobRecord*> submit(JobDefinition definition, const std::string& by, const std::string& yaml,
                            const std::string& teacher_file) override {
    if (stopping) return make_error("the coordinator is shutting down");
    if (auto st = check_sites_known(definition.spec); !st) return st.error();
    auto job = jobs->add(std::move(definition), by, yaml, teacher_file);
    if (job) log->info("job {} queued (by {})", (*job)->id(), by);
    return job;
  }

  Status abort(JobRecord& job, const std::string& by) override {
    if (job.state == JobState::queued) {
      if (auto st = jobs->set_state(job, JobState::aborted, "aborted by " + by, by); !st) return st;
      log->warn("job {}: aborted by {} before it started", job.id(), by);
      return Status::success();
    }
    const auto run = runs.find(job.id());
    if (job.state != JobState::running || run == runs.end()) {
      return make_error("job '" + job.id() + "' is " + job_state_name(job.state) + "; only a queued or running job can be aborted");
    }
    log->warn("job {}: abort asked by {}; it stops after the current round", job.id(), by);
    run->second->abort(by);
    return Status::success();
  }

  Status resume(JobRecord& job, const std::string& by) override {
    if (job.state != JobState::aborted && job.state != JobState::failed) {
      return make_error("job '" + job.id() + "' is " + job_state_name(job.state) + "; only an aborted or failed job can be resumed");
    }
    if (auto st = jobs->set_state(job, JobState::queued, {}, by); !st) return st;
    log->info("job {}: resumed by {} (after round {})", job.id(), by, job.finished_round);
    return Status::success();
  }

  Status save_revocations() {
    json list = json::array();
    for (const auto& s : revoked_sites) list.push_back(s);
    json operators = json::array();
    for (const auto& s : revoked_operators) operators.push_back(s);
    return files::write_atomically(o.state / "revoked.json", json{{"sites", list}, {"operators", operators}}.dump(2) + "\n");
  }

  Status admit(const std::string& site, const std::string& by, const std::vector<protocol::NamedFile>& files) override {
    if (!kit::safe_id(site)) return make_error("'" + site + "' is not a valid site id");
    if (revoked_operators.count(site)) {  // an operator revoked before: admitted again
      revoked_operators.erase(site);
      if (auto st = save_revocations(); !st) return st;
      if (admission) admission->unrevoke_operator(site);
      log->warn("operator {}: admitted again by {}", site, by);
      return Status::success();
    }
    if (consortium) {
      std::string manifest, signature;
      for (const auto& f : files) {
        if (f.name == "manifest.json") manifest = f.bytes;
        if (f.name == "manifest.sig") signature = f.bytes;
      }
      bool kept = false;  // already in the state's admitted/
      if (manifest.empty()) {  // made beside the coordinator's kit (fedda-admin add-site)
        for (const auto& dir : {o.state / "admitted", consortium->dir / kit::kPendingSites, consortium->dir / "sites"}) {
          auto text = files::read_all(dir / (site + ".manifest.json"));
          auto sig = files::read_all(dir / (site + ".manifest.sig"));
          if (text && sig) {
            manifest = *text;
            signature = *sig;
            kept = dir == o.state / "admitted";
            break;
          }
        }
        if (manifest.empty()) {
          return make_error("no manifest for site '" + site + "' in " + (consortium->dir / kit::kPendingSites).string() +
                            "; send the site's manifest (fedda-admin admit SITE --manifest KIT/manifest.json)");
        }
      }
      auto holder = kit::verify_manifest(*consortium, manifest, signature);
      if (!holder) return make_error("site '" + site + "': " + holder.error().message);
      if (holder->role != "site" || holder->id != site) {
        return make_error("the manifest is of " + holder->role + " '" + holder->id + "', not of site '" + site + "'");
      }
      // The admission is the manifest kept in the state, written before it takes effect: it is
      // what a restart trusts (a manifest in the kit's pending-sites/ is not).
      if (!kept) {
        for (const auto& st : {files::write_atomically(o.state / "admitted" / (site + ".manifest.json"), manifest),
                               files::write_atomically(o.state / "admitted" / (site + ".manifest.sig"), signature)}) {
          if (!st) return st;
        }
      }
      admission->admit_site(holder->curve_public, site);
    } else if (!allowed.empty()) {
      allowed.insert(site);
    }
    revoked_sites.erase(site);
    if (auto st = save_revocations(); !st) return st;
    log->warn("site {}: admitted by {}", site, by);
    return Status::success();
  }

  Status revoke(const std::string& site, const std::string& by) override {
    if (!known_sites().count(site) && admission && admission->knows_operator(site)) {
      if (site == by) return make_error("operator '" + by + "' cannot revoke itself (another operator can)");
      revoked_operators.insert(site);
      if (auto st = save_revocations(); !st) return st;  // written before it takes effect
      admission->revoke_operator(site);
      log->warn("operator {}: revoked by {}", site, by);
      return Status::success();
    }
    if (!known_sites().count(site)) return make_error("no site or operator '" + site + "' in this consortium");
    revoked_sites.insert(site);
    if (auto st = save_revocations(); !st) return st;
    if (admission) admission->revoke(site);
    if (auto* s = registry.find(site); s && s->alive) {
      reject(s->routing, RejectCode::revoked, "this site's key was revoked by the consortium");
      mark_lost(site, "revoked by " + by + "; disconnected");
    }
    log->warn("site {}: revoked by {}", site, by);
    return Status::success();
  }

  // Site and operator keys admitted (the kit, sites admitted while serving, minus revoked
  // ones) and the ZAP handler that applies them, up before any socket binds: without one libzmq
  // admits anyone.
  Status open_admission() {
    if (!consortium) return Status::success();
    admission = std::make_unique<Admission>(*consortium, log);
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(o.state / "admitted", ec)) {  // admitted while serving
      if (entry.path().extension() != ".json") continue;
      auto text = files::read_all(entry.path());
      auto sig_path = entry.path();
      auto sig = files::read_all(sig_path.replace_extension(".sig"));
      if (!text || !sig) continue;
      auto holder = kit::verify_manifest(*consortium, *text, *sig);
      if (!holder) return make_error(entry.path().string() + ": " + holder.error().message);
      if (holder->role == "site") admission->admit_site(holder->curve_public, holder->id);
    }
    for (const auto& s : revoked_sites) admission->revoke(s);
    for (const auto& s : revoked_operators) admission->revoke_operator(s);
    auto handler = std::make_shared<zmq::socket_t>(context, zmq::socket_type::rep);
    try {
      handler->bind("inproc://zeromq.zap.01");
    } catch (const zmq::error_t& e) {
      return make_error(std::string("cannot start the ZAP handler: ") + e.what());
    }
    auto* gate = admission.get();
    auto* stop = &zap_stop;
    zap = std::thread([gate, handler, stop] { gate->serve(*handler, *stop); });
    log->info("consortium {}: CurveZMQ on, {} provisioned sites, {} operators", consortium->consortium,
              admission->site_ids().size(), consortium->operators.size());
    return Status::success();
  }

  Status bind(const std::string& admin_bind) {
    try {
      const auto configure = [&](zmq::socket_t& socket, const char* domain) {
        if (consortium) {
          socket.set(zmq::sockopt::curve_server, true);
          socket.set(zmq::sockopt::curve_secretkey, consortium->curve_secret);
          socket.set(zmq::sockopt::zap_domain, domain);
        }
        socket.set(zmq::sockopt::linger, 0);
        // Frames up to twice the limit are read, logged and dropped by decode_header; libzmq cuts a
        // peer that sends anything larger before reading it, so memory stays bounded either way.
        socket.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(2 * o.max_message_bytes + 65536));
        socket.set(zmq::sockopt::router_mandatory, false);
      };
      configure(router, kDataDomain);
      configure(admin, kAdminDomain);
      const int events = ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                         ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL;
      if (zmq_socket_monitor(router.handle(), "inproc://fedda-coordinator-monitor", events) == 0) {
        monitor.connect("inproc://fedda-coordinator-monitor");
      }
      if (zmq_socket_monitor(admin.handle(), "inproc://fedda-coordinator-admin-monitor", events) == 0) {
        admin_monitor.connect("inproc://fedda-coordinator-admin-monitor");
      }
      router.bind(wildcard_port(o.bind));
      endpoint = router.get(zmq::sockopt::last_endpoint);
    } catch (const zmq::error_t& e) {
      return make_error("cannot bind " + o.bind + ": " + e.what());
    }
    try {
      admin.bind(wildcard_port(admin_bind));
      admin_endpoint = admin.get(zmq::sockopt::last_endpoint);
    } catch (const zmq::error_t& e) {
      return make_error("cannot bind the admin endpoint " + admin_bind + ": " + e.what());
    }
    return Status::success();
  }

  // ---- the status page --------------------------------------------------------------------

  json coordinator_json() const {
    return {{"version", kVersion},
            {"consortium", consortium ? consortium->consortium : ""},
            {"insecure", !consortium},
            {"started_ms", counters.started_ms},
            {"uptime_s", (wall_ms() - counters.started_ms) / 1000},
            {"sites_endpoint", endpoint},
            {"admin_endpoint", admin_endpoint}};
  }

  json read(const std::string& command, const std::string& target) {
    const auto reply = admin_service->read(command, target);
    if (!reply.ok) throw std::runtime_error(reply.error);
    return json::parse(reply.json);
  }

  // Answers the status page's questions (status_api.h); only reads.
  monitoring::HttpResponse answer_status(const std::string& what, const std::string& arg) {
    const auto as_json = [](const json& j, int code = 200) {
      return monitoring::HttpResponse{code, "application/json", j.dump(-1, ' ', false, json::error_handler_t::replace)};
    };
    if (what == "ping") return as_json({{"ok", true}});  // served without the token: health only
    if (what == "metrics") {
      counters.uploads_waiting = upload_queue.size();
      counters.uploads_in_progress = uploading.size();
      if (admission) counters.refused_keys = admission->refused();
      return {200, monitoring::kMetricsContentType, metrics_text(*jobs, registry, known_sites(), counters)};
    }
    if (what == "overview") return as_json({{"coordinator", coordinator_json()}, {"jobs", read("jobs", "")}, {"sites", read("sites", "")}});
    if (what == "jobs" || what == "sites") return as_json(read(what, ""));
    if (what == "job" || what == "job-page") {
      const auto reply = admin_service->read("status", arg);
      if (!reply.ok) {
        return what == "job" ? as_json({{"error", reply.error}}, 404)
                             : as_json({{"coordinator", coordinator_json()}, {"error", reply.error}}, 404);
      }
      if (what == "job") return {200, "application/json", reply.json};
      return as_json({{"coordinator", coordinator_json()}, {"job", json::parse(reply.json)}});
    }
    return as_json({{"error", "unknown question"}}, 404);
  }

  Status start_http() {
    if (o.http.empty()) return Status::success();
    // With a kit the page asks for the kit's token wherever it listens (loopback is shared by
    // every account on a server); without one it listens on loopback only (HttpServer checks).
    std::string token;
    if (consortium) {
      auto t = kit::status_page_token(*consortium);
      if (!t) return t.error();
      token = *t;
    }
    status = std::make_unique<StatusBridge>(context);
    auto server = monitoring::HttpServer::start(o.http, status_routes(*status), token, "coordinator");
    if (!server) return make_error("--http: " + server.error().message);
    http = std::move(*server);
    return Status::success();
  }

  // ---- the loop -----------------------------------------------------------------------------

  // Connections libzmq closed or refused before any message reached fedda.
  void log_connection_events(zmq::socket_t& events, const char* plane) {
    for (;;) {
      std::vector<zmq::message_t> event;
      try {
        if (!zmq::recv_multipart(events, std::back_inserter(event), zmq::recv_flags::dontwait)) return;
      } catch (const zmq::error_t&) {
        return;
      }
      if (event.size() != 2 || event[0].size() < 6) continue;
      std::uint16_t id = 0;
      std::uint32_t value = 0;
      std::memcpy(&id, event[0].data(), 2);
      std::memcpy(&value, static_cast<const char*>(event[0].data()) + 2, 4);
      const std::string address = event[1].to_string();
      // A refused key is logged by the ZAP handler, with the peer's address; here the failures
      // that never reach it, at most once a minute per kind with a count (libzmq names the
      // listening endpoint here, not the peer).
      const auto now = Clock::now();
      auto& [last, count] = handshake_failures[std::string(plane) + std::to_string(id)];
      ++count;
      // Refused keys (HANDSHAKE_FAILED_AUTH) are counted by the ZAP handler.
      if (id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || id == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) ++counters.refused_handshakes;
      if (id == ZMQ_EVENT_DISCONNECTED || id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) continue;
      if (last != Clock::time_point{} && now - last < std::chrono::minutes(1)) continue;
      const std::string times = count > 1 ? " (" + std::to_string(count) + " in the last minute)" : "";
      last = now;
      count = 0;
      switch (id) {
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
          log->warn("{} connection {} refused: protocol error 0x{:x} (a frame that does not decrypt, or a peer holding "
                    "another coordinator's key){}", plane, address, value, times);
          break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
          log->warn("{} connection {} refused: handshake failed (errno {}){}", plane, address, value, times);
          break;
        default: break;
      }
    }
  }

  // Reads what is waiting on `socket` (at most 64 messages); each as its frames.
  template <typename Handler>
  bool drain_socket(zmq::socket_t& socket, const char* plane, Handler&& handle) {
    bool handled = false;
    for (int n = 0; n < 64; ++n) {
      std::vector<zmq::message_t> parts;
      try {
        if (!zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) break;
      } catch (const zmq::error_t& e) {
        log->warn("{}: receive: {}", plane, e.what());
        break;
      }
      std::size_t bytes = 0;
      for (const auto& part : parts) bytes += part.size();
      (&socket == &admin ? counters.bytes_received_admin : counters.bytes_received_sites) += bytes;
      if (parts.size() != 3) {
        log->warn("dropped a message with {} frame(s) (expected header and body)", parts.size() - 1);
        continue;
      }
      std::string authenticated;
      if (consortium) {
        const char* user = parts[1].gets("User-Id");
        authenticated = user ? user : "";
      }
      peer_address = peer_address_of(parts[1]);
      // One peer's message never ends the service: whatever handling it throws is logged (within
      // the peer's budget of lines) and the message dropped.
      const std::string routing = parts[0].to_string();
      try {
        handle(routing, authenticated, parts[1].to_string(), parts[2].to_string());
      } catch (const std::exception& e) {
        const auto* site = registry.by_routing(routing);
        const std::string who = site ? "site " + site->id : (authenticated.empty() ? "an unidentified peer" : authenticated);
        if (const auto held = peer_lines.take(who)) {
          log->error("{}: dropped a message from {} whose handling failed: {}{}", plane, who, e.what(),
                     held_back(*held));
        }
      }
      handled = true;
    }
    return handled;
  }

  // Serves the sockets until `deadline` or until messages were handled, whichever is first:
  // messages, heartbeats, upload credits, liveness.
  void pump(Clock::time_point deadline) {
    bool handled = false;
    do {
      const auto now = Clock::now();
      if (now >= next_heartbeat) {
        for (const auto& id : registry.silent_since(now, o.heartbeat * o.liveness)) {
          mark_lost(id, "silent for " + std::to_string(o.liveness) + " heartbeats, counted as gone");
        }
        for (const auto& [id, site] : registry.all()) {
          if (site.alive) send_empty(site.routing, MessageType::heartbeat, "", 0);
        }
        next_heartbeat = now + o.heartbeat;
      }
      grant_uploads();
      expire_log_requests();
      const auto wait = std::min<Clock::duration>(deadline - Clock::now(), next_heartbeat - Clock::now());
      const auto ms = std::max<long>(0, std::chrono::duration_cast<std::chrono::milliseconds>(wait).count());
      zmq::pollitem_t items[] = {{router.handle(), 0, ZMQ_POLLIN, 0},
                                 {admin.handle(), 0, ZMQ_POLLIN, 0},
                                 {monitor.handle(), 0, ZMQ_POLLIN, 0},
                                 {admin_monitor.handle(), 0, ZMQ_POLLIN, 0},
                                 {status ? status->socket().handle() : nullptr, 0, ZMQ_POLLIN, 0}};
      try {
        zmq::poll(items, status ? 5 : 4, std::chrono::milliseconds(ms));
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) log->warn("poll: {}", e.what());
      }
      if (status && (items[4].revents & ZMQ_POLLIN)) {
        status->answer([this](const std::string& what, const std::string& arg) { return answer_status(what, arg); });
      }
      if (items[2].revents & ZMQ_POLLIN) log_connection_events(monitor, "sites'");
      if (items[3].revents & ZMQ_POLLIN) log_connection_events(admin_monitor, "admin");
      if (items[0].revents & ZMQ_POLLIN) {
        handled |= drain_socket(router, "data", [&](const std::string& routing, const std::string& authenticated,
                                                    const std::string& header_frame, const std::string& body) {
          auto h = protocol::decode_header(header_frame, body, o.max_message_bytes);
          if (!h) {
            const auto* site = registry.by_routing(routing);
            // An authenticated peer is named by its key even before its hello.
            const std::string who = site ? "site " + site->id : (authenticated.empty() ? "an unidentified peer" : "site " + authenticated);
            if (const auto held = peer_lines.take(who)) {
              log->warn("dropped a malformed message from {}: {}{}", who, h.error().message,
                        held_back(*held));
            }
            return;
          }
          if (consortium && h->sender != authenticated) {
            log->warn("dropped {} claiming to be from '{}' on the connection of site '{}' (identity is the key's)",
                      protocol::type_name(h->type), h->sender, authenticated);
            return;
          }
          if (site_revoked(h->sender)) return;  // disconnected: nothing of it is read any more
          if (h->type == MessageType::admin_request) {
            log->warn("refused an admin request from site '{}' on the sites' endpoint", h->sender);
            return reject(routing, RejectCode::not_an_operator, "admin commands are taken on the admin endpoint, from operator keys");
          }
          handle_data(routing, *h, body);
        });
      }
      if (items[1].revents & ZMQ_POLLIN) {
        handled |= drain_socket(admin, "admin", [&](const std::string& routing, const std::string& authenticated,
                                                    const std::string& header_frame, const std::string& body) {
          handle_admin(routing, authenticated, header_frame, body);
        });
      }
    } while (Clock::now() < deadline && !stopping && !handled);
  }

  std::vector<std::string> job_sites(const JobRecord& job) const {
    const auto& s = job.definition.spec;
    std::vector<std::string> out = s.sites;
    if (s.evaluate) out.insert(out.end(), s.evaluation_sites.begin(), s.evaluation_sites.end());
    return out;
  }

  // Starts the queued (or, after a restart, running) jobs whose turn it is: in queue order, a job
  // starts when none of its sites is used by a running job or wanted by an earlier waiting one,
  // and its teacher job (if any) has finished.
  void schedule(bool draining) {
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

  void tick_runs() {
    for (auto it = runs.begin(); it != runs.end();) {
      it->second->tick();
      it = it->second->done() ? runs.erase(it) : std::next(it);
    }
  }

  bool all_ended(const std::vector<std::string>& ids, bool& all_finished) {
    all_finished = true;
    for (const auto& id : ids) {
      const auto* job = jobs->find(id);
      if (!job || !terminal(job->state)) return false;
      all_finished = all_finished && job->state == JobState::finished;
    }
    return true;
  }

  int run_loop(const std::vector<std::string>& until_done) {
    bool draining = false;
    Clock::time_point drain_until{};
    int rc = 0;
    for (;;) {
      if (stopping && !draining) {
        draining = true;
        drain_until = Clock::now() + o.drain_timeout;
        log->info("stopping: {} running job(s) finish their current round first (up to {} s)", runs.size(),
                  o.drain_timeout.count());
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
};

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
  m.o = options;
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
