#include "fedda/admin/client.h"

#include <atomic>
#include <optional>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "fedda/common/config.h"
#include "fedda/common/files.h"
#include "fedda/common/kit.h"
#include "fedda/common/log.h"

namespace fedda::admin {
namespace fs = std::filesystem;

struct Client::Impl {
  ClientOptions o;
  std::string endpoint;
  zmq::context_t context{1};
  std::unique_ptr<zmq::socket_t> socket;
  std::uint64_t sequence = 0;
  bool noticed = false;
  std::optional<kit::OperatorKit> operator_kit;

  void open_socket() {
    socket = std::make_unique<zmq::socket_t>(context, zmq::socket_type::dealer);
    socket->set(zmq::sockopt::linger, 0);
    socket->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(2 * protocol::kDefaultMaxMessageBytes + 65536));
    if (operator_kit) {
      socket->set(zmq::sockopt::curve_serverkey, operator_kit->coordinator_curve_public);
      socket->set(zmq::sockopt::curve_publickey, operator_kit->operator_curve_public);
      socket->set(zmq::sockopt::curve_secretkey, operator_kit->operator_curve_secret);
    }
    socket->connect(endpoint);
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;
const std::string& Client::endpoint() const { return impl_->endpoint; }

Result<std::unique_ptr<Client>> Client::connect(const ClientOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->o = options;
  impl->endpoint = options.endpoint;
  if (!options.kit.empty()) {
    auto loaded = kit::load_operator_kit(options.kit);
    if (!loaded) return loaded.error();
    impl->operator_kit = std::move(*loaded);
    if (impl->endpoint.empty()) impl->endpoint = impl->operator_kit->admin_endpoint;
  }
  if (impl->endpoint.empty()) return make_error("no coordinator admin endpoint: give an operator kit (--kit) or --coordinator");
  if (impl->endpoint.size() > 2 && impl->endpoint.compare(impl->endpoint.size() - 2, 2, ":0") == 0) {
    return make_error("admin endpoint " + impl->endpoint +
                      " has port 0 (the coordinator picked a free one): give the endpoint it printed with --coordinator");
  }
  try {
    impl->open_socket();
  } catch (const zmq::error_t& e) {
    return make_error("cannot connect to " + impl->endpoint + ": " + e.what());
  }
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Result<protocol::AdminReply> Client::call(const protocol::AdminRequest& request) {
  auto& m = *impl_;
  protocol::Header h;
  h.type = protocol::MessageType::admin_request;
  h.sender = m.operator_kit ? m.operator_kit->name : m.o.name;
  h.sequence = ++m.sequence;
  const auto frames = protocol::encode(h, request);
  try {
    // A request that could not be queued (no connection yet, queue full) is not waited for forever.
    if (!m.socket->send(zmq::buffer(frames.header), zmq::send_flags::sndmore | zmq::send_flags::dontwait) ||
        !m.socket->send(zmq::buffer(frames.body), zmq::send_flags::dontwait)) {
      // DEALER with no connection yet: wait for it within the timeout, then try once more.
      zmq::pollitem_t out[] = {{m.socket->handle(), 0, ZMQ_POLLOUT, 0}};
      zmq::poll(out, 1, m.o.timeout);
      if (!(out[0].revents & ZMQ_POLLOUT) ||
          !m.socket->send(zmq::buffer(frames.header), zmq::send_flags::sndmore | zmq::send_flags::dontwait) ||
          !m.socket->send(zmq::buffer(frames.body), zmq::send_flags::dontwait)) {
        m.open_socket();
        return make_error("cannot reach the coordinator at " + m.endpoint);
      }
    }
    const auto until = std::chrono::steady_clock::now() + m.o.timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      zmq::pollitem_t in[] = {{m.socket->handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(in, 1, left);
      if (!(in[0].revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> parts;
      if (!zmq::recv_multipart(*m.socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) continue;
      if (parts.size() != 2) continue;
      const std::string header = parts[0].to_string(), body = parts[1].to_string();
      auto rh = protocol::decode_header(header, body);
      if (!rh || rh->type != protocol::MessageType::admin_reply || rh->sequence != h.sequence) continue;  // a late answer
      auto reply = protocol::decode_body<protocol::AdminReply>(body);
      if (!reply) return make_error("the coordinator's answer: " + reply.error().message);
      if (!reply->notice.empty() && !m.noticed) {
        m.noticed = true;
        log::get("fedda-admin")->warn("coordinator: {}", reply->notice);
      }
      if (!reply->ok) return make_error(reply->error, reply->kind);
      return std::move(*reply);
    }
  } catch (const zmq::error_t& e) {
    m.open_socket();
    return make_error("talking to the coordinator at " + m.endpoint + ": " + e.what());
  }
  // A fresh socket for the next call, so a late answer to this one is never taken for it.
  m.open_socket();
  return make_error("no answer from the coordinator at " + m.endpoint + " within " +
                    std::to_string(m.o.timeout.count() / 1000) + " s" +
                    (m.operator_kit ? " (is it running, and is this operator kit of its consortium?)"
                                    : " (is it running? without --kit only a coordinator started with --insecure answers)"));
}

Result<protocol::AdminReply> Client::submit(const fs::path& job_file) {
  auto text = files::read_all(job_file);
  if (!text) return text.error();
  protocol::AdminRequest request;
  request.command = protocol::admin_command_name(protocol::AdminCommand::submit);
  request.job_yaml = *text;
  request.job_file = job_file.filename().string();
  // The coordinator validates the whole file; here only the teacher model it may name is read.
  auto mapping = config::Mapping::parse(*text, job_file);
  if (!mapping) return mapping.error();
  std::string teacher;
  mapping->get("teacher", teacher);
  if (!teacher.empty() && teacher.rfind("job:", 0) != 0) {
    const fs::path path = fs::path(teacher).is_relative() ? job_file.parent_path() / teacher : fs::path(teacher);
    auto model = files::read_all(path);
    if (!model) return make_error(job_file.string() + ": teacher: " + model.error().message);
    request.files.push_back({"teacher.pt", std::move(*model)});
  }
  return call(request);
}

}  // namespace fedda::admin
