// fedda-agent: the site agent, run by a hospital. `run` joins the consortium as a service;
// the other subcommands are its administrator's (check, pending, approve, refuse, subjects,
// status) and local work on the site's scans (segment, monitor, calibrate). Each is registered
// by its add_<command> (agent_commands.h, segment_command.h).
#include <string>

#include <CLI/CLI.hpp>

#include "agent_commands.h"
#include "fedda/common/cli.h"
#include "fedda/common/version.h"
#include "segment_command.h"

using namespace fedda;

int main(int argc, char** argv) {
  CLI::App app{"fedda-agent: the fedda site agent, run by a hospital to segment and adapt models on local data.\n"
               "Only model weights, discriminator gradients and summary metrics ever leave the site."};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("fedda-agent ") + kVersion);
  std::string log_level = "info";
  cli::add_log_level(app, log_level);

  int rc = 0;
  namespace tools = site_agent::tools;
  tools::add_run(app, rc);
  tools::add_check(app, rc);
  tools::add_pending(app, rc);
  tools::add_decisions(app, rc);
  tools::add_subjects(app, rc);
  tools::add_status(app, rc);
  site_agent::add_segment_command(app, rc);
  tools::add_monitor(app, rc);
  tools::add_calibrate(app, rc);
  return cli::run(app, argc, argv, rc, "fedda-agent");
}
