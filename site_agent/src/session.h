#pragma once
// The agent's session with the coordinator (the Paranoid Pirate pattern of the ZeroMQ guide, in
// cppzmq's typed API): a DEALER that connects, says hello, heartbeats, counts the coordinator
// gone after `liveness` silent heartbeats and reconnects with exponential backoff, and holds each
// round's update until the coordinator grants upload credit. Job offers, round tasks and a job's
// goodbye are handed to the owner; everything else the session answers itself.
//
// Sends never block: a message the socket cannot take at once (no connection, a refused key,
// a full queue) is dropped with a log line, and the session's own timers decide what happens
// next. A refused CurveZMQ handshake is told to the site's administrator in their words.
//
// The clock and the ZeroMQ context are parameters, so tests run a session against a fake
// coordinator over inproc:// with a manual clock and deterministic timeouts. Used by one thread
// (the agent's network loop); not thread-safe.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <zmq.hpp>

#include "fedda/common/log.h"
#include "fedda/common/protocol.h"

namespace fedda::site_agent {

using Clock = std::chrono::steady_clock;

class AuditLog;

// What the session reads the time from; tests substitute a manual clock.
class SessionClock {
 public:
  virtual ~SessionClock() = default;
  virtual Clock::time_point now() const = 0;
};
const SessionClock& steady_session_clock();

struct CurveKeys {
  std::string coordinator_public, site_public, site_secret;  // Z85
};

struct SessionOptions {
  std::string site_id;
  std::string endpoint;
  std::string agent_version, device;
  int threads = 0;
  std::chrono::milliseconds heartbeat{protocol::kDefaultHeartbeatMs};  // until the welcome says otherwise
  int liveness = protocol::kDefaultLiveness;
  std::chrono::milliseconds reconnect_min{500}, reconnect_max{30000};
  std::optional<CurveKeys> curve;
  const SessionClock* clock = nullptr;  // default: steady_session_clock()
  // Read at each hello (free space changes); none: the hello says every resource is unknown.
  std::function<protocol::SiteResources()> resources;
};

// A message for the owner: a job offer, a round task or a job's goodbye.
struct Inbound {
  protocol::Header header;
  std::string body;
  std::string signature;  // of a model message, when the consortium signs them
  Clock::time_point arrived{};
};

class Session {
 public:
  enum class State { connected, joined, backing_off };

  // Connects at once. `audit` (may be null) records every message sent.
  Session(zmq::context_t& context, SessionOptions options, AuditLog* audit);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // One turn: waits up to `wait` for a message from the coordinator (or for `wake_fd` to become
  // readable), answers what is the session's to answer, sends a heartbeat when one is due,
  // reconnects after silence or backoff. Returns the messages for the owner.
  std::vector<Inbound> poll(std::chrono::milliseconds wait, int wake_fd = -1);

  // Sends a message now (dropped with a log line if the socket cannot take it without blocking).
  // `tensors` and `detail` are for the audit log (the tensors carried; a failure's full text).
  void send(protocol::MessageType type, const std::string& job_id, int round, const protocol::Frames& frames,
            const std::string& tensors = {}, const std::string& detail = {});
  // A round's update: announced (update_ready) now, sent when the coordinator grants credit.
  // `evaluation`: it carries an evaluation's scores (the log says so instead of a round number).
  void offer_update(const std::string& job_id, int round, protocol::Frames frames, std::string tensors,
                    bool evaluation = false);
  bool holds_updates() const { return !pending_.empty(); }
  // Tells the coordinator the agent is leaving and lingers briefly so the message goes out.
  void say_goodbye(const std::string& reason);

  State state() const { return state_; }
  std::chrono::milliseconds backoff() const { return backoff_; }
  std::chrono::milliseconds heartbeat() const { return heartbeat_; }
  int connects() const { return connects_; }
  // Set when the coordinator refused this agent for good (another agent holds the site's key and
  // was there first): the reason, and the agent should stop. Empty otherwise.
  const std::string& refusal() const { return refusal_; }

 private:
  void connect();
  void disconnect();
  void hello();
  void handle(protocol::Header h, std::string body, std::string signature, std::vector<Inbound>& out);
  void log_handshake_events();
  protocol::Header header(protocol::MessageType type, const std::string& job_id, int round) const;

  zmq::context_t& context_;
  SessionOptions o_;
  const SessionClock& clock_;
  AuditLog* audit_;
  std::shared_ptr<spdlog::logger> log_ = log::get("agent");
  std::unique_ptr<zmq::socket_t> socket_, monitor_;
  State state_ = State::connected;
  std::chrono::milliseconds heartbeat_, backoff_;
  int liveness_;
  int connects_ = 0;
  Clock::time_point last_heard_{}, next_heartbeat_{}, last_hello_{}, reconnect_at_{}, refusal_logged_{};
  std::string refusal_;
  std::uint64_t instance_ = 0;  // this process's, in every hello (protocol::Hello::instance)
  std::uint64_t sequence_ = 0;              // this agent's, per process
  std::uint64_t coordinator_sequence_ = 0;  // the coordinator's last, per session (from its welcome)
  struct Pending {
    protocol::Frames frames;
    std::string tensors;
    bool evaluation = false;
  };
  std::map<std::pair<std::string, int>, Pending> pending_;  // awaiting credit
};

}  // namespace fedda::site_agent
