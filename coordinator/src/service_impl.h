#pragma once
// The coordinator service's state and its parts (private to the coordinator library), one
// struct the service's one thread owns, its member functions in four files by what they serve:
//   service_transport.cpp  the sockets and what crosses them: ZAP admission, binding, framing and
//                          sending, the sites' hello and messages, heartbeats and liveness, upload
//                          credit, libzmq's connection events, and pump() that serves them;
//   service_operators.cpp  the admin plane: operators' requests (answered by admin_service.h),
//                          `logs SITE` relayed to the site, and the AdminBackend the admin service
//                          acts through (submit, abort, resume, admit, revoke);
//   service_status.cpp     the status page's and /metrics' questions (status_api.h), read only;
//   service.cpp            the scheduler (which queued job starts when, each a JobRun) and the
//                          service's life: start, the loop, the drain on stop.
// Not thread-safe: only the ZAP thread (admission.h) and the HTTP threads (through the status
// bridge) run beside it, and neither touches this struct.

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "admin_service.h"
#include "admission.h"
#include "duplicate_sessions.h"
#include "fedda/common/kit.h"
#include "fedda/common/log.h"
#include "fedda/coordinator/service.h"
#include "job_run.h"
#include "job_store.h"
#include "log_requests.h"
#include "site_registry.h"
#include "status_api.h"

namespace fedda::coordinator {

inline constexpr const char* kInsecureNotice =
    "this coordinator runs without a consortium kit (--insecure): any peer can claim any site id, models are "
    "unsigned and traffic is not encrypted";

struct Service::Impl : JobHost, AdminBackend {
  using MessageType = protocol::MessageType;
  using RejectCode = protocol::RejectCode;
  using json = nlohmann::json;

  ServiceOptions options;  // as the service was started with
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

  ~Impl() override;

  // ---- JobHost: what each JobRun asks of the service ---------------------------------------

  SiteRegistry& sites() override { return registry; }
  JobStore& store() override { return *jobs; }
  const kit::CoordinatorKit* kit() const override { return consortium ? &*consortium : nullptr; }
  Clock::duration start_timeout() const override { return options.start_timeout; }
  Clock::time_point now() const override { return Clock::now(); }
  log::Budget& log_budget() override { return peer_lines; }
  void send(const SiteInfo& site, MessageType type, const std::string& job, int round, const Broadcast& b) override;
  void queue_upload(const std::string& site, const std::string& job, int round) override;

  // ---- transport (service_transport.cpp) ---------------------------------------------------
  // Sending: every message the service sends has a header of its own sequence; sends never
  // block: the ROUTER drops a message for a peer that is gone or whose queue is full (the
  // round's deadline then counts it missing).

  protocol::Header header(MessageType type, const std::string& job_id, int round);
  void send_to(zmq::socket_t& socket, const std::string& routing, protocol::Header h, zmq::message_t body,
               std::uint32_t crc, const std::string& signature = {});
  template <typename Body>
  void send_body(const std::string& routing, MessageType type, const std::string& job, int round, const Body& body) {
    auto frames = protocol::encode(protocol::Header{}, body);
    send_to(router, routing, header(type, job, round), zmq::message_t(frames.body.data(), frames.body.size()),
            frames.body_crc32);
  }
  void send_empty(const std::string& routing, MessageType type, const std::string& job, int round);
  void reject(const std::string& routing, RejectCode code, const std::string& reason);

  // Upload credit: a few uploads at a time (max_concurrent_uploads), so the coordinator's memory
  // does not grow with the sites; a site's credit goes with its session.
  void forget_uploads(const std::string& site);
  bool upload_wanted(const Upload& u);
  void grant_uploads();

  // Sites: a hello starts a session (after the revocation, registry and duplicate-agent checks);
  // every other message of a session is checked for its sender and sequence, then handed to its
  // job's JobRun or answered here.
  bool site_revoked(const std::string& id) const;
  void mark_lost(const std::string& id, const std::string& why);
  void handle_hello(const std::string& routing, const protocol::Header& h, const std::string& body);
  // The later of two agents with site `id`'s key, on `routing`: told why; it stops.
  void refuse_second_agent(const std::string& id, const std::string& routing);
  // Two agents with one site's key: `first` (whose session the current one replaced) has said
  // hello again, so it lives. The current session is the later agent's: refused, for good; the
  // hello being handled then takes the site back for the first.
  void refuse_later_of_two(const std::string& id, const DuplicateSessions::Session& first);
  void handle_data(const std::string& routing, const protocol::Header& h, const std::string& body);

  // Sockets: site and operator keys admitted (the kit, sites admitted while serving, minus
  // revoked ones) and the ZAP handler that applies them, up before any socket binds (without
  // one libzmq admits anyone); then both endpoints bound, with libzmq's connection events.
  Status open_admission();
  Status bind(const std::string& admin_bind);
  // Connections libzmq closed or refused before any message reached fedda.
  void log_connection_events(zmq::socket_t& events, const char* plane);
  // Reads what is waiting on `socket` (at most 64 messages), each as handle(routing,
  // authenticated key, header, body); one peer's message never ends the service.
  template <typename Handler>
  bool drain_socket(zmq::socket_t& socket, const char* plane, Handler&& handle);
  // Serves the sockets until `deadline` or until messages were handled, whichever is first:
  // messages, heartbeats, upload credits, liveness, the status page's questions.
  void pump(Clock::time_point deadline);

  // ---- operators (service_operators.cpp) ---------------------------------------------------
  // The admin plane: each request answered by the admin service (admin_service.h), which acts
  // through the AdminBackend below; `logs SITE` is relayed to the site's agent and answered when
  // the site's logs_reply comes (handle_logs_reply) or kLogsTimeout after (expire_log_requests).

  void handle_admin(const std::string& routing, const std::string& authenticated, const std::string& header_frame,
                    const std::string& body);
  // The answer to the operator's request `sequence` on its connection `routing`.
  void reply_admin(const std::string& routing, std::uint64_t sequence, protocol::AdminReply reply);
  void ask_site_logs(const std::string& routing, std::uint64_t sequence, const std::string& who,
                     const protocol::AdminRequest& request);
  void handle_logs_reply(const SiteInfo& site, const std::string& body);
  void expire_log_requests();

  // AdminBackend. Each change (admit, revoke, a job's state) is on disk before it takes effect.
  const SiteRegistry& site_registry() const override { return registry; }
  std::set<std::string> known_sites() const override;
  bool revoked(const std::string& site) const override { return site_revoked(site); }
  std::string operator_role(const std::string& name) const override;
  std::string activity(const std::string& job) const override;
  std::optional<RoundSites> round_sites(const std::string& job) const override;
  Result<JobRecord*> submit(JobDefinition definition, const std::string& by, const std::string& yaml,
                            const std::string& teacher_file) override;
  Status abort(JobRecord& job, const std::string& by) override;
  Status resume(JobRecord& job, const std::string& by) override;
  Status admit(const std::string& site, const std::string& by, const std::vector<protocol::NamedFile>& files) override;
  Status revoke(const std::string& site, const std::string& by) override;
  Status check_sites_known(const protocol::JobSpec& spec);  // with a kit or a registry: every site is one
  Status save_revocations();                                 // STATE/revoked.json

  // ---- the status page (service_status.cpp) ------------------------------------------------
  // Answers the status page's questions (status_api.h) through the admin service's read-only
  // commands; a failed question's HTTP status comes from its error's kind.

  json coordinator_json() const;
  json read(protocol::AdminCommand command, const std::string& target);
  monitoring::HttpResponse answer_status(const std::string& what, const std::string& arg);
  Status start_http();

  // ---- the scheduler and the loop (service.cpp) --------------------------------------------

  std::vector<std::string> job_sites(const JobRecord& job) const;  // training and evaluation sites
  // Starts the queued (or, after a restart, running) jobs whose turn it is: in queue order, a job
  // starts when none of its sites is used by a running job or wanted by an earlier waiting one,
  // and its teacher job (if any) has finished.
  void schedule(bool draining);
  void tick_runs();
  bool all_ended(const std::vector<std::string>& ids, bool& all_finished);
  // Until stop() (then a drain of the running rounds, up to drain_timeout) or until `until_done`
  // all ended: 0, or 1 when one of them failed or was aborted.
  int run_loop(const std::vector<std::string>& until_done);
};

}  // namespace fedda::coordinator
