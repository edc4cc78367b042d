#include "session.h"

#include <atomic>
#include <cstring>

#include <zmq_addon.hpp>

#include "fedda/common/crypto.h"
#include "fedda/site_agent/egress.h"

namespace fedda::site_agent {
using protocol::MessageType;

namespace {

class SteadyClock : public SessionClock {
 public:
  Clock::time_point now() const override { return Clock::now(); }
};

std::atomic<int> monitor_counter{0};

}  // namespace

const SessionClock& steady_session_clock() {
  static const SteadyClock clock;
  return clock;
}

Session::Session(zmq::context_t& context, SessionOptions options, AuditLog* audit)
    : context_(context),
      o_(std::move(options)),
      clock_(o_.clock ? *o_.clock : steady_session_clock()),
      audit_(audit),
      heartbeat_(o_.heartbeat),
      backoff_(o_.reconnect_min),
      liveness_(o_.liveness) {
  if (auto bytes = crypto::random_bytes(sizeof instance_)) std::memcpy(&instance_, bytes->data(), sizeof instance_);
  if (instance_ == 0) instance_ = 1;  // 0 means "an agent before instances"
  connect();
}

Session::~Session() = default;

protocol::Header Session::header(MessageType type, const std::string& job_id, int round) const {
  protocol::Header h;
  h.type = type;
  h.sender = o_.site_id;
  h.job_id = job_id;
  h.round = round;
  return h;
}

void Session::connect() {
  socket_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
  socket_->set(zmq::sockopt::linger, 0);
  socket_->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(2 * protocol::kDefaultMaxMessageBytes + 65536));
  if (o_.curve) {
    socket_->set(zmq::sockopt::curve_serverkey, o_.curve->coordinator_public);
    socket_->set(zmq::sockopt::curve_publickey, o_.curve->site_public);
    socket_->set(zmq::sockopt::curve_secretkey, o_.curve->site_secret);
    // Handshake failures are only visible as socket events: watch for them.
    const std::string endpoint = "inproc://fedda-session-monitor-" + std::to_string(monitor_counter++);
    if (zmq_socket_monitor(socket_->handle(), endpoint.c_str(),
                           ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) == 0) {
      monitor_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::pair);
      monitor_->set(zmq::sockopt::linger, 0);
      monitor_->connect(endpoint);
    }
  }
  socket_->connect(o_.endpoint);
  ++connects_;
  coordinator_sequence_ = 0;
  pending_.clear();
  state_ = State::connected;
  const auto now = clock_.now();
  last_heard_ = now;
  next_heartbeat_ = now + heartbeat_;
  hello();
}

void Session::disconnect() {
  monitor_.reset();
  socket_.reset();
}

void Session::hello() {
  protocol::Hello body{o_.site_id, o_.agent_version, o_.device, o_.threads, instance_,
                       o_.resources ? o_.resources() : protocol::SiteResources{}};
  send(MessageType::hello, "", 0, protocol::encode(header(MessageType::hello, "", 0), body));
  last_hello_ = clock_.now();
}

void Session::send(MessageType type, const std::string& job_id, int round, const protocol::Frames& frames,
                   const std::string& tensors, const std::string& detail) {
  if (!socket_) {
    log_->debug("not connected: {} for job '{}' dropped", protocol::type_name(type), job_id);
    return;
  }
  if (audit_) audit_->record(type, job_id, round, frames.body, tensors, detail);
  protocol::Header h = header(type, job_id, round);
  h.sequence = ++sequence_;
  h.body_bytes = frames.body.size();
  h.body_crc32 = frames.body_crc32;
  try {
    const auto header_frame = protocol::encode_header(h);
    if (!socket_->send(zmq::buffer(header_frame), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
      if (type != MessageType::heartbeat) {
        log_->warn("{} not sent: the connection to {} cannot take it now", protocol::type_name(type), o_.endpoint);
      }
      return;
    }
    socket_->send(zmq::buffer(frames.body), zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    log_->warn("cannot send {}: {}", protocol::type_name(type), e.what());
  }
}

void Session::offer_update(const std::string& job_id, int round, protocol::Frames frames, std::string tensors,
                           bool evaluation) {
  pending_[{job_id, round}] = {std::move(frames), std::move(tensors), evaluation};
  send(MessageType::update_ready, job_id, round, protocol::encode_empty(header(MessageType::update_ready, job_id, round)));
}

void Session::say_goodbye(const std::string& reason) {
  if (!socket_) return;
  send(MessageType::goodbye, "", 0, protocol::encode(header(MessageType::goodbye, "", 0), protocol::Goodbye{reason}));
  socket_->set(zmq::sockopt::linger, 1000);
  disconnect();
}

void Session::log_handshake_events() {
  for (;;) {
    std::vector<zmq::message_t> event;
    try {
      if (!zmq::recv_multipart(*monitor_, std::back_inserter(event), zmq::recv_flags::dontwait)) return;
    } catch (const zmq::error_t&) {
      return;
    }
    if (event.size() != 2 || event[0].size() < 6) continue;
    std::uint16_t id = 0;
    std::memcpy(&id, event[0].data(), 2);
    const auto now = clock_.now();
    if (refusal_logged_ != Clock::time_point{} && now - refusal_logged_ < std::chrono::minutes(1)) continue;
    refusal_logged_ = now;
    if (id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
      log_->error("the coordinator at {} refused this site's key: is this site's kit admitted there "
                  "(fedda-admin admit {}), and not revoked? Retrying with backoff.",
                  o_.endpoint, o_.site_id);
    } else {
      log_->error("the secure handshake with {} failed: is this the consortium's coordinator (the kit names its key)? "
                  "Retrying with backoff.", o_.endpoint);
    }
  }
}

std::vector<Inbound> Session::poll(std::chrono::milliseconds wait, int wake_fd) {
  std::vector<Inbound> out;
  auto now = clock_.now();
  if (state_ == State::backing_off) {
    if (now >= reconnect_at_) {
      connect();
    } else {
      zmq::pollitem_t items[] = {{nullptr, wake_fd, ZMQ_POLLIN, 0}};
      try {
        if (wake_fd >= 0) zmq::poll(items, 1, wait);
      } catch (const zmq::error_t& e) {  // EINTR: SIGTERM while backing off; the loop sees it next
        if (e.num() != EINTR) log_->warn("poll: {}", e.what());
      }
      return out;
    }
  }
  std::vector<zmq::pollitem_t> items = {{socket_->handle(), 0, ZMQ_POLLIN, 0}};
  if (monitor_) items.push_back({monitor_->handle(), 0, ZMQ_POLLIN, 0});
  if (wake_fd >= 0) items.push_back({nullptr, wake_fd, ZMQ_POLLIN, 0});
  try {
    zmq::poll(items.data(), items.size(), wait);
  } catch (const zmq::error_t& e) {
    if (e.num() != EINTR) log_->warn("poll: {}", e.what());
  }
  if (monitor_ && (items[1].revents & ZMQ_POLLIN)) log_handshake_events();
  if (items[0].revents & ZMQ_POLLIN) {
    for (int n = 0; n < 16 && socket_; ++n) {
      std::vector<zmq::message_t> parts;
      try {
        if (!zmq::recv_multipart(*socket_, std::back_inserter(parts), zmq::recv_flags::dontwait)) break;
      } catch (const zmq::error_t& e) {
        log_->warn("receive: {}", e.what());
        break;
      }
      if (parts.size() != 2 && parts.size() != 3) {
        log_->warn("dropped a message of {} frames from the coordinator", parts.size());
        continue;
      }
      const std::string header_frame = parts[0].to_string();
      std::string body = parts[1].to_string();
      std::string signature = parts.size() == 3 ? parts[2].to_string() : std::string();
      auto h = protocol::decode_header(header_frame, body);
      if (!h) {
        log_->warn("dropped a malformed message from the coordinator: {}", h.error().message);
        continue;
      }
      handle(std::move(*h), std::move(body), std::move(signature), out);
    }
  }
  now = clock_.now();
  if (socket_ && now >= next_heartbeat_) {
    send(MessageType::heartbeat, "", 0, protocol::encode_empty(header(MessageType::heartbeat, "", 0)));
    next_heartbeat_ = now + heartbeat_;
  }
  if (socket_ && now - last_heard_ > heartbeat_ * liveness_) {
    log_->warn("coordinator silent for {} ms; reconnecting in {} ms",
               std::chrono::duration_cast<std::chrono::milliseconds>(now - last_heard_).count(), backoff_.count());
    disconnect();
    pending_.clear();
    state_ = State::backing_off;
    reconnect_at_ = now + backoff_;
    backoff_ = std::min(backoff_ * 2, o_.reconnect_max);
  }
  return out;
}

void Session::handle(protocol::Header h, std::string body, std::string signature, std::vector<Inbound>& out) {
  const auto now = clock_.now();
  // A welcome begins the coordinator's side of a session (its sequence numbers count from it); a
  // reject may come before any welcome. Everything else must move the sequence forward.
  const bool starts = h.type == MessageType::welcome || h.type == MessageType::reject;
  if (h.sender != protocol::kCoordinatorSender || (!starts && h.sequence <= coordinator_sequence_)) {
    log_->warn("dropped {} (sender '{}', sequence {} after {})", protocol::type_name(h.type), h.sender, h.sequence,
               coordinator_sequence_);
    return;
  }
  if (h.type != MessageType::reject) coordinator_sequence_ = h.sequence;
  last_heard_ = now;
  switch (h.type) {
    case MessageType::welcome: {
      auto w = protocol::decode_body<protocol::Welcome>(body);
      if (w && w->heartbeat_ms >= 10 && w->liveness >= 2) {
        heartbeat_ = std::chrono::milliseconds(w->heartbeat_ms);
        liveness_ = w->liveness;
      }
      backoff_ = o_.reconnect_min;
      state_ = State::joined;
      log_->info("site {}: joined the consortium at {}", o_.site_id, o_.endpoint);
      return;
    }
    case MessageType::heartbeat: return;
    case MessageType::job_offer:
    case MessageType::round_task:
    case MessageType::secagg_keys:
    case MessageType::secagg_roster:
    case MessageType::secagg_relay:
    case MessageType::secagg_unmask:
    case MessageType::logs_request:
      out.push_back({std::move(h), std::move(body), std::move(signature), now});
      return;
    case MessageType::upload: {
      const auto it = pending_.find({h.job_id, h.round});
      if (it == pending_.end()) {
        log_->warn("upload asked for job {} round {}, which this site has no update for", h.job_id, h.round);
        return;
      }
      const Pending& p = it->second;
      send(MessageType::round_update, h.job_id, h.round, p.frames, p.tensors);
      if (p.evaluation) {
        log_->info("job {}: evaluation uploaded ({:.1f} MB)", h.job_id, p.frames.body.size() / 1e6);
      } else {
        log_->info("job {}: round {} update uploaded ({:.1f} MB)", h.job_id, h.round, p.frames.body.size() / 1e6);
      }
      pending_.erase(it);
      return;
    }
    case MessageType::reject: {
      auto r = protocol::decode_body<protocol::Reject>(body);
      const auto code = r ? r->code : protocol::RejectCode::unspecified;
      const std::string reason = r ? r->reason : "(malformed)";
      switch (code) {
        case protocol::RejectCode::say_hello_first:
          log_->info("the coordinator does not know this session (it restarted?); saying hello again");
          if (now - last_hello_ > std::chrono::seconds(1)) hello();
          return;
        case protocol::RejectCode::revoked:
          log_->error("the consortium revoked this site's key ({}); the coordinator will not take part with it "
                      "until an operator admits it again", reason);
          return;
        case protocol::RejectCode::duplicate_session:
          log_->error("the coordinator refused this agent: {}", reason);
          refusal_ = reason;
          return;
        case protocol::RejectCode::not_registered:
          log_->error("the coordinator does not know site '{}' ({}): check site_id in site.yaml", o_.site_id, reason);
          return;
        default: log_->warn("the coordinator refused a message ({}): {}", protocol::reject_code_name(code), reason);
      }
      return;
    }
    case MessageType::goodbye:
      if (h.job_id.empty()) {
        auto g = protocol::decode_body<protocol::Goodbye>(body);
        log_->info("coordinator said goodbye: {}", g ? g->reason : "(no reason)");
      } else {
        out.push_back({std::move(h), std::move(body), {}, now});
      }
      return;
    default: log_->warn("dropped unexpected {} from the coordinator", protocol::type_name(h.type));
  }
}

}  // namespace fedda::site_agent
