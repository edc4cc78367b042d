#pragma once
// The operator's side of the admin plane: a CurveZMQ client holding an operator kit (fedda-admin
// provision --operators / add-operator) that sends one request at a time to the coordinator's
// admin endpoint and waits for its answer. Used by `fedda-admin` and by fedda-sim's local
// consortium, so the path the demo takes is the path an operator takes.
//
// Without a kit it speaks plain TCP, which only a coordinator started with --insecure answers.
// A Client is not thread-safe; use one per thread.

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include "fedda/common/protocol.h"
#include "fedda/common/result.h"

namespace fedda::admin {

struct ClientOptions {
  std::filesystem::path kit;                  // operator kit folder; empty: unencrypted (--insecure)
  std::string endpoint;                       // default: the kit's admin endpoint
  std::string name = "operator";              // without a kit: the name the coordinator records
  std::chrono::milliseconds timeout{30000};   // for one answer
};

class Client {
 public:
  // Error names the kit file or endpoint at fault. Connecting is lazy: an unreachable
  // coordinator shows as a timeout of the first call.
  static Result<std::unique_ptr<Client>> connect(const ClientOptions& options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // The answer, or an error: no answer in time (naming the endpoint), or the coordinator's
  // refusal (its text). A notice the coordinator attached (an insecure coordinator) is kept in
  // the reply's `notice` and also logged once.
  Result<protocol::AdminReply> call(const protocol::AdminRequest& request);
  // submit with the job file read from disk and, when it names a teacher model file (relative
  // to the job file), that file attached.
  Result<protocol::AdminReply> submit(const std::filesystem::path& job_file);

  const std::string& endpoint() const;

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedda::admin
