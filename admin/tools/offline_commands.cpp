// fedda-admin's offline commands: a consortium's kits (provision, add-site, add-operator,
// verify-kit) and the privacy accountant (privacy). Nothing here talks to a coordinator.
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>

#include "admin_commands.h"
#include "fedda/common/kit.h"
#include "fedda/common/log.h"
#include "fedda/common/privacy.h"

namespace fedda::admin::tools {
namespace fs = std::filesystem;

namespace {

// What the kit commands take from their command lines.
struct KitArgs {
  kit::ProvisionOptions provision;
  std::string out, id, role = "lead", dir;
};

void add_provision(CLI::App& app, int& rc) {
  auto log = log::get("fedda-admin");
  auto a = std::make_shared<KitArgs>();
  auto* provision = app.add_subcommand(
      "provision",
      "Create a consortium: Ed25519 root key, the coordinator's CurveZMQ key pair and model-signing key, one kit per "
      "site (its CurveZMQ key pair, the coordinator's public keys, the root's public key, a manifest signed by the "
      "root, a key for encryption at rest) and one per operator. Secret files are created 0600.");
  auto& p = a->provision;
  provision->add_option("--consortium", p.consortium, "consortium name")->required();
  provision->add_option("--coordinator", p.coordinator, "endpoint sites connect to, tcp://HOST:PORT")->required();
  provision->add_option("--admin-endpoint", p.admin, "endpoint operators connect to; default: the same host, port + 1");
  provision->add_option("--sites", p.sites, "site ids, comma-separated")->required()->delimiter(',');
  provision->add_option("--operators", p.operators,
                        "operator names, comma-separated, each NAME or NAME:ROLE; ROLE lead (everything, the default), "
                        "member (submit and clone, abort and resume its own jobs) or viewer (read only)")
      ->delimiter(',');
  provision->add_option("--out", a->out, "output folder")->required();
  provision->callback([a, log, &rc]() {
    auto& p = a->provision;
    const auto& out = a->out;
    p.out = out;
    if (auto st = kit::provision(p); !st) {
      log->error("{}", st.error().message);
      rc = 1;
      return;
    }
    log->info("consortium {}: root in {}/root (keep offline), coordinator kit in {}/coordinator, {} site kit(s) in {}/sites, "
              "{} operator kit(s) in {}/operators",
              p.consortium, out, out, p.sites.size(), out, p.operators.size(), out);
    auto fingerprint = kit::root_fingerprint(fs::path(out) / "root" / "root.pub");
    if (fingerprint) {
      std::cout << "root fingerprint: " << *fingerprint << "\n"
                << "(send it to each site by another channel than its kit; the site pins it in site.yaml as "
                   "root_fingerprint)\n";
    }
  });
}

void add_add_site(CLI::App& app, int& rc) {
  auto log = log::get("fedda-admin");
  auto a = std::make_shared<KitArgs>();
  auto* add = app.add_subcommand(
      "add-site", "Add one site's kit to an existing consortium folder; other kits are unchanged. A running coordinator "
                  "admits it with `fedda-admin admit SITE` (no restart).");
  add->add_option("--consortium-dir", a->out, "the folder `provision` wrote")->required()->check(CLI::ExistingDirectory);
  add->add_option("--site", a->id, "the new site's id")->required();
  add->callback([a, log, &rc]() {
    if (auto st = kit::add_site(a->out, a->id); !st) {
      log->error("{}", st.error().message);
      rc = 1;
      return;
    }
    log->info("site {}: kit in {}/sites/{}; admit it with `fedda-admin admit {}`", a->id, a->out, a->id, a->id);
  });
}

void add_add_operator(CLI::App& app, int& rc) {
  auto log = log::get("fedda-admin");
  auto a = std::make_shared<KitArgs>();
  auto* add_operator = app.add_subcommand(
      "add-operator", "Add one operator's kit to an existing consortium folder. The coordinator admits operators it "
                      "has a manifest of in its kit's operators/ folder when it starts.");
  add_operator->add_option("--consortium-dir", a->out, "the folder `provision` wrote")->required()->check(CLI::ExistingDirectory);
  add_operator->add_option("--operator", a->id, "the operator's name")->required();
  add_operator->add_option("--role", a->role,
                           "lead (everything: admit, revoke, delete), member (submit and clone; abort and resume its "
                           "own jobs) or viewer (read only); signed in the operator's manifest")
      ->capture_default_str();
  add_operator->callback([a, log, &rc]() {
    if (auto st = kit::add_operator(a->out, a->id, a->role); !st) {
      log->error("{}", st.error().message);
      rc = 1;
      return;
    }
    log->info("operator {} ({}): kit in {}/operators/{}", a->id, a->role, a->out, a->id);
  });
}

void add_verify_kit(CLI::App& app, int& rc) {
  auto a = std::make_shared<KitArgs>();
  auto* verify = app.add_subcommand("verify-kit", "Check a site or operator kit: manifest signed by the kit's root, "
                                                  "secrets 0600, key pair matching the manifest; prints the root's "
                                                  "fingerprint to compare with the consortium's. Exit code 0 when sound.");
  verify->add_option("dir", a->dir, "a site or operator kit folder")->required();
  verify->callback([a, &rc]() {
    const auto& dir = a->dir;
    if (fs::exists(fs::path(dir) / "operator.curve.secret")) {
      auto k = kit::load_operator_kit(dir);
      if (!k) {
        std::cout << "kit refused: " << k.error().message << "\n";
        rc = 1;
        return;
      }
      std::cout << "kit OK: operator " << k->name << " of consortium " << k->consortium << ", admin endpoint "
                << k->admin_endpoint << ", operator key " << k->operator_curve_public << "\n"
                << "root fingerprint: " << k->root_fingerprint << "\n";
      return;
    }
    auto k = kit::load_site_kit(dir);
    if (!k) {
      std::cout << "kit refused: " << k.error().message << "\n";
      rc = 1;
      return;
    }
    std::cout << "kit OK: site " << k->site_id << " of consortium " << k->consortium << ", coordinator "
              << k->coordinator_endpoint << ", site key " << k->site_curve_public << "\n"
              << "root fingerprint: " << k->root_fingerprint << "\n"
              << "(the kit is signed by the root it carries; compare this fingerprint with the one the consortium "
                 "sent you separately before trusting it)\n";
  });
}

}  // namespace

void add_kit_commands(CLI::App& app, int& rc) {
  add_provision(app, rc);
  add_add_site(app, rc);
  add_add_operator(app, rc);
  add_verify_kit(app, rc);
}

void add_privacy(CLI::App& app, const bool& as_json, int& rc) {
  struct Options {
    double noise = 0, target = 0, q = 0, delta = 1e-5;
    long long steps = 0;
  };
  auto o = std::make_shared<Options>();
  auto* privacy = app.add_subcommand(
      "privacy",
      "What DP-SGD with the patient as the unit spends: each step samples every patient with probability Q, clips "
      "each sampled patient's gradient to C and adds Gaussian noise of S * C. Prints epsilon at delta D for noise S "
      "over N steps (Rényi accountant of the subsampled Gaussian mechanism, Opacus's orders), or with "
      "--target-epsilon the smallest S that stays within it. Nothing is sent anywhere.");
  auto* noise = privacy->add_option("--noise-multiplier", o->noise, "S: the noise's standard deviation over the clip norm");
  auto* target = privacy->add_option("--target-epsilon", o->target, "E: print the noise multiplier that spends at most E");
  noise->excludes(target);
  privacy->add_option("--sample-rate", o->q, "Q: a patient's chance of being in one step's batch (0 < Q <= 1)")->required();
  privacy->add_option("--steps", o->steps, "N: the steps that touch the site's data")->required();
  privacy->add_option("--delta", o->delta, "D: the chance the guarantee fails; well under 1 / patients")->capture_default_str();
  privacy->callback([o, noise, target, &as_json, &rc] {
    const auto fail = [&rc](const std::string& message) {
      std::cerr << "fedda-admin privacy: " << message << "\n";
      rc = 1;
    };
    if (noise->count() == 0 && target->count() == 0) {
      return fail("give --noise-multiplier S (to get epsilon) or --target-epsilon E (to get S)");
    }
    double sigma = o->noise;
    if (target->count() > 0) {
      auto found = privacy::noise_for_epsilon(o->target, o->q, o->steps, o->delta);
      if (!found) return fail(found.error().message);
      sigma = *found;
    }
    auto spent = privacy::epsilon({sigma, o->q, o->steps}, o->delta);
    if (!spent) return fail(spent.error().message);
    if (as_json) {
      std::cout << json{{"epsilon", spent->epsilon}, {"delta", o->delta}, {"noise_multiplier", sigma},
                        {"sample_rate", o->q}, {"steps", o->steps}, {"order", spent->order}}.dump(2) << "\n";
      return;
    }
    std::ostringstream line;
    line << std::setprecision(6);
    if (target->count() > 0) line << "noise multiplier " << sigma << " reaches ";
    line << "epsilon " << spent->epsilon << " at delta " << o->delta << " (noise multiplier " << sigma
         << ", sample rate " << o->q << ", " << o->steps << " steps; Rényi order " << spent->order << ")";
    std::cout << line.str() << "\n";
  });
}

}  // namespace fedda::admin::tools
