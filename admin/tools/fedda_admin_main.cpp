// fedda-admin: a consortium's keys and kits (provision, add-site, add-operator, verify-kit), and
// the operator's commands to a running coordinator (submit, jobs, status, abort, resume, clone,
// delete, download, sites, logs, admit, revoke) over its admin endpoint with an operator kit; and
// the privacy accountant on its own (privacy). Each group is registered by its add_<group>
// (admin_commands.h); answers are printed by answers.h.
#include <string>

#include <CLI/CLI.hpp>

#include "admin_commands.h"
#include "fedda/common/cli.h"
#include "fedda/common/version.h"

using namespace fedda;

int main(int argc, char** argv) {
  CLI::App app{"fedda-admin: a fedda consortium's kits, and the operator's commands to its coordinator.\n"
               "Kits: provision, add-site, add-operator, verify-kit. The privacy accountant: privacy. Keep OUT/root/ offline: whoever holds root.key can "
               "admit sites. Give each site only its OUT/sites/<site>/ folder, each operator only OUT/operators/<name>/, "
               "the coordinator only OUT/coordinator/.\n"
               "Operator commands (with --kit OPERATOR_KIT, or $FEDDA_OPERATOR_KIT): submit, jobs, status, abort, resume, "
               "clone, delete, download, sites, logs, admit, revoke. Each prints for people, or one JSON document with --json; exit code 0 on "
               "success; on failure a message naming what failed and exit code 3 when what it names does not exist (no such "
               "job or site), 4 when the coordinator refused it (the operator's role, the job's state), 64 for a usage "
               "error (an unknown option, a missing argument), 1 otherwise."};
  app.require_subcommand(1);
  app.fallthrough();
  app.set_version_flag("--version", std::string("fedda-admin ") + kVersion);
  std::string log_level = "info";
  cli::add_log_level(app, log_level);
  int rc = 0;

  namespace tools = admin::tools;
  tools::add_kit_commands(app, rc);
  tools::Operator op(app, rc);
  tools::add_privacy(app, op.as_json(), rc);
  tools::add_job_commands(app, op);
  tools::add_site_commands(app, op);
  return cli::run(app, argc, argv, rc, "fedda-admin");
}
