#pragma once
// Subcommands of fedda-admin, each group registered on the CLI11 app by its add_<group>; `rc`
// receives the exit code (0 done, 1 failed, 2 usage).

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "fedda/admin/client.h"
#include "fedda/common/protocol.h"

namespace fedda::admin::tools {

using nlohmann::json;

// fedda-admin's exit code for an operator command the coordinator answered with a failure: 3
// when what it names does not exist (no such job or site), 4 when it was refused (the operator's
// role, the job's state), 1 for anything else (invalid, internal, the coordinator unreachable).
inline constexpr int kExitNotFound = 3;
inline constexpr int kExitRefused = 4;
int exit_code(const Error& error);

// What every command to a running coordinator shares: the operator's kit (--kit or
// $FEDDA_OPERATOR_KIT), the endpoint (--coordinator), --timeout, --json, and the exit code.
// Its options are the app's own; made once, before the commands that use it.
class Operator {
 public:
  Operator(CLI::App& app, int& rc);

  using Call = std::function<Result<protocol::AdminReply>(admin::Client&)>;
  using Show = std::function<void(const json&, const protocol::AdminReply&)>;
  // Sends one request; `keep` (if any) acts on the answer, then `show` prints it for people, or
  // it is printed as JSON with --json. An error goes to fail().
  void command(const Call& call, const Show& show, const std::function<Status(const protocol::AdminReply&)>& keep = nullptr);
  // Asks `request` again every `every_s` seconds on one connection and shows each answer that
  // differs from the last (a terminal: redrawn in place; a pipe or a file: appended under the
  // time; --json: one compact document per line), until `ended` gives an exit code. Ctrl-C leaves.
  void follow(const protocol::AdminRequest& request, const std::function<void(const json&)>& show,
              const std::function<std::optional<int>(const json&)>& ended, double every_s);
  // --json: the global flag's value (read when a command runs).
  const bool& as_json() const { return as_json_; }
  int& rc() { return rc_; }

 private:
  // The coordinator's refusal (or a failed call): logged, with --json also printed on standard
  // output as {"ok": false, "error", "kind": invalid | not_found | refused | internal}, and the
  // exit code set by its kind.
  void fail(const Error& error);
  // The client of the kit and endpoint given; null (the error logged, rc 1) when it cannot be made.
  std::unique_ptr<admin::Client> connect();

  admin::ClientOptions options_;
  std::string kit_;
  bool as_json_ = false;
  int timeout_s_ = 30;
  int& rc_;
};

// A request naming only a command and its target.
protocol::AdminRequest simple_request(protocol::AdminCommand command, const std::string& target);

// The consortium's kits, offline (offline_commands.cpp): provision, add-site, add-operator, verify-kit.
void add_kit_commands(CLI::App& app, int& rc);
// `privacy`: the accountant on its own, for choosing a job's noise before it is written.
void add_privacy(CLI::App& app, const bool& as_json, int& rc);

// The operator's commands (operator_commands.cpp): submit, jobs, status, abort, resume, clone,
// delete, download; and sites, logs, admit, revoke.
void add_job_commands(CLI::App& app, Operator& op);
void add_site_commands(CLI::App& app, Operator& op);

}  // namespace fedda::admin::tools
