// The coordinator service's admin plane and the AdminBackend (service_impl.h).
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

// How long an operator's `logs SITE` waits for the site's answer.
constexpr std::chrono::seconds kLogsTimeout{20};

}  // namespace

void Service::Impl::handle_admin(const std::string& routing, const std::string& authenticated,
                                 const std::string& header_frame, const std::string& body) {
  auto h = protocol::decode_header(header_frame, body, options.max_message_bytes);
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
    if (request->command == protocol::admin_command_name(protocol::AdminCommand::logs)) return ask_site_logs(routing, h->sequence, who, *request);
    reply = admin_service->handle(who, *request);
  }
  reply_admin(routing, h->sequence, std::move(reply));
}

// The answer to the operator's request `sequence` on its connection `routing`.
void Service::Impl::reply_admin(const std::string& routing, std::uint64_t sequence,
                                protocol::AdminReply reply) {
  if (!consortium) reply.notice = kInsecureNotice;
  auto frames = protocol::encode(protocol::Header{}, reply);
  auto rh = header(MessageType::admin_reply, "", 0);
  rh.sequence = sequence;  // the answer names the request it answers
  send_to(admin, routing, rh, zmq::message_t(frames.body.data(), frames.body.size()), frames.body_crc32);
}

// `logs SITE`: relayed to the site's agent; the operator is answered when the site's
// logs_reply comes (handle_logs_reply) or kLogsTimeout after (expire_log_requests).
void Service::Impl::ask_site_logs(const std::string& routing, std::uint64_t sequence, const std::string& who,
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

void Service::Impl::handle_logs_reply(const SiteInfo& site, const std::string& body) {
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

void Service::Impl::expire_log_requests() {
  if (log_requests.empty()) return;
  for (auto& w : log_requests.expired(Clock::now())) {
    const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(kLogsTimeout).count();
    reply_admin(w.routing, w.sequence,
                admin_service->answer_logs(w.who, w.request, nullptr,
                                           "site " + w.site + " did not answer within " + std::to_string(seconds) + " s"));
  }
}

std::set<std::string> Service::Impl::known_sites() const {
  std::set<std::string> ids = admission ? admission->site_ids() : allowed;
  for (const auto& [id, site] : registry.all()) ids.insert(id);
  return ids;
}

std::string Service::Impl::operator_role(const std::string& name) const {
  if (!consortium) return "lead";  // --insecure: whoever reaches the endpoint runs everything
  const auto it = consortium->operator_roles.find(name);
  return it == consortium->operator_roles.end() ? "lead" : it->second;
}

std::string Service::Impl::activity(const std::string& job) const {
  const auto it = runs.find(job);
  return it == runs.end() ? std::string() : it->second->activity();
}

std::optional<RoundSites> Service::Impl::round_sites(const std::string& job) const {
  const auto it = runs.find(job);
  return it == runs.end() ? std::nullopt : it->second->round_sites();
}

Status Service::Impl::check_sites_known(const protocol::JobSpec& spec) {
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

Result<JobRecord*> Service::Impl::submit(JobDefinition definition, const std::string& by,
                                         const std::string& yaml, const std::string& teacher_file) {
  if (stopping) return make_error("the coordinator is shutting down");
  if (auto st = check_sites_known(definition.spec); !st) return st.error();
  auto job = jobs->add(std::move(definition), by, yaml, teacher_file);
  if (job) log->info("job {} queued (by {})", (*job)->id(), by);
  return job;
}

Status Service::Impl::abort(JobRecord& job, const std::string& by) {
  if (job.state == JobState::queued) {
    if (auto st = jobs->set_state(job, JobState::aborted, "aborted by " + by, by); !st) return st;
    log->warn("job {}: aborted by {} before it started", job.id(), by);
    return Status::success();
  }
  const auto run = runs.find(job.id());
  if (job.state != JobState::running || run == runs.end()) {
    return make_error("job '" + job.id() + "' is " + job_state_name(job.state) + "; only a queued or running job can be aborted",
                      ErrorKind::refused);
  }
  log->warn("job {}: abort asked by {}; it stops after the current round", job.id(), by);
  run->second->abort(by);
  return Status::success();
}

Status Service::Impl::resume(JobRecord& job, const std::string& by) {
  if (job.state != JobState::aborted && job.state != JobState::failed) {
    return make_error("job '" + job.id() + "' is " + job_state_name(job.state) + "; only an aborted or failed job can be resumed",
                      ErrorKind::refused);
  }
  if (auto st = jobs->set_state(job, JobState::queued, {}, by); !st) return st;
  log->info("job {}: resumed by {} (after round {})", job.id(), by, job.finished_round);
  return Status::success();
}

Status Service::Impl::save_revocations() {
  json list = json::array();
  for (const auto& s : revoked_sites) list.push_back(s);
  json operators = json::array();
  for (const auto& s : revoked_operators) operators.push_back(s);
  return files::write_atomically(options.state / "revoked.json", json{{"sites", list}, {"operators", operators}}.dump(2) + "\n");
}

Status Service::Impl::admit(const std::string& site, const std::string& by,
                            const std::vector<protocol::NamedFile>& files) {
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
      for (const auto& dir : {options.state / "admitted", consortium->dir / kit::kPendingSites, consortium->dir / "sites"}) {
        auto text = files::read_all(dir / (site + ".manifest.json"));
        auto sig = files::read_all(dir / (site + ".manifest.sig"));
        if (text && sig) {
          manifest = *text;
          signature = *sig;
          kept = dir == options.state / "admitted";
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
      for (const auto& st : {files::write_atomically(options.state / "admitted" / (site + ".manifest.json"), manifest),
                             files::write_atomically(options.state / "admitted" / (site + ".manifest.sig"), signature)}) {
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

Status Service::Impl::revoke(const std::string& site, const std::string& by) {
  if (!known_sites().count(site) && admission && admission->knows_operator(site)) {
    if (site == by) return make_error("operator '" + by + "' cannot revoke itself (another operator can)");
    revoked_operators.insert(site);
    if (auto st = save_revocations(); !st) return st;  // written before it takes effect
    admission->revoke_operator(site);
    log->warn("operator {}: revoked by {}", site, by);
    return Status::success();
  }
  if (!known_sites().count(site)) {
    return make_error("no site or operator '" + site + "' in this consortium", ErrorKind::not_found);
  }
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

}  // namespace fedda::coordinator
