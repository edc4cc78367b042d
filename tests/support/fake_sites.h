#pragma once
// Many lightweight fake sites in one thread: one DEALER per site, all polled together, each
// speaking the real protocol to a coordinator on loopback (hello, heartbeats, job_ready, and for
// every round task an update that returns the weights it got, announced and uploaded on credit).
// For tests and benchmarks of the coordinator at hundreds or thousands of sites without a
// thread per site. Without kits: the coordinator runs --insecure.

#include <sys/resource.h>

#include <atomic>
#include <cmath>
#include <functional>
#include <limits>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <optional>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "fedda/common/protocol.h"
#include "fedda/common/secagg.h"

namespace fedda::testing {

// How a fake site behaves. Honest sites return the weights they got; the others are the hostile
// or unlucky ones the coordinator must withstand.
enum class Behaviour {
  honest,
  nan_weights,          // an update holding NaN
  forged_count,         // an update claiming 100x the samples it declared
  huge_norm,            // weights moved 1000 times further than an honest site would
  extra_rows,           // evaluation answers with far more rows than declared, none a pseudonym (commas, quotes, a formula)
  reconnect_after_ready, // in round 1 it announces its update, then restarts (new connection, new hello)
  forged_shape,         // an update whose first tensor declares [2^20, 2^20] elements and holds no data
  bad_precision,        // an update whose precision field is not UTF-8 ("float32\xff")
  inflated_count,       // declares 10000 samples when it gets ready and sends updates that match
  bad_device,           // a hello whose device is not UTF-8 and holds a forged log line
  foreign_failure,      // says job_failed for the job "waiting", which it is not a site of, with a long multibyte
                        // reason, at every heartbeat of the coordinator
  overflowing_count,    // declares INT64_MAX samples when it gets ready (and is honest should it get a task)
  refuses,              // answers every offer with job_failed (code policy, rule job_types), as a site whose
                        // policy does not run the job
  reports_epsilon,      // honest, and each update says it spent epsilon kEpsilonPerRound x the round (noise 1.5),
                        // as a site training under differential privacy does
  steady_steps,         // honest, and every step it is asked for moves each parameter by kSteadyStep (a constant
                        // gradient): it returns the weights it got plus kSteadyStep x its steps, and says it took them
};

// The samples a site of `behaviour` declares in its job_ready.
inline std::int64_t declared_samples(Behaviour behaviour) {
  if (behaviour == Behaviour::inflated_count) return 10000;
  if (behaviour == Behaviour::overflowing_count) return std::numeric_limits<std::int64_t>::max();
  return 100;
}

// What every fake site's hello says of its machine.
inline const protocol::SiteResources kFakeResources{4, std::int64_t{8} << 30, std::int64_t{50} << 30, {"Fake GPU 80GB"},
                                                    "float32"};

// The epsilon a reports_epsilon site says it spent per round.
inline constexpr double kEpsilonPerRound = 0.25;

// How far a steady_steps site moves each parameter in one local step.
inline constexpr float kSteadyStep = 0.001f;

class FakeSites {
 public:
  // Connects `count` sites named prefix0, prefix1, ... to `endpoint` and serves them on a thread
  // until destroyed. `behaviour(i)` chooses site i's (default: all honest), `device(i)` the
  // device its hello names (default "cpu"; a hostile site may send any text).
  FakeSites(const std::string& endpoint, int count, std::string prefix = "site",
            std::chrono::milliseconds heartbeat = std::chrono::milliseconds(1000),
            std::function<Behaviour(int)> behaviour = {}, std::function<std::string(int)> device = {})
      : endpoint_(endpoint), heartbeat_(heartbeat) {
    raise_open_file_limit();
    context_.set(zmq::ctxopt::max_sockets, count + 64);
    for (int i = 0; i < count; ++i) {
      auto site = std::make_unique<Site>();
      site->id = prefix + std::to_string(i);
      site->behaviour = behaviour ? behaviour(i) : Behaviour::honest;
      site->device = device ? device(i) : "cpu";
      site->socket = zmq::socket_t(context_, zmq::socket_type::dealer);
      site->socket.set(zmq::sockopt::linger, 0);
      site->socket.connect(endpoint);
      sites_.push_back(std::move(site));
    }
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeSites() {
    stop_ = true;
    thread_.join();
  }
  FakeSites(const FakeSites&) = delete;
  FakeSites& operator=(const FakeSites&) = delete;

  int updates_sent() const { return updates_; }
  // Bytes of message bodies the sites sent (heartbeats aside), and the seconds they spent in
  // secure aggregation's cryptography (keys, shares, masks, unmasking), all sites together.
  std::int64_t bytes_sent() const { return bytes_; }
  double secure_seconds() const { return static_cast<double>(secure_us_) / 1e6; }

  // Lifts this process's open-file limit to its hard limit (each site is a socket and a mailbox).
  static void raise_open_file_limit() {
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
      limit.rlim_cur = limit.rlim_max;
      setrlimit(RLIMIT_NOFILE, &limit);
    }
  }

 private:
  struct Site {
    std::string id;
    Behaviour behaviour = Behaviour::honest;
    std::string device;
    zmq::socket_t socket;
    std::uint64_t sequence = 0;
    std::chrono::steady_clock::time_point next_heartbeat{};
    bool restarted = false;
    protocol::Frames own_update;  // a hostile site's own (not shared) update
    // Secure aggregation (a job with secure_aggregation: true): the round's client, and the
    // update held until the shares are relayed.
    std::unique_ptr<secagg::Client> secure;
    std::pair<std::string, int> secure_round;
    std::optional<TensorSet> held;
    std::optional<secagg::ShareRelay> relay;
  };
  // Every site returns the weights it got, so one encoded update per round serves them all
  // (a model-sized buffer per site would be the fakes' memory, not the coordinator's).
  struct SharedUpdate {
    std::string job;
    int round = -1;
    protocol::Frames frames;
  };

  void send(Site& s, protocol::MessageType type, const std::string& job, int round, const protocol::Frames& f) {
    protocol::Header h;
    h.type = type;
    h.sender = s.id;
    h.job_id = job;
    h.round = round;
    h.sequence = ++s.sequence;
    h.body_bytes = f.body.size();
    h.body_crc32 = f.body_crc32;
    if (type != protocol::MessageType::heartbeat) bytes_ += static_cast<std::int64_t>(f.body.size());
    const auto header = protocol::encode_header(h);
    s.socket.send(zmq::buffer(header), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    s.socket.send(zmq::buffer(f.body), zmq::send_flags::dontwait);
  }

  // `f` with the bytes `marker` replaced by `with` (as long, so every length stays right) and its CRC renewed: a
  // string the encoder would repair, sent as a hostile peer would.
  static protocol::Frames patched(protocol::Frames f, const std::string& marker, const std::string& with) {
    const auto at = f.body.find(marker);
    if (at != std::string::npos) f.body.replace(at, marker.size(), with);
    f.body_crc32 = crc32_of(f.body);
    return f;
  }
  protocol::Frames hello_of(const Site& s) const {
    if (s.behaviour != Behaviour::bad_device) {
      return protocol::encode(protocol::Header{}, protocol::Hello{s.id, "fake", s.device, 0, 0, kFakeResources});
    }
    const std::string marker = "cpu#NEWLINE#[coordinator] [warning] site utrecht: revoked by alice";
    return patched(protocol::encode(protocol::Header{}, protocol::Hello{s.id, "fake", marker, 0, 0, kFakeResources}), "#NEWLINE#", std::string("\xff\n\xfe\x1b[2J\n\xc0", 9));
  }

  void handle(Site& s) {
    for (int n = 0; n < 8; ++n) {
      std::vector<zmq::message_t> parts;
      if (!zmq::recv_multipart(s.socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) return;
      if (parts.size() < 2) continue;
      auto h = protocol::decode_header(parts[0].to_string(), parts[1].to_string());
      if (!h) continue;
      using protocol::MessageType;
      if (secure_stage(s, *h, parts[1].to_string())) continue;
      if (h->type == MessageType::reject) {
        // Counted as gone (heartbeats missed on a starved machine) and told to say hello first:
        // a new session, as a real agent opens one; its jobs are offered to it again.
        auto reject = protocol::decode_body<protocol::Reject>(parts[1].to_string());
        if (reject && reject->code == protocol::RejectCode::say_hello_first) send(s, MessageType::hello, "", 0, hello_of(s));
        continue;
      }
      if (h->type == MessageType::heartbeat && s.behaviour == Behaviour::foreign_failure) {  // again while the job runs
        protocol::JobFailed failed;
        failed.reason = "x";
        for (int i = 0; i < 400; ++i) failed.reason += "\u00e9\u4e2d";  // 5 bytes a pair: a cut at 1000 bytes splits one
        send(s, MessageType::job_failed, "waiting", 0, protocol::encode(protocol::Header{}, failed));
      } else if (h->type == MessageType::job_offer) {
        if (!job_sites_.count(h->job_id)) {  // decoded once for all the fakes: a secure round's roster is checked against it
          auto offer = protocol::decode_body<protocol::JobOffer>(parts[1].to_string());
          if (offer) job_sites_[h->job_id] = offer->job.sites;
          if (offer) job_steps_[h->job_id] = offer->job.local_steps;
        }
        if (s.behaviour == Behaviour::refuses) {
          protocol::JobFailed refused;
          refused.code = protocol::FailureCode::policy;
          refused.rule = "job_types";
          refused.reason = "refused by this site's policy";
          send(s, MessageType::job_failed, h->job_id, 0, protocol::encode(protocol::Header{}, refused));
          continue;
        }
        protocol::JobReady ready;
        ready.samples = declared_samples(s.behaviour);
        ready.subjects = 1;
        ready.evaluation_subjects = 2;
        send(s, MessageType::job_ready, h->job_id, 0, protocol::encode(protocol::Header{}, ready));
      } else if (h->type == MessageType::round_task) {
        auto task = protocol::decode_body<protocol::RoundTask>(parts[1].to_string());
        if (!task) continue;
        if (task->evaluate) {
          protocol::RoundUpdate u;
          const int rows = s.behaviour == Behaviour::extra_rows ? 50 : 2;
          for (int r = 0; r < rows; ++r) {
            const std::string subject = s.behaviour == Behaviour::extra_rows
                                            ? "p" + std::to_string(r) + ",\"forged\",evil,=HYPERLINK(\"x\")"
                                            : "s-00000000000000" + std::to_string(10 + r);  // a pseudonym's form
            u.metrics.push_back({subject, 0.5, 1, 2, 0.5, 0.5});
          }
          s.own_update = protocol::encode(protocol::Header{}, u);
        } else if (s.secure && s.secure_round == std::make_pair(h->job_id, static_cast<int>(h->round))) {
          s.held = std::move(task->model);  // masked and announced once the shares are relayed
          release(s);
          continue;
        } else if (s.behaviour == Behaviour::forged_shape || s.behaviour == Behaviour::bad_precision ||
                   s.behaviour == Behaviour::inflated_count) {
          protocol::RoundUpdate u;
          u.model = std::move(task->model);
          u.samples = s.behaviour == Behaviour::inflated_count ? 10000 : 100;
          u.steps = 1;
          u.precision = "float32#";
          if (s.behaviour == Behaviour::forged_shape) {
            u.model.tensors.front().shape = {std::int64_t{1} << 20, std::int64_t{1} << 20};
            u.model.tensors.front().data.clear();
            u.model.tensors.front().crc32 = crc32_of(u.model.tensors.front().data);
          }
          s.own_update = protocol::encode(protocol::Header{}, u);
          if (s.behaviour == Behaviour::bad_precision) s.own_update = patched(s.own_update, "float32#", "float32\xff");
        } else if (s.behaviour == Behaviour::reports_epsilon) {
          protocol::RoundUpdate u;
          u.model = std::move(task->model);
          u.samples = 100;
          u.steps = 1;
          u.loss = 1.0 / (1 + h->round);
          u.epsilon = kEpsilonPerRound * h->round;
          u.noise_multiplier = 1.5;
          s.own_update = protocol::encode(protocol::Header{}, u);
        } else if (s.behaviour == Behaviour::steady_steps) {
          protocol::RoundUpdate u;
          u.samples = 100;
          u.steps = job_steps_[h->job_id];
          for (std::size_t i = 0; i < task->step_sites.size() && i < task->steps.size(); ++i) {
            if (task->step_sites[i] == s.id) u.steps = task->steps[i];
          }
          u.model = std::move(task->model);
          for (auto& t : u.model.tensors) {
            if (t.dtype != DType::f32 || !protocol::is_parameter(t.name)) continue;
            auto values = to_f32(t);
            for (auto& v : values) v += kSteadyStep * static_cast<float>(u.steps);
            t = make_f32(t.name, t.shape, values);
          }
          s.own_update = protocol::encode(protocol::Header{}, u);
        } else if (s.behaviour == Behaviour::honest || s.behaviour == Behaviour::reconnect_after_ready ||
                   s.behaviour == Behaviour::overflowing_count) {
          if (update_.job != h->job_id || update_.round != h->round) {
            protocol::RoundUpdate u;
            u.model = std::move(task->model);
            u.samples = 100;
            u.steps = 1;
            u.loss = 1.0 / (1 + h->round);  // a falling curve for the status page; nothing trains here
            update_ = {h->job_id, h->round, protocol::encode(protocol::Header{}, u)};
          }
          s.own_update = {};
        } else {
          protocol::RoundUpdate u;
          u.model = std::move(task->model);
          u.samples = s.behaviour == Behaviour::forged_count ? 10000 : 100;
          u.steps = 1;
          for (auto& t : u.model.tensors) {
            if (t.dtype != DType::f32) continue;
            auto values = to_f32(t);
            for (auto& v : values) v = s.behaviour == Behaviour::nan_weights ? std::nanf("") : v + 1000.0f;
            t = make_f32(t.name, t.shape, values);
          }
          s.own_update = protocol::encode(protocol::Header{}, u);
        }
        send(s, MessageType::update_ready, h->job_id, h->round, protocol::encode_empty(protocol::Header{}));
        if (s.behaviour == Behaviour::reconnect_after_ready && h->round == 1 && !s.restarted) {
          s.restarted = true;  // as if killed between update_ready and its upload, and started again
          s.socket = zmq::socket_t(context_, zmq::socket_type::dealer);
          s.socket.set(zmq::sockopt::linger, 0);
          s.socket.connect(endpoint_);
          send(s, MessageType::hello, "", 0, hello_of(s));
          reconnected_ = true;
          return;
        }
      } else if (h->type == MessageType::upload) {
        if (!s.own_update.body.empty()) {
          send(s, MessageType::round_update, h->job_id, h->round, s.own_update);
          s.own_update = {};
          ++updates_;
        } else if (update_.job == h->job_id && update_.round == h->round) {
          send(s, MessageType::round_update, h->job_id, h->round, update_.frames);
          ++updates_;
        }
      }
    }
  }

  // Secure aggregation's stages, as fedda-agent answers them (unsigned: no kits here).
  bool secure_stage(Site& s, const protocol::Header& h, const std::string& body) {
    using protocol::MessageType;
    const auto start = std::chrono::steady_clock::now();
    const auto timed = [&] {
      secure_us_ += std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start).count();
    };
    switch (h.type) {
      case MessageType::secagg_keys: {
        s.secure = std::make_unique<secagg::Client>(s.id, secagg::round_context(h.job_id, h.round), job_sites_[h.job_id]);
        s.secure_round = {h.job_id, h.round};
        s.held.reset();
        s.relay.reset();
        auto keys = s.secure->advertise();
        timed();
        if (keys) send(s, MessageType::secagg_keys, h.job_id, h.round, protocol::encode(protocol::Header{}, *keys));
        return true;
      }
      case MessageType::secagg_roster: {
        auto roster = protocol::decode_body<secagg::Roster>(body);
        if (!roster || !s.secure) return true;
        auto shares = s.secure->share(*roster);
        timed();
        if (shares) send(s, MessageType::secagg_shares, h.job_id, h.round, protocol::encode(protocol::Header{}, protocol::SecaggShares{*shares}));
        return true;
      }
      case MessageType::secagg_relay: {
        auto relay = protocol::decode_body<secagg::ShareRelay>(body);
        if (!relay || !s.secure) return true;
        s.relay = std::move(*relay);
        release(s);
        return true;
      }
      case MessageType::secagg_unmask: {
        auto request = protocol::decode_body<protocol::SecaggUnmask>(body);
        if (!request || !s.secure) return true;
        auto shares = s.secure->unmask(request->masked);
        timed();
        protocol::SecaggUnmask answer;
        if (shares) answer.shares = std::move(*shares);
        send(s, MessageType::secagg_unmask, h.job_id, h.round, protocol::encode(protocol::Header{}, answer));
        return true;
      }
      default: return false;
    }
  }

  // A secure round's update, once both the task's model and the relayed shares are here.
  void release(Site& s) {
    if (!s.held || !s.relay) return;
    const auto start = std::chrono::steady_clock::now();
    const TensorSet none;
    auto masked = s.secure->mask(*s.relay, {&*s.held, &none}, 100.0);
    s.held.reset();
    s.relay.reset();
    if (!masked) return;
    protocol::RoundUpdate u;
    u.samples = 100;
    u.steps = 1;
    u.loss = 1.0 / (1 + s.secure_round.second);
    u.masked = secagg::to_bytes(*masked);
    s.own_update = protocol::encode(protocol::Header{}, u);
    secure_us_ += std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start).count();
    send(s, protocol::MessageType::update_ready, s.secure_round.first, s.secure_round.second, protocol::encode_empty(protocol::Header{}));
  }

  void serve() {
    for (auto& s : sites_) {
      send(*s, protocol::MessageType::hello, "", 0, hello_of(*s));
      s->next_heartbeat = std::chrono::steady_clock::now() + heartbeat_;
    }
    std::vector<zmq::pollitem_t> items;
    for (auto& s : sites_) items.push_back({s->socket.handle(), 0, ZMQ_POLLIN, 0});
    while (!stop_) {
      if (reconnected_) {
        reconnected_ = false;
        for (std::size_t i = 0; i < sites_.size(); ++i) items[i].socket = sites_[i]->socket.handle();
      }
      const auto now = std::chrono::steady_clock::now();
      for (auto& s : sites_) {
        if (now >= s->next_heartbeat) {
          send(*s, protocol::MessageType::heartbeat, "", 0, protocol::encode_empty(protocol::Header{}));
          s->next_heartbeat = now + heartbeat_;
        }
      }
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(20));
      for (std::size_t i = 0; i < items.size(); ++i) {
        if ((items[i].revents & ZMQ_POLLIN) && items[i].socket == sites_[i]->socket.handle()) handle(*sites_[i]);
      }
    }
  }

  zmq::context_t context_;
  std::string endpoint_;
  std::chrono::milliseconds heartbeat_;
  bool reconnected_ = false;  // a socket was replaced: the poll items are rebuilt
  std::vector<std::unique_ptr<Site>> sites_;
  std::map<std::string, std::vector<std::string>> job_sites_;  // by job: its sites, from its offer
  std::map<std::string, int> job_steps_;                       // by job: its local_steps, from its offer
  SharedUpdate update_;
  std::atomic<bool> stop_{false};
  std::atomic<int> updates_{0};
  std::atomic<std::int64_t> bytes_{0}, secure_us_{0};
  std::thread thread_;
};

}  // namespace fedda::testing
