// fedda-admin: consortium provisioning. Creates the root signing key, the coordinator's
// identity and one start-up kit per site (see fedda/common/kit.h for the layout), adds sites
// later without touching the other kits, and checks a kit before it is installed.
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "fedda/common/cli.h"
#include "fedda/common/kit.h"
#include "fedda/common/log.h"

using namespace fedda;

int main(int argc, char** argv) {
  CLI::App app{"fedda-admin: provision a fedda consortium's identities and start-up kits.\n"
               "Keep OUT/root/ offline: whoever holds root.key can admit sites. Give each site only its "
               "OUT/sites/<site>/ folder and the coordinator only OUT/coordinator/."};
  app.require_subcommand(1);
  std::string log_level = "info";
  cli::add_log_level(app, log_level);
  int rc = 0;
  auto log = log::get("fedda-admin");

  kit::ProvisionOptions p;
  std::string out;
  auto* provision = app.add_subcommand(
      "provision",
      "Create a consortium: Ed25519 root key, the coordinator's CurveZMQ key pair and model-signing key, and "
      "one kit per site (its CurveZMQ key pair, the coordinator's public keys, the root's public key, a manifest "
      "signed by the root, a key for encryption at rest). Secret files are created 0600.");
  provision->add_option("--consortium", p.consortium, "consortium name")->required();
  provision->add_option("--coordinator", p.coordinator, "endpoint sites connect to, tcp://HOST:PORT")->required();
  provision->add_option("--sites", p.sites, "site ids, comma-separated")->required()->delimiter(',');
  provision->add_option("--out", out, "output folder")->required();
  provision->callback([&]() {
    p.out = out;
    if (auto st = kit::provision(p); !st) {
      log->error("{}", st.error().message);
      rc = 1;
      return;
    }
    log->info("consortium {}: root in {}/root (keep offline), coordinator kit in {}/coordinator, {} site kits in {}/sites",
              p.consortium, out, out, p.sites.size(), out);
  });

  std::string site;
  auto* add = app.add_subcommand("add-site", "Add one site's kit to an existing consortium folder; other kits are unchanged. "
                                             "Restart the coordinator to admit it.");
  add->add_option("--consortium-dir", out, "the folder `provision` wrote")->required()->check(CLI::ExistingDirectory);
  add->add_option("--site", site, "the new site's id")->required();
  add->callback([&]() {
    if (auto st = kit::add_site(out, site); !st) {
      log->error("{}", st.error().message);
      rc = 1;
      return;
    }
    log->info("site {}: kit in {}/sites/{}", site, out, site);
  });

  std::string dir;
  auto* verify = app.add_subcommand("verify-kit", "Check a site kit: manifest signed by the kit's root, secrets 0600, "
                                                  "key pair matching the manifest. Exit code 0 when sound.");
  verify->add_option("dir", dir, "a site kit folder")->required();
  verify->callback([&]() {
    auto k = kit::load_site_kit(dir);
    if (!k) {
      std::cout << "kit refused: " << k.error().message << "\n";
      rc = 1;
      return;
    }
    std::cout << "kit OK: site " << k->site_id << " of consortium " << k->consortium << ", coordinator "
              << k->coordinator_endpoint << ", site key " << k->site_curve_public << "\n";
  });
  return cli::run(app, argc, argv, rc, "fedda-admin");
}
