#pragma once
// The coordinator's status page, JSON API and Prometheus metrics (`fedda-coordinator serve
// --http 127.0.0.1:8470`). The HTTP server runs on its own threads, but everything it shows
// belongs to the service's one thread: a request is a question sent over an inproc ZeroMQ socket
// (StatusBridge) that the service answers between its messages, so no state is shared and an
// answer is never torn. A service too busy to answer within the timeout gets a 503.
//
//   /                 the consortium: jobs (queue, progress, ETA) and sites (online, last seen, version, device)
//   /jobs/<id>        one job: loss per site and round time per round (inline SVG), Dice, round cost
//   /api/overview     {"coordinator", "jobs", "sites"}; /api/jobs, /api/sites, /api/jobs/<id>: as fedda-admin --json
//   /metrics          Prometheus text format
//   /healthz          200 when the service thread answers

#include <chrono>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "fedda/monitoring/http_server.h"
#include "job_store.h"
#include "site_registry.h"

namespace fedda::coordinator {

using StatusQuery = std::function<monitoring::HttpResponse(const std::string& what, const std::string& arg)>;

class StatusBridge {
 public:
  explicit StatusBridge(zmq::context_t& context);
  // The socket the service polls; answer() when it is readable.
  zmq::socket_t& socket() { return socket_; }
  // Service thread: answers the questions waiting (at most 16 at a time).
  void answer(const StatusQuery& query);
  // Any thread: asks the service; 503 when no answer comes within `timeout`.
  monitoring::HttpResponse ask(const std::string& what, const std::string& arg,
                               std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;

 private:
  zmq::context_t& context_;
  zmq::socket_t socket_;
  std::string endpoint_;
};

// The routes of the page and the API, answered through `bridge`.
std::vector<monitoring::Route> status_routes(const StatusBridge& bridge);

// What the service counts for /metrics beyond its job store and site registry.
struct ServiceCounters {
  std::int64_t started_ms = 0;
  std::uint64_t bytes_received_sites = 0, bytes_sent_sites = 0, bytes_received_admin = 0, bytes_sent_admin = 0;
  std::uint64_t refused_keys = 0, refused_handshakes = 0, refused_hellos = 0;
  std::size_t uploads_waiting = 0, uploads_in_progress = 0;
};

std::string metrics_text(JobStore& store, const SiteRegistry& registry, const std::set<std::string>& known_sites,
                         const ServiceCounters& counters);

// A JSON document placed inside the page's <script type="application/json">: '<', '>' and '&'
// written as \u escapes, so no string in it can close the script element.
std::string json_for_script(const std::string& json);

}  // namespace fedda::coordinator
