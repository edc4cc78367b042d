// The agent's session with the coordinator, in-process: a fake coordinator (a ROUTER on
// inproc://) and a manual clock, so heartbeats, liveness, backoff and upload credit are checked
// against exact times instead of sleeps.
#include "session.h"

#include <gtest/gtest.h>

#include <atomic>
#include <optional>

#include <zmq_addon.hpp>

namespace fedda::site_agent {
namespace {

using namespace std::chrono_literals;
using protocol::MessageType;

class ManualClock : public SessionClock {
 public:
  Clock::time_point now() const override { return now_; }
  void advance(std::chrono::milliseconds by) { now_ += by; }

 private:
  Clock::time_point now_ = Clock::time_point(std::chrono::hours(1));
};

struct Received {
  std::string routing;
  protocol::Header header;
  std::string body;
};

class SessionTest : public ::testing::Test {
 protected:
  SessionTest() {
    static std::atomic<int> n{0};
    endpoint_ = "inproc://coordinator-" + std::to_string(n++);
    router_.set(zmq::sockopt::linger, 0);
    router_.bind(endpoint_);
  }

  std::unique_ptr<Session> open(std::chrono::milliseconds heartbeat = 1000ms, std::chrono::milliseconds min = 50ms,
                                std::chrono::milliseconds max = 200ms) {
    SessionOptions o;
    o.site_id = "amsterdam";
    o.endpoint = endpoint_;
    o.agent_version = "test";
    o.device = "cpu";
    o.threads = 2;
    o.heartbeat = heartbeat;
    o.liveness = 3;
    o.reconnect_min = min;
    o.reconnect_max = max;
    o.clock = &clock_;
    return std::make_unique<Session>(context_, o, nullptr);
  }

  // The next message the coordinator receives within a second of real time, if any.
  std::optional<Received> receive(std::chrono::milliseconds wait = 1000ms) {
    zmq::pollitem_t items[] = {{router_.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, wait);
    if (!(items[0].revents & ZMQ_POLLIN)) return std::nullopt;
    std::vector<zmq::message_t> parts;
    if (!zmq::recv_multipart(router_, std::back_inserter(parts)) || parts.size() != 3) return std::nullopt;
    auto h = protocol::decode_header(parts[1].to_string(), parts[2].to_string());
    if (!h) return std::nullopt;
    return Received{parts[0].to_string(), *h, parts[2].to_string()};
  }

  // Messages of other types than `type` are skipped (heartbeats, say).
  std::optional<Received> receive_type(MessageType type) {
    for (int i = 0; i < 20; ++i) {
      auto r = receive();
      if (!r) return std::nullopt;
      if (r->header.type == type) return r;
    }
    return std::nullopt;
  }

  template <typename Body>
  void send(const std::string& routing, MessageType type, std::uint64_t sequence, const Body& body,
            const std::string& job = "", int round = 0) {
    protocol::Header h;
    h.type = type;
    h.sender = protocol::kCoordinatorSender;
    h.job_id = job;
    h.round = round;
    h.sequence = sequence;
    const auto frames = protocol::encode(h, body);
    router_.send(zmq::buffer(routing), zmq::send_flags::sndmore);
    router_.send(zmq::buffer(frames.header), zmq::send_flags::sndmore);
    router_.send(zmq::buffer(frames.body), zmq::send_flags::none);
  }

  void send_empty(const std::string& routing, MessageType type, std::uint64_t sequence, const std::string& job = "",
                  int round = 0) {
    protocol::Header h;
    h.type = type;
    h.sender = protocol::kCoordinatorSender;
    h.job_id = job;
    h.round = round;
    h.sequence = sequence;
    const auto frames = protocol::encode_empty(h);
    router_.send(zmq::buffer(routing), zmq::send_flags::sndmore);
    router_.send(zmq::buffer(frames.header), zmq::send_flags::sndmore);
    router_.send(zmq::buffer(frames.body), zmq::send_flags::none);
  }

  // Polls until a message for the owner comes (or a few real-time tries pass).
  std::vector<Inbound> poll_for_work(Session& s) {
    for (int i = 0; i < 50; ++i) {
      auto work = s.poll(10ms);
      if (!work.empty()) return work;
    }
    return {};
  }

  // Lets the session read what the coordinator sent (real time), without moving the clock.
  void settle(Session& s) {
    for (int i = 0; i < 10; ++i) s.poll(5ms);
  }

  // The newest hello (earlier connections' messages are skipped), welcomed (heartbeat 1 s or as
  // given, liveness 3); returns its routing id.
  std::string join(Session& s, std::int32_t heartbeat_ms = 1000) {
    std::optional<Received> hello;
    for (auto r = receive(); r; r = receive(100ms)) {
      // Pipes of closed connections may still deliver: the current one's hello is the newest.
      if (r->header.type == MessageType::hello && (!hello || r->header.sequence > hello->header.sequence)) hello = r;
    }
    EXPECT_TRUE(hello);
    if (!hello) return {};
    send(hello->routing, MessageType::welcome, ++coordinator_sequence_, protocol::Welcome{heartbeat_ms, 3});
    settle(s);
    EXPECT_EQ(s.state(), Session::State::joined);
    return hello->routing;
  }

  zmq::context_t context_;
  zmq::socket_t router_{context_, zmq::socket_type::router};
  std::string endpoint_;
  ManualClock clock_;
  std::uint64_t coordinator_sequence_ = 100;
};

TEST_F(SessionTest, SaysHelloWithWhatItIsThenHeartbeatsOnTheClock) {
  auto session = open();
  auto hello = receive_type(MessageType::hello);
  ASSERT_TRUE(hello);
  const auto body = protocol::decode_body<protocol::Hello>(hello->body).value();
  EXPECT_EQ(body.site_id, "amsterdam");
  EXPECT_EQ(body.threads, 2);
  EXPECT_EQ(hello->header.sender, "amsterdam");
  send(hello->routing, MessageType::welcome, ++coordinator_sequence_, protocol::Welcome{1000, 3});
  settle(*session);
  EXPECT_EQ(session->state(), Session::State::joined);
  EXPECT_FALSE(receive(50ms)) << "a heartbeat before one was due";
  clock_.advance(999ms);
  settle(*session);
  EXPECT_FALSE(receive(50ms)) << "a heartbeat before one was due";
  clock_.advance(1ms);
  settle(*session);
  auto beat = receive();
  ASSERT_TRUE(beat);
  EXPECT_EQ(beat->header.type, MessageType::heartbeat);
  EXPECT_GT(beat->header.sequence, hello->header.sequence);
}

TEST_F(SessionTest, CountsTheCoordinatorGoneAfterLivenessThenReconnectsWithDoublingBackoff) {
  auto session = open(100ms, 50ms, 200ms);
  join(*session, 100);  // heartbeat 100 ms, liveness 3: gone after 300 ms of silence
  clock_.advance(300ms);
  settle(*session);
  EXPECT_EQ(session->state(), Session::State::joined) << "gone only after more than 3 heartbeats of silence";
  clock_.advance(1ms);
  session->poll(0ms);
  ASSERT_EQ(session->state(), Session::State::backing_off);
  EXPECT_EQ(session->connects(), 1);
  EXPECT_EQ(session->backoff(), 100ms) << "the next wait doubles";
  clock_.advance(49ms);
  session->poll(0ms);
  EXPECT_EQ(session->state(), Session::State::backing_off) << "reconnected before the 50 ms backoff passed";
  clock_.advance(1ms);
  session->poll(0ms);
  EXPECT_EQ(session->connects(), 2);
  auto hello = receive_type(MessageType::hello);
  ASSERT_TRUE(hello) << "no hello after reconnecting";

  // Nobody answers: each silence doubles the wait, up to reconnect_max.
  for (const auto expected : {200ms, 200ms}) {
    clock_.advance(301ms);
    session->poll(0ms);
    ASSERT_EQ(session->state(), Session::State::backing_off);
    EXPECT_EQ(session->backoff(), expected);
    clock_.advance(200ms);
    session->poll(0ms);
    EXPECT_EQ(session->state(), Session::State::connected);
  }
  // A welcome resets the backoff.
  join(*session, 100);
  EXPECT_EQ(session->backoff(), 50ms);
}

TEST_F(SessionTest, HoldsAnUpdateUntilTheCoordinatorGrantsUploadCredit) {
  auto session = open();
  const auto routing = join(*session);
  protocol::RoundUpdate update;
  update.samples = 42;
  update.loss = 0.5;
  session->offer_update("kd-1", 3, protocol::encode(protocol::Header{}, update), "");
  auto ready = receive_type(MessageType::update_ready);
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->header.job_id, "kd-1");
  EXPECT_EQ(ready->header.round, 3);
  EXPECT_TRUE(session->holds_updates());
  settle(*session);
  EXPECT_FALSE(receive(100ms)) << "sent before credit";
  send_empty(routing, MessageType::upload, ++coordinator_sequence_, "kd-1", 3);
  settle(*session);
  auto uploaded = receive_type(MessageType::round_update);
  ASSERT_TRUE(uploaded);
  EXPECT_EQ(uploaded->header.round, 3);
  EXPECT_EQ(protocol::decode_body<protocol::RoundUpdate>(uploaded->body).value().samples, 42);
  EXPECT_FALSE(session->holds_updates());
  // Credit for an update it does not hold sends nothing.
  send_empty(routing, MessageType::upload, ++coordinator_sequence_, "kd-1", 4);
  settle(*session);
  EXPECT_FALSE(receive(100ms));
}

TEST_F(SessionTest, HandsOffersToItsOwnerAndDropsStaleSequences) {
  auto session = open();
  const auto routing = join(*session);
  protocol::JobOffer offer;
  offer.job.id = "kd-1";
  send(routing, MessageType::job_offer, ++coordinator_sequence_, offer, "kd-1");
  auto work = poll_for_work(*session);
  ASSERT_EQ(work.size(), 1u);
  EXPECT_EQ(work[0].header.type, MessageType::job_offer);
  send(routing, MessageType::job_offer, coordinator_sequence_, offer, "kd-1");  // replayed
  EXPECT_TRUE(poll_for_work(*session).empty());
  // A restarted coordinator's welcome begins its sequence afresh.
  coordinator_sequence_ = 1;
  send(routing, MessageType::welcome, coordinator_sequence_, protocol::Welcome{1000, 3});
  send(routing, MessageType::job_offer, ++coordinator_sequence_, offer, "kd-1");
  EXPECT_EQ(poll_for_work(*session).size(), 1u);
}

TEST_F(SessionTest, SaysHelloAgainWhenTheCoordinatorDoesNotKnowTheSession) {
  auto session = open();
  const auto routing = join(*session);
  clock_.advance(1500ms);  // more than a second since the last hello
  send(routing, MessageType::reject, 1, protocol::Reject{protocol::RejectCode::say_hello_first, "say hello first"});
  settle(*session);
  EXPECT_TRUE(receive_type(MessageType::hello));
  // Any other refusal is logged, and the session stays as it is.
  send(routing, MessageType::reject, 2, protocol::Reject{protocol::RejectCode::revoked, "revoked"});
  settle(*session);
  EXPECT_EQ(session->state(), Session::State::joined);
}

}  // namespace
}  // namespace fedda::site_agent
