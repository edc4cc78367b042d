#pragma once
// A coordinator's socket under a test's control: a CurveZMQ ROUTER with a consortium's
// coordinator key, bound on loopback, that a real agent connects to. The test reads what the
// agent sends and answers with whatever frames it likes (forged, unsigned, hostile).

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "fedda/common/protocol.h"

namespace fedda::testing {

class FakeCoordinator {
 public:
  using Message = std::pair<protocol::Header, std::string>;  // header, body

  FakeCoordinator(zmq::context_t& context, const std::string& curve_secret)
      : socket_(context, zmq::socket_type::router) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::curve_server, true);
    socket_.set(zmq::sockopt::curve_secretkey, curve_secret);
    socket_.bind("tcp://127.0.0.1:*");
  }

  std::string endpoint() const { return socket_.get(zmq::sockopt::last_endpoint); }
  // The routing id of the agent that sent last: the first frame of every answer.
  const std::string& routing() const { return routing_; }
  // Everything the agent has sent, in order.
  const std::vector<Message>& received() const { return received_; }

  // The next well-formed message that `wanted` accepts, within `timeout`.
  std::optional<Message> next(const std::function<bool(const protocol::Header&)>& wanted, std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 1, std::chrono::milliseconds(100));
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> parts;
      if (!zmq::recv_multipart(socket_, std::back_inserter(parts)) || parts.size() != 3) continue;
      routing_ = parts[0].to_string();
      auto h = protocol::decode_header(parts[1].to_string(), parts[2].to_string());
      if (!h) continue;
      received_.emplace_back(*h, parts[2].to_string());
      if (wanted(*h)) return received_.back();
    }
    return std::nullopt;
  }
  std::optional<Message> next(protocol::MessageType type, std::chrono::milliseconds timeout) {
    return next([type](const protocol::Header& h) { return h.type == type; }, timeout);
  }

  // Sends `frames` (routing id first) as one multipart message.
  void send(const std::vector<std::string>& frames) {
    for (std::size_t i = 0; i < frames.size(); ++i) {
      socket_.send(zmq::buffer(frames[i]), i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }

 private:
  zmq::socket_t socket_;
  std::string routing_;
  std::vector<Message> received_;
};

}  // namespace fedda::testing
