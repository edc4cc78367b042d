// The coordinator service's answers to the status page (service_impl.h).
#include "service_impl.h"

#include <algorithm>
#include <cstring>

#include "fedda/common/files.h"
#include "fedda/common/version.h"

namespace fedda::coordinator {
namespace fs = std::filesystem;
using protocol::MessageType;
using protocol::RejectCode;
using nlohmann::json;

namespace {

// The HTTP status of a failed question: 404 for what does not exist, 403 refused, 400 invalid,
// 500 internal.
int http_status(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::not_found: return 404;
    case ErrorKind::refused: return 403;
    case ErrorKind::invalid: return 400;
    case ErrorKind::internal: return 500;
  }
  return 500;
}

}  // namespace

json Service::Impl::coordinator_json() const {
  return {{"version", kVersion},
          {"consortium", consortium ? consortium->consortium : ""},
          {"insecure", !consortium},
          {"started_ms", counters.started_ms},
          {"uptime_s", (wall_ms() - counters.started_ms) / 1000},
          {"sites_endpoint", endpoint},
          {"admin_endpoint", admin_endpoint}};
}

json Service::Impl::read(protocol::AdminCommand command, const std::string& target) {
  const auto reply = admin_service->read(command, target);
  if (!reply.ok) throw std::runtime_error(reply.error);
  return json::parse(reply.json);
}

// Answers the status page's questions (status_api.h); only reads.
monitoring::HttpResponse Service::Impl::answer_status(const std::string& what, const std::string& arg) {
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
  using command = protocol::AdminCommand;
  if (what == "overview") {
    return as_json({{"coordinator", coordinator_json()}, {"jobs", read(command::jobs, "")}, {"sites", read(command::sites, "")}});
  }
  if (what == "jobs") return as_json(read(command::jobs, ""));
  if (what == "sites") return as_json(read(command::sites, ""));
  if (what == "job" || what == "job-page") {
    const auto reply = admin_service->read(command::status, arg);
    if (!reply.ok) {
      const int code = http_status(reply.kind);
      return what == "job" ? as_json({{"error", reply.error}}, code)
                           : as_json({{"coordinator", coordinator_json()}, {"error", reply.error}}, code);
    }
    if (what == "job") return {200, "application/json", reply.json};
    return as_json({{"coordinator", coordinator_json()}, {"job", json::parse(reply.json)}});
  }
  return as_json({{"error", "unknown question"}}, 404);
}

Status Service::Impl::start_http() {
  if (options.http.empty()) return Status::success();
  // With a kit the page asks for the kit's token wherever it listens (loopback is shared by
  // every account on a server); without one it listens on loopback only (HttpServer checks).
  std::string token;
  if (consortium) {
    auto t = kit::status_page_token(*consortium);
    if (!t) return t.error();
    token = *t;
  }
  status = std::make_unique<StatusBridge>(context);
  auto server = monitoring::HttpServer::start(options.http, status_routes(*status), token, "coordinator");
  if (!server) return make_error("--http: " + server.error().message);
  http = std::move(*server);
  return Status::success();
}

}  // namespace fedda::coordinator
