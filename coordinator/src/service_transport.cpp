// The coordinator service's sockets and what crosses them (service_impl.h).
#include "service_impl.h"

#include <algorithm>
#include <cstring>

#include "fedda/common/files.h"
#include "fedda/common/version.h"

#include <cerrno>
#include <ctime>

#include <zmq_addon.hpp>

namespace fedda::coordinator {
namespace fs = std::filesystem;
using protocol::MessageType;
using protocol::RejectCode;
using nlohmann::json;

namespace {

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

}  // namespace

protocol::Header Service::Impl::header(MessageType type, const std::string& job_id, int round) {
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
void Service::Impl::send_to(zmq::socket_t& socket, const std::string& routing, protocol::Header h,
                            zmq::message_t body, std::uint32_t crc, const std::string& signature) {
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

void Service::Impl::send(const SiteInfo& site, MessageType type, const std::string& job, int round,
                         const Broadcast& b) {
  send_to(router, site.routing, header(type, job, round), shared_message(b.body), b.crc, b.signature);
}

void Service::Impl::send_empty(const std::string& routing, MessageType type, const std::string& job,
                               int round) {
  send_to(router, routing, header(type, job, round), zmq::message_t(), crc32_of(std::string()));
}

void Service::Impl::reject(const std::string& routing, RejectCode code, const std::string& reason) {
  if (code != RejectCode::say_hello_first && code != RejectCode::not_an_operator) ++counters.refused_hellos;
  send_body(routing, MessageType::reject, "", 0, protocol::Reject{code, reason});
}

void Service::Impl::queue_upload(const std::string& site, const std::string& job, int round) {
  for (const auto& u : upload_queue) {
    if (u.site == site && u.job == job && u.round == round) return;
  }
  if (uploading.count(site)) return;
  upload_queue.push_back({site, job, round});
}

void Service::Impl::forget_uploads(const std::string& site) {
  uploading.erase(site);
  upload_queue.erase(std::remove_if(upload_queue.begin(), upload_queue.end(), [&](const Upload& u) { return u.site == site; }),
                     upload_queue.end());
}

bool Service::Impl::upload_wanted(const Upload& u) {
  const auto run = runs.find(u.job);
  const auto* site = registry.find(u.site);
  return run != runs.end() && site && site->alive && run->second->wants_upload(u.site, u.round);
}

// A few uploads at a time, so the coordinator's memory does not grow with the sites.
void Service::Impl::grant_uploads() {
  for (auto it = uploading.begin(); it != uploading.end();) {  // rounds that closed without it
    it = upload_wanted(it->second) ? std::next(it) : uploading.erase(it);
  }
  while (uploading.size() < static_cast<std::size_t>(options.max_concurrent_uploads) && !upload_queue.empty()) {
    const auto u = upload_queue.front();
    upload_queue.pop_front();
    if (!upload_wanted(u)) continue;
    uploading[u.site] = u;
    send_empty(registry.find(u.site)->routing, MessageType::upload, u.job, u.round);
  }
}

bool Service::Impl::site_revoked(const std::string& id) const {
  return revoked_sites.count(id) || (admission && admission->revoked(id));
}

void Service::Impl::mark_lost(const std::string& id, const std::string& why) {
  if (!registry.end_session(id)) return;
  log->warn("site {}: {}", id, why);
  forget_uploads(id);
  for (auto& [job, run] : runs) run->site_lost(id, why);
}

void Service::Impl::handle_hello(const std::string& routing, const protocol::Header& h,
                                 const std::string& body) {
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
            protocol::Welcome{static_cast<std::int32_t>(options.heartbeat.count()), options.liveness});
  for (auto& [job, run] : runs) run->site_joined(site);
}

// The later of two agents with site `id`'s key, on `routing`: told why; it stops.
void Service::Impl::refuse_second_agent(const std::string& id, const std::string& routing) {
  reject(routing, RejectCode::duplicate_session,
         "another agent with site " + id + "'s key was connected first and still is; this one is refused: stop it "
         "(one agent per site kit)");
}

// Two agents with one site's key: `first` (whose session the current one replaced) has said
// hello again, so it lives. The current session is the later agent's: refused, for good; the
// hello being handled then takes the site back for the first.
void Service::Impl::refuse_later_of_two(const std::string& id, const DuplicateSessions::Session& first) {
  const auto* later = registry.find(id);
  log->warn("site {}: two connections with its key, from {} (first) and {} (second); keeping the first, refusing "
            "the second: one agent per site kit", id, connection(peer_address, first.connected_ms),
            connection(later->address, later->connected_ms));
  duplicates.refuse(id, later->instance);
  refuse_second_agent(id, later->routing);
  for (auto& [job, run] : runs) run->site_lost(id, "a second agent with its key, refused");
}

void Service::Impl::handle_data(const std::string& routing, const protocol::Header& h,
                                const std::string& body) {
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

// Site and operator keys admitted (the kit, sites admitted while serving, minus revoked
// ones) and the ZAP handler that applies them, up before any socket binds: without one libzmq
// admits anyone.
Status Service::Impl::open_admission() {
  if (!consortium) return Status::success();
  admission = std::make_unique<Admission>(*consortium, log);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(options.state / "admitted", ec)) {  // admitted while serving
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

Status Service::Impl::bind(const std::string& admin_bind) {
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
      socket.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(2 * options.max_message_bytes + 65536));
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
    router.bind(wildcard_port(options.bind));
    endpoint = router.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return make_error("cannot bind " + options.bind + ": " + e.what());
  }
  try {
    admin.bind(wildcard_port(admin_bind));
    admin_endpoint = admin.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return make_error("cannot bind the admin endpoint " + admin_bind + ": " + e.what());
  }
  return Status::success();
}

// Connections libzmq closed or refused before any message reached fedda.
void Service::Impl::log_connection_events(zmq::socket_t& events, const char* plane) {
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

template <typename Handler>
bool Service::Impl::drain_socket(zmq::socket_t& socket, const char* plane, Handler&& handle) {
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
void Service::Impl::pump(Clock::time_point deadline) {
  bool handled = false;
  do {
    const auto now = Clock::now();
    if (now >= next_heartbeat) {
      for (const auto& id : registry.silent_since(now, options.heartbeat * options.liveness)) {
        mark_lost(id, "silent for " + std::to_string(options.liveness) + " heartbeats, counted as gone");
      }
      for (const auto& [id, site] : registry.all()) {
        if (site.alive) send_empty(site.routing, MessageType::heartbeat, "", 0);
      }
      next_heartbeat = now + options.heartbeat;
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
        auto h = protocol::decode_header(header_frame, body, options.max_message_bytes);
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

}  // namespace fedda::coordinator
