#include "status_api.h"

#include <zmq_addon.hpp>

#include "fedda/common/version.h"
#include "fedda/monitoring/metrics.h"
#include "status_page_assets.h"  // generated from status_page/ (kIndexHtml, kStatusJs, kStatusCss)

namespace fedda::coordinator {
namespace {

using monitoring::HttpRequest;
using monitoring::HttpResponse;
using monitoring::MetricType;

std::string pointer_name(const void* p) {
  return std::to_string(reinterpret_cast<std::uintptr_t>(p));
}

HttpResponse page(const std::string& data_json) {
  std::string html = kIndexHtml;
  const auto at = html.find("@DATA@");
  html.replace(at, 6, json_for_script(data_json));
  return {200, "text/html; charset=utf-8", html};
}

}  // namespace

std::string json_for_script(const std::string& json) {
  std::string out;
  out.reserve(json.size());
  for (const char c : json) {
    if (c == '<') out += "\\u003c";
    else if (c == '>') out += "\\u003e";
    else if (c == '&') out += "\\u0026";
    else out += c;
  }
  return out;
}

StatusBridge::StatusBridge(zmq::context_t& context)
    : context_(context), socket_(context, zmq::socket_type::router), endpoint_("inproc://fedda-status-" + pointer_name(this)) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.bind(endpoint_);
}

void StatusBridge::answer(const StatusQuery& query) {
  for (int n = 0; n < 16; ++n) {
    std::vector<zmq::message_t> parts;  // routing, empty delimiter (REQ), what, arg
    if (!zmq::recv_multipart(socket_, std::back_inserter(parts), zmq::recv_flags::dontwait)) return;
    if (parts.size() != 4) continue;
    HttpResponse r;
    try {
      r = query(parts[2].to_string(), parts[3].to_string());
    } catch (const std::exception& e) {
      r = {500, "application/json", std::string("{\"error\": \"internal error\"}")};
    }
    const std::string status = std::to_string(r.status);
    socket_.send(parts[0], zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    socket_.send(zmq::message_t(), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    socket_.send(zmq::buffer(status), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    socket_.send(zmq::buffer(r.content_type), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    socket_.send(zmq::buffer(r.body), zmq::send_flags::dontwait);
  }
}

HttpResponse StatusBridge::ask(const std::string& what, const std::string& arg, std::chrono::milliseconds timeout) const {
  zmq::socket_t req(context_, zmq::socket_type::req);
  req.set(zmq::sockopt::linger, 0);
  req.set(zmq::sockopt::rcvtimeo, static_cast<int>(timeout.count()));
  req.connect(endpoint_);
  req.send(zmq::buffer(what), zmq::send_flags::sndmore);
  req.send(zmq::buffer(arg), zmq::send_flags::none);
  std::vector<zmq::message_t> parts;
  if (!zmq::recv_multipart(req, std::back_inserter(parts)) || parts.size() != 3) {
    return {503, "application/json", "{\"error\": \"the coordinator is busy; try again\"}"};
  }
  return {std::stoi(parts[0].to_string()), parts[1].to_string(), parts[2].to_string()};
}

std::vector<monitoring::Route> status_routes(const StatusBridge& bridge) {
  const auto* b = &bridge;
  const auto json_of = [b](const std::string& what) {
    return [b, what](const HttpRequest& r) { return b->ask(what, r.matches.size() > 1 ? r.matches[1] : ""); };
  };
  return {
      {"/", [b](const HttpRequest&) {
         auto data = b->ask("overview", "");
         return data.status == 200 ? page(data.body) : data;
       }},
      {"/jobs/([A-Za-z0-9_.-]{1,64})", [b](const HttpRequest& r) {
         auto data = b->ask("job-page", r.matches[1]);  // {"coordinator", "job"} or {"coordinator", "error"}
         if (data.status != 200 && data.status != 404) return data;
         auto html = page(data.body);
         html.status = data.status;
         return html;
       }},
      {"/static/status.js", [](const HttpRequest&) { return HttpResponse{200, "text/javascript; charset=utf-8", kStatusJs}; },
       true},
      {"/static/status.css", [](const HttpRequest&) { return HttpResponse{200, "text/css; charset=utf-8", kStatusCss}; },
       true},
      {"/api/overview", json_of("overview")},
      {"/api/jobs", json_of("jobs")},
      {"/api/sites", json_of("sites")},
      {"/api/jobs/([A-Za-z0-9_.-]{1,64})", json_of("job")},
      {"/metrics", json_of("metrics")},
      // For a load balancer or a probe: no token asked, nothing told but that the service thread answers.
      {"/healthz", json_of("ping"), true},
  };
}

std::string metrics_text(JobStore& store, const SiteRegistry& registry, const std::set<std::string>& known_sites,
                         const ServiceCounters& c) {
  monitoring::MetricsText m;
  m.add("fedda_build_info", MetricType::gauge, "The coordinator's version.", 1, {{"version", kVersion}});
  m.add("fedda_start_time_seconds", MetricType::gauge, "When the coordinator started (Unix time).", c.started_ms / 1000.0);

  int online = 0;
  for (const auto& [id, site] : registry.all()) online += site.alive ? 1 : 0;
  m.add("fedda_sites_known", MetricType::gauge, "Sites admitted by this consortium or ever connected.",
        static_cast<double>(known_sites.size()));
  m.add("fedda_sites_connected", MetricType::gauge, "Sites connected now.", online);
  m.family("fedda_site_up", MetricType::gauge, "1 while the site is connected.");
  for (const auto& id : known_sites) {
    const auto* site = registry.find(id);
    m.sample(site && site->alive ? 1 : 0, {{"site", id}});
  }
  m.family("fedda_site_last_seen_seconds", MetricType::gauge, "When the site was last heard from (Unix time).");
  for (const auto& [id, site] : registry.all()) {
    if (site.last_seen_ms) m.sample(site.last_seen_ms / 1000.0, {{"site", id}});
  }

  const auto jobs = store.ordered();
  std::map<std::string, int> by_state;
  for (auto s : {JobState::queued, JobState::running, JobState::finished, JobState::failed, JobState::aborted}) {
    by_state[job_state_name(s)] = 0;
  }
  std::uint64_t rounds = 0, refused_updates = 0;
  double round_seconds = 0;
  for (const auto* job : jobs) {
    ++by_state[job_state_name(job->state)];
    rounds += static_cast<std::uint64_t>(job->rounds.size());
    for (const auto& r : job->rounds) {
      round_seconds += r.seconds;
      refused_updates += r.refused.size();
    }
  }
  m.family("fedda_jobs", MetricType::gauge, "Jobs in this coordinator's queue, by state.");
  for (const auto& [state, n] : by_state) m.sample(n, {{"state", state}});
  m.family("fedda_job_state", MetricType::gauge, "1 for each job's current state.");
  for (const auto* job : jobs) m.sample(1, {{"job", job->id()}, {"state", job_state_name(job->state)}});
  m.family("fedda_job_rounds_finished", MetricType::gauge, "Rounds a job has finished.");
  for (const auto* job : jobs) m.sample(job->finished_round, {{"job", job->id()}});
  m.family("fedda_job_rounds", MetricType::gauge, "Rounds a job asks for.");
  for (const auto* job : jobs) m.sample(job->definition.spec.rounds, {{"job", job->id()}});
  m.family("fedda_job_last_round_seconds", MetricType::gauge, "Wall time of a job's last finished round.");
  for (const auto* job : jobs) {
    if (!job->rounds.empty()) m.sample(job->rounds.back().seconds, {{"job", job->id()}});
  }
  m.add("fedda_rounds_finished_total", MetricType::counter, "Rounds finished, all jobs together.", static_cast<double>(rounds));
  m.add("fedda_round_seconds_total", MetricType::counter,
        "Wall time of the finished rounds, all jobs together (divide by fedda_rounds_finished_total for the mean).",
        round_seconds);
  m.add("fedda_updates_refused_total", MetricType::counter,
        "Site updates refused (not finite, too large a change, a sample count other than declared).",
        static_cast<double>(refused_updates));

  m.family("fedda_bytes_received_total", MetricType::counter, "Bytes received, by endpoint.");
  m.sample(static_cast<double>(c.bytes_received_sites), {{"plane", "sites"}});
  m.sample(static_cast<double>(c.bytes_received_admin), {{"plane", "admin"}});
  m.family("fedda_bytes_sent_total", MetricType::counter, "Bytes sent, by endpoint.");
  m.sample(static_cast<double>(c.bytes_sent_sites), {{"plane", "sites"}});
  m.sample(static_cast<double>(c.bytes_sent_admin), {{"plane", "admin"}});
  m.add("fedda_uploads_waiting", MetricType::gauge, "Site updates announced and waiting for upload credit.",
        static_cast<double>(c.uploads_waiting));
  m.add("fedda_uploads_in_progress", MetricType::gauge, "Site updates granted upload credit and not yet received.",
        static_cast<double>(c.uploads_in_progress));
  m.family("fedda_refused_connections_total", MetricType::counter,
           "Connections and hellos refused: key (not provisioned, revoked, or on the wrong endpoint), handshake "
           "(CurveZMQ failed), hello (site id invalid, unregistered or revoked).");
  m.sample(static_cast<double>(c.refused_keys), {{"reason", "key"}});
  m.sample(static_cast<double>(c.refused_handshakes), {{"reason", "handshake"}});
  m.sample(static_cast<double>(c.refused_hellos), {{"reason", "hello"}});
  return m.text();
}

}  // namespace fedda::coordinator
