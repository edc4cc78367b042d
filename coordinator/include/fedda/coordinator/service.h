#pragma once
// The coordinator as a consortium service (`fedda-coordinator serve`): one per consortium, up
// for months. It binds two endpoints:
//   data   a ZeroMQ ROUTER the site agents connect to (outbound from the hospitals): hello,
//          heartbeats, job offers, rounds, uploads (protocol.h);
//   admin  a ROUTER operators reach with `fedda-admin` (request / reply): submit, jobs, status,
//          abort, resume, download, sites, admit, revoke.
// With a consortium kit both are CurveZMQ and a ZAP handler, up before either binds, admits site
// keys on the data endpoint and operator keys on the admin endpoint only; identity is the key's.
// Without a kit it refuses to start unless `insecure` is set, and then says so in its log and in
// every answer to an operator.
//
// Jobs wait in a persistent queue (STATE/jobs/, see job_store.h) and run one after another, or
// side by side when their sites do not overlap and no earlier job waits for those sites; a job
// whose teacher is another job's result waits for that job. Queued and running jobs survive a
// restart: a running job resumes from its last finished round. The round driver
// (job_run.h) runs each job; the admin service (admin_service.h) answers operators and
// keeps STATE/audit.jsonl.
//
// Single-threaded: one thread calls start() and run(); stop() may be called from a signal
// handler (it only sets a flag). After stop() the running rounds finish and are persisted (or
// `drain_timeout` passes, the last finished round being on disk either way) and run() returns 0.

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "fedda/common/protocol.h"
#include "fedda/common/result.h"

namespace fedda::coordinator {

struct ServiceOptions {
  std::string bind = "tcp://127.0.0.1:5570";  // data endpoint; port 0 picks a free one
  std::string admin_bind;                     // default: the data endpoint's host, port + 1 (0: free)
  std::filesystem::path state = "fedda-state";
  std::filesystem::path endpoint_file;        // if set: "<data endpoint>\n<admin endpoint>\n" once bound
                                              // (and "<status page URL>\n" with `http`)
  // The status page, JSON API and /metrics ("HOST:PORT", empty: off). With a kit every request
  // must carry the kit's status token (status_token()); without one it listens on loopback only.
  std::string http;
  // Consortium kit (fedda-admin provision): CurveZMQ with provisioned keys only, signed models,
  // sealed state. Without one the service refuses to start unless `insecure`.
  std::filesystem::path kit;
  bool insecure = false;
  std::vector<std::string> allowed_sites;     // without a kit: the registry; empty admits any id
  std::chrono::milliseconds heartbeat{protocol::kDefaultHeartbeatMs};
  int liveness = protocol::kDefaultLiveness;
  std::size_t max_message_bytes = protocol::kDefaultMaxMessageBytes;
  std::chrono::seconds start_timeout{900};    // waiting for min_sites before a round
  std::chrono::seconds drain_timeout{600};    // after stop(): longest wait for running rounds
  int max_concurrent_uploads = 2;
};

class Service {
 public:
  // Loads the job queue, binds both endpoints; error names the endpoint, kit or file at fault.
  static Result<std::unique_ptr<Service>> start(const ServiceOptions& options);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  std::string endpoint() const;
  std::string admin_endpoint() const;
  std::string http_url() const;  // empty without `http`

  // The batch form: each job file is queued as if submitted (by "local"); a job that ran here
  // before with the same type, sites and rounds is resumed (failed or aborted: queued again) or,
  // finished, reported. Error names the file or the clash. Returns the job ids.
  Result<std::vector<std::string>> enqueue(const std::vector<std::filesystem::path>& job_files);

  // Serves until stop(), or with `until_done` until those jobs all ended. Returns 0, or 1 when
  // a job of `until_done` failed or was aborted.
  int run(const std::vector<std::string>& until_done = {});
  // Asks run() to drain and return (async-signal-safe).
  void stop();

 private:
  struct Impl;
  explicit Service(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The bearer token of a coordinator's status page (a coordinator with a kit), from the kit in
// `kit` (kit::status_page_token; `fedda-coordinator status-token --kit KIT` prints it).
Result<std::string> status_token(const std::filesystem::path& kit);

}  // namespace fedda::coordinator
