#pragma once
// A structure-aware fuzzer of the coordinator's message handlers, through the real process on
// loopback: peers that speak the protocol well enough to get where the handlers are (a hello, a
// job_ready when offered a job, update_ready and an upload when given a round task and upload
// credit) and then send every kind of message with mutated fields (shapes, dtypes, counts,
// strings that are not UTF-8 or hold control characters, versions, rounds, sequences, job ids)
// or mutated bytes (flipped, cut, extended), plus operator requests with mutated commands and
// targets on the admin endpoint. It asserts nothing itself: a test checks the coordinator
// afterwards (still running, memory bounded, the honest path working). Without kits: the
// coordinator runs --insecure. One thread; not thread-safe.
//
// Every choice it makes is a number drawn from `draw`: a seeded generator for the timed test,
// or two bytes of a libFuzzer input at a time (fuzz/coordinator_fuzzer.cpp), so that coverage
// guides the choices there; a draw of 0 picks the first of the choices and says no to a chance.

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "fedda/common/protocol.h"

namespace fedda::testing {

class PeerFuzzer {
 public:
  struct Figures {
    std::int64_t messages = 0, bytes = 0, admin_requests = 0, replies = 0, updates = 0;
  };

  // `peers` ids fuzz0, fuzz1, ...; `job` is the job whose messages are forged (its id and the
  // layout of the round tasks it sends are used).
  PeerFuzzer(const std::string& endpoint, const std::string& admin_endpoint, int peers, std::string job, std::uint64_t seed)
      : PeerFuzzer(endpoint, admin_endpoint, peers, std::move(job), std::function<std::uint64_t()>(std::mt19937_64(seed))) {}

  // The same, every choice drawn from `draw` (it may be changed with draw_from).
  PeerFuzzer(const std::string& endpoint, const std::string& admin_endpoint, int peers, std::string job,
             std::function<std::uint64_t()> draw)
      : job_(std::move(job)), draw_(std::move(draw)) {
    for (int i = 0; i < peers; ++i) {
      auto p = std::make_unique<Peer>();
      p->id = "fuzz" + std::to_string(i);
      p->socket = zmq::socket_t(context_, zmq::socket_type::dealer);
      p->socket.set(zmq::sockopt::linger, 0);
      p->socket.set(zmq::sockopt::sndhwm, 1000);
      p->socket.connect(endpoint);
      peers_.push_back(std::move(p));
    }
    admin_ = zmq::socket_t(context_, zmq::socket_type::dealer);
    admin_.set(zmq::sockopt::linger, 0);
    admin_.connect(admin_endpoint);
  }

  // Sends mutated messages until `seconds` have passed.
  Figures run(std::chrono::duration<double> seconds) {
    start();
    const auto until = std::chrono::steady_clock::now() + seconds;
    while (std::chrono::steady_clock::now() < until) step();
    return figures_;
  }

  // Each peer says hello.
  void start() {
    for (auto& p : peers_) send(*p, protocol::MessageType::hello, "", 0, protocol::encode(protocol::Header{}, hello_of(*p)), false);
  }

  // Answers what came (offers, tasks, upload credit), then forges one message.
  void step() {
    for (auto& p : peers_) answer(*p);
    drain_admin();
    auto& p = *peers_[pick(peers_.size())];
    if (chance(0.02)) {
      forge_admin();
    } else {
      forge(p);
    }
  }

  void draw_from(std::function<std::uint64_t()> draw) { draw_ = std::move(draw); }
  const Figures& figures() const { return figures_; }

 private:
  struct Peer {
    std::string id;
    zmq::socket_t socket;
    std::uint64_t sequence = 0;
    std::optional<TensorSet> layout;  // the last round task's model: what an update must look like
    int round = 0;
  };

  std::size_t pick(std::size_t n) { return static_cast<std::size_t>(draw_() % n); }
  // In thousandths, counted from the top: a draw of 0 (a fuzzer input that has run out) is "no".
  bool chance(double p) { return static_cast<double>(draw_() % 1000) >= 1000.0 * (1.0 - p); }

  // A string a hostile peer might send: plain, empty, long, not UTF-8, with control characters
  // or a forged log line, or a known id.
  std::string text() {
    switch (pick(9)) {
      case 0: return "";
      case 1: return "site0";
      case 2: return job_;
      case 3: return std::string(pick(20) == 0 ? 70000 : 300, "xé中"[pick(3)]);
      case 4: return "float32\xff";
      case 5: return "a\nb\r\x1b[2J\x7f";
      case 6: return "\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80";
      case 7: return std::string("\0\0", 2) + "ok";
      default: {
        std::string s(pick(40), ' ');
        for (auto& c : s) c = static_cast<char>(pick(256));
        return s;
      }
    }
  }
  std::int64_t count() {
    static const std::int64_t values[] = {0, 1, 100, -1, 10000, std::int64_t{1} << 40, INT64_MIN, INT64_MAX};
    return values[pick(8)];
  }

  protocol::Hello hello_of(const Peer& p) {
    protocol::SiteResources r;  // what an agent says of its machine, any of it forged
    r.cores = static_cast<std::int32_t>(count());
    r.memory_bytes = count();
    r.cache_free_bytes = count();
    for (std::size_t i = pick(3) == 0 ? 500 : pick(3); i > 0; --i) r.gpus.push_back(text());
    r.precision = chance(0.5) ? "float32" : text();
    return protocol::Hello{p.id, "fuzz", chance(0.3) ? text() : "cpu", 0, 0, r};
  }

  TensorSet mutated(TensorSet set) {
    if (set.tensors.empty()) set.tensors.push_back(make_f32("w", {2}, {1, 2}));
    auto& t = set.tensors[pick(set.tensors.size())];
    switch (pick(8)) {
      case 0: t.shape = {std::int64_t{1} << 20, std::int64_t{1} << 20}; break;
      case 1: t.shape.push_back(static_cast<std::int64_t>(pick(5)) - 1); break;
      case 2: t.dtype = static_cast<DType>(pick(256)); break;
      case 3: t.data.resize(t.data.size() / 2); break;
      case 4: set.tensors.pop_back(); break;
      case 5: set.tensors.push_back(set.tensors.front()); break;
      case 6: t.name = text(); break;
      default: {
        auto values = to_f32(t);
        if (!values.empty()) values[pick(values.size())] = chance(0.5) ? NAN : 1e30f;
        if (t.dtype == DType::f32) t = make_f32(t.name, t.shape, values);
      }
    }
    if (chance(0.8)) seal(set);
    return set;
  }

  protocol::RoundUpdate update(const Peer& p) {
    protocol::RoundUpdate u;
    if (p.layout) u.model = chance(0.2) ? *p.layout : mutated(*p.layout);
    u.samples = chance(0.5) ? 100 : count();
    u.steps = static_cast<std::int32_t>(count());
    u.loss = chance(0.5) ? 0.5 : NAN;
    u.precision = text();
    if (chance(0.3)) u.metrics.push_back({text(), NAN, 1, 2, 0.5, 0.5});
    if (chance(0.1)) u.masked = text();
    return u;
  }

  // A message of a random kind with random content, sometimes with its bytes or header mutated.
  void forge(Peer& p) {
    using protocol::MessageType;
    const std::string job = chance(0.8) ? job_ : text();
    const int round = chance(0.7) ? p.round : static_cast<int>(count());
    protocol::Frames f;
    MessageType type;
    switch (pick(12)) {
      case 0: type = MessageType::hello; f = protocol::encode(protocol::Header{}, hello_of(p)); break;
      case 1: {
        type = MessageType::job_ready;
        protocol::JobReady r;
        r.samples = count();
        r.subjects = static_cast<std::int32_t>(count());
        r.evaluation_subjects = static_cast<std::int32_t>(count());
        for (std::size_t i = pick(3) == 0 ? 2000 : pick(3); i > 0; --i) r.skipped.push_back({text(), text()});
        f = protocol::encode(protocol::Header{}, r);
        break;
      }
      case 2: {
        type = MessageType::job_failed;
        protocol::JobFailed x;
        x.reason = text();
        x.code = static_cast<protocol::FailureCode>(pick(65536));
        x.rule = text();
        f = protocol::encode(protocol::Header{}, x);
        break;
      }
      case 3: type = MessageType::job_pending; f = protocol::encode(protocol::Header{}, protocol::JobPending{text()}); break;
      case 4: type = MessageType::update_ready; f = protocol::encode_empty(protocol::Header{}); break;
      case 5:
      case 6: type = MessageType::round_update; f = protocol::encode(protocol::Header{}, update(p)); break;
      case 7: {
        type = MessageType::secagg_keys;
        secagg::PublicKeys k;
        k.site = chance(0.5) ? p.id : text();
        k.share_key = text();
        k.mask_key = text();
        f = protocol::encode(protocol::Header{}, k);
        break;
      }
      case 8: {
        type = chance(0.5) ? MessageType::secagg_shares : MessageType::secagg_unmask;
        protocol::SecaggUnmask u;
        u.masked = {text(), p.id};
        u.shares.push_back({chance(0.5) ? p.id : text(), static_cast<secagg::SecretKind>(pick(256)),
                            static_cast<std::uint8_t>(pick(256)), text()});
        protocol::SecaggShares shares;
        shares.shares.push_back({chance(0.5) ? p.id : text(), text(), text()});
        f = type == MessageType::secagg_shares ? protocol::encode(protocol::Header{}, shares)
                                               : protocol::encode(protocol::Header{}, u);
        break;
      }
      case 9: type = static_cast<MessageType>(pick(256)); f = protocol::encode(protocol::Header{}, update(p)); break;
      case 10: {  // an answer to a logs request no operator made, or to another site's
        type = MessageType::logs_reply;
        protocol::LogsReply r;
        r.request = chance(0.5) ? "logs-" + std::to_string(pick(4)) : text();
        r.policy = text();
        for (std::size_t i = pick(3) == 0 ? 3000 : pick(4); i > 0; --i) r.lines.push_back(text());
        f = protocol::encode(protocol::Header{}, r);
        break;
      }
      default: type = MessageType::goodbye; f = protocol::encode(protocol::Header{}, protocol::Goodbye{text()}); break;
    }
    if (chance(0.3)) {  // the bytes themselves
      auto& b = f.body;
      switch (pick(4)) {
        case 0: if (!b.empty()) b[pick(b.size())] = static_cast<char>(pick(256)); break;
        case 1: b.resize(pick(b.size() + 1)); break;
        case 2: b += text(); break;
        default:
          if (b.size() >= 12) {  // a length field forged
            const std::uint64_t huge = static_cast<std::uint64_t>(count());
            std::memcpy(b.data() + pick(b.size() - 8), &huge, 8);
          }
      }
      if (chance(0.8)) f.body_crc32 = crc32_of(b);
    }
    send(p, type, job, round, f, chance(0.1));
    if (type == MessageType::goodbye || type == MessageType::hello) {
      send(p, MessageType::hello, "", 0, protocol::encode(protocol::Header{}, hello_of(p)), false);  // back in
    }
  }

  // What an agent would answer, so the fuzzer gets to the round handlers: job_ready for an
  // offer, update_ready for a task, an update (mutated) for upload credit.
  void answer(Peer& p) {
    using protocol::MessageType;
    for (int n = 0; n < 16; ++n) {
      std::vector<zmq::message_t> parts;
      if (!zmq::recv_multipart(p.socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) return;
      if (parts.size() < 2) continue;
      auto h = protocol::decode_header(parts[0].to_string(), parts[1].to_string());
      if (!h) continue;
      if (h->type == MessageType::job_offer) {
        protocol::JobReady r;
        r.samples = chance(0.7) ? 100 : count();
        r.subjects = 1;
        send(p, MessageType::job_ready, h->job_id, 0, protocol::encode(protocol::Header{}, r), false);
      } else if (h->type == MessageType::round_task) {
        if (auto task = protocol::decode_body<protocol::RoundTask>(parts[1].to_string())) p.layout = std::move(task->model);
        p.round = static_cast<int>(h->round);
        send(p, MessageType::update_ready, h->job_id, h->round, protocol::encode_empty(protocol::Header{}), false);
      } else if (h->type == MessageType::upload) {
        send(p, MessageType::round_update, h->job_id, h->round, protocol::encode(protocol::Header{}, update(p)), false);
        ++figures_.updates;
      }
    }
  }

  void forge_admin() {
    static const char* commands[] = {"status", "jobs", "sites", "abort", "resume", "download", "admit", "revoke", "submit"};
    protocol::AdminRequest r;
    r.command = chance(0.8) ? commands[pick(9)] : text();
    // Never the fuzzed job's abort: the test needs it running. Any other target, any text.
    r.target = chance(0.5) ? text() : "no-such-job";
    if (r.command == "abort" || r.command == "revoke") r.target = "no-such-" + std::to_string(pick(10));
    r.job_yaml = chance(0.5) ? text() : "id: x\ntype: teacher\nsites: [" + text() + "]\n";
    r.job_file = text();
    protocol::Header h;
    h.type = protocol::MessageType::admin_request;
    h.sender = chance(0.8) ? "fuzzer" : text();
    h.sequence = ++admin_sequence_;
    auto f = protocol::encode(h, r);
    if (chance(0.2) && !f.body.empty()) f.body[pick(f.body.size())] = static_cast<char>(pick(256));
    h.body_bytes = f.body.size();
    h.body_crc32 = crc32_of(f.body);
    const auto header = protocol::encode_header(h);
    admin_.send(zmq::buffer(header), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    admin_.send(zmq::buffer(f.body), zmq::send_flags::dontwait);
    ++figures_.admin_requests;
  }

  void drain_admin() {
    for (;;) {
      std::vector<zmq::message_t> parts;
      if (!zmq::recv_multipart(admin_, std::back_inserter(parts), zmq::recv_flags::dontwait)) return;
      ++figures_.replies;
    }
  }

  void send(Peer& p, protocol::MessageType type, const std::string& job, int round, const protocol::Frames& f, bool forge_header) {
    protocol::Header h;
    h.type = type;
    h.sender = forge_header && chance(0.5) ? text() : p.id;
    h.job_id = job;
    h.round = round;
    h.sequence = forge_header && chance(0.5) ? static_cast<std::uint64_t>(count()) : ++p.sequence;
    h.body_bytes = forge_header && chance(0.5) ? static_cast<std::uint64_t>(count()) : f.body.size();
    h.body_crc32 = f.body_crc32;
    auto header = protocol::encode_header(h);
    if (forge_header && chance(0.3) && !header.empty()) header[pick(header.size())] = static_cast<char>(pick(256));
    p.socket.send(zmq::buffer(header), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    p.socket.send(zmq::buffer(f.body), zmq::send_flags::dontwait);
    ++figures_.messages;
    figures_.bytes += static_cast<std::int64_t>(f.body.size());
  }

  zmq::context_t context_;
  std::vector<std::unique_ptr<Peer>> peers_;
  zmq::socket_t admin_;
  std::uint64_t admin_sequence_ = 0;
  std::string job_;
  std::function<std::uint64_t()> draw_;
  Figures figures_;
};

}  // namespace fedda::testing
