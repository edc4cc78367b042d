#pragma once
// Raw CurveZMQ clients for tests that knock on the coordinator with keys it should refuse.

#include <memory>
#include <string>

#include <zmq.hpp>

namespace fedda::testing {

// The context for clients whose handshake the test expects to be refused. It is never
// terminated: after a refused CURVE handshake, zmq_ctx_term can block for good on a loaded
// machine even with every socket closed at linger 0 (libzmq issue #2733, open). It is the one step
// of the tests that knock this way that can wait without a limit, and on a CI machine it held
// the provisioned-consortium test, every check passed, until ctest's 900 s timeout.
inline zmq::context_t& refused_handshake_context() {
  static auto* context = new zmq::context_t;  // leaked on purpose, see above
  return *context;
}

// A DEALER holding the given key pair, connected to the coordinator's `endpoint` whose public key
// is `server_public` (Z85 text, as the kits keep them).
inline std::unique_ptr<zmq::socket_t> curve_client(zmq::context_t& context, const std::string& endpoint,
                                                   const std::string& server_public, const std::string& public_key,
                                                   const std::string& secret_key) {
  auto s = std::make_unique<zmq::socket_t>(context, zmq::socket_type::dealer);
  s->set(zmq::sockopt::linger, 0);
  s->set(zmq::sockopt::curve_serverkey, server_public);
  s->set(zmq::sockopt::curve_publickey, public_key);
  s->set(zmq::sockopt::curve_secretkey, secret_key);
  s->connect(endpoint);
  return s;
}

}  // namespace fedda::testing
