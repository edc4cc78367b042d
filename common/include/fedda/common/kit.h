#pragma once
// Consortium identities and start-up kits (provisioned by `fedda-admin`).
//
//   OUT/root/           root.key (0600, Ed25519: signs every kit), root.pub
//   OUT/coordinator/    coordinator.curve.secret (0600), coordinator.curve.public,
//                       coordinator.sign.key (0600, Ed25519: signs every model sent),
//                       coordinator.sign.pub, root.pub, storage.key (0600),
//                       sites/<site>.manifest.json + .sig (the admitted sites),
//                       operators/<name>.manifest.json + .sig (the admitted operators)
//   OUT/sites/<site>/   site.curve.secret (0600), site.curve.public, root.pub, storage.key (0600),
//                       site.sign.key (0600, Ed25519: signs its secure-aggregation round keys),
//                       manifest.json + manifest.sig
//   OUT/operators/<name>/  operator.curve.secret (0600), operator.curve.public, root.pub,
//                       manifest.json + manifest.sig
//
// A manifest (JSON) names the consortium, its holder's role ("site" or "operator") and id, the
// coordinator's data and admin endpoints, CurveZMQ public key and model-signing key, and the
// holder's CurveZMQ public key (and a site's Ed25519 signing key); the root signs it. The role is signed with the rest: a site key
// cannot issue admin commands and an operator key is not a site (the coordinator admits each
// on its own endpoint only). Adding a site or an operator writes its kit and one manifest into
// the coordinator's folder; no other kit changes. Manifests without a role (format 1, before
// operators existed) are site manifests.

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "fedda/common/result.h"

namespace fedda::kit {

struct ProvisionOptions {
  std::string consortium;
  std::string coordinator;  // endpoint the sites connect to, e.g. tcp://coordinator.example.org:5570
  std::vector<std::string> sites;
  std::filesystem::path out;
  std::vector<std::string> operators;  // operator kits to create: NAME or NAME:ROLE (lead when not said)
  std::string admin;        // endpoint operators connect to; default: the coordinator's host, port + 1
};

// The admin endpoint that goes with a data endpoint: same host, the next port (port 0 stays 0:
// any free port, as tests bind). Error for an endpoint that is not tcp://HOST:PORT.
Result<std::string> default_admin_endpoint(const std::string& coordinator);

// Creates root, coordinator, site and operator kits; refuses to overwrite an existing root.
Status provision(const ProvisionOptions& options);
// Where add_site leaves a new site's manifest in the coordinator's kit folder: not trusted when
// the coordinator starts (only sites/ is), it is read when an operator admits the site
// (`fedda-admin admit`), and the admission is what the coordinator keeps, in its state.
inline constexpr const char* kPendingSites = "pending-sites";
// Adds one site's kit to an existing consortium folder (needs OUT/root and OUT/coordinator); the
// coordinator trusts it once an operator admits it, never before (its manifest is left in
// OUT/coordinator/pending-sites/).
Status add_site(const std::filesystem::path& out, const std::string& site);
// Adds one site's kit as `provision` does: trusted by the coordinator from its next start. For
// whoever holds the root and runs the coordinator as well (fedda-sim's simulated consortium).
Status provision_site(const std::filesystem::path& out, const std::string& site);
// Adds one operator's kit likewise.
// `role`: lead (everything), member (submit and clone; abort and resume its own jobs) or viewer
// (read only); signed in the manifest with the rest. Manifests from before roles are leads.
Status add_operator(const std::filesystem::path& out, const std::string& name, const std::string& role = "lead");
// Error naming the role when it is not lead, member or viewer.
Status check_operator_role(const std::string& role);

// Ids of sites and operators: 1-64 letters, digits, '-' or '_', not starting with '.'.
bool safe_id(const std::string& id);

struct SiteKit {
  std::string consortium;
  std::string site_id;
  std::string coordinator_endpoint;
  std::string coordinator_curve_public;
  std::string coordinator_sign_public;  // PEM
  std::string site_curve_public;
  std::string site_curve_secret;
  std::string storage_key;              // 32 bytes
  std::string root_fingerprint;         // of the root.pub the kit carries (crypto::public_key_fingerprint)
  std::string root_public;              // PEM: checks other sites' manifests (secure aggregation)
  std::string manifest, manifest_signature;  // this kit's, as the root signed them
  std::string site_sign_private;        // PEM (Ed25519); empty in kits made before secure aggregation
};

// The Ed25519 public key (PEM) a root-signed site manifest names for `site`. Error when the
// manifest is not the root's, is another holder's, or predates signing keys.
Result<std::string> site_signing_key(const std::string& root_public, const std::string& manifest, const std::string& signature,
                                     const std::string& site);

// Reads and checks a site kit: manifest signed by the kit's root, secrets 0600 regular files of
// this user (not links), the key pair consistent with the manifest. Error names the file and what
// is wrong.
Result<SiteKit> load_site_kit(const std::filesystem::path& dir);

struct OperatorKit {
  std::string consortium;
  std::string name;
  std::string coordinator_endpoint;
  std::string admin_endpoint;
  std::string coordinator_curve_public;
  std::string operator_curve_public;
  std::string operator_curve_secret;
  std::string root_fingerprint;
};

// The fingerprint of a consortium folder's (or kit's) root.pub: what `provision` and
// `verify-kit` print and a site pins in site.yaml. A kit checks itself only against the root.pub
// it carries, so a whole forged kit verifies; the pinned fingerprint is what catches it.
Result<std::string> root_fingerprint(const std::filesystem::path& root_pub);

// Reads and checks an operator kit as load_site_kit does a site's.
Result<OperatorKit> load_operator_kit(const std::filesystem::path& dir);

struct CoordinatorKit {
  std::filesystem::path dir;
  std::string consortium;
  std::string curve_public;
  std::string curve_secret;
  std::string sign_private;                     // PEM
  std::string storage_key;
  std::string root_public;                      // PEM, to verify manifests admitted later
  std::map<std::string, std::string> sites;     // admitted CurveZMQ public key (Z85) -> site id
  std::map<std::string, std::string> operators; // admitted CurveZMQ public key (Z85) -> operator name
  std::map<std::string, std::string> operator_roles;  // operator name -> lead | member | viewer
};

// Reads the coordinator's kit and every site and operator manifest in it; a manifest that does
// not verify against the root is an error (named), not silently skipped.
Result<CoordinatorKit> load_coordinator_kit(const std::filesystem::path& dir);

// The bearer token of the coordinator's status page: an HMAC of a fixed label under the kit's
// storage key, so whoever holds the coordinator's kit can print it and nobody else can compute it.
Result<std::string> status_page_token(const CoordinatorKit& kit);

struct Holder {
  std::string role;        // site | operator
  std::string id;          // site id or operator name
  std::string curve_public;
  std::string operator_role = "lead";  // operators: lead | member | viewer
};
// Verifies one manifest (its text and signature) against the kit's root and coordinator: the
// check `admit` runs on a site provisioned after the coordinator started.
Result<Holder> verify_manifest(const CoordinatorKit& kit, const std::string& manifest, const std::string& signature);

}  // namespace fedda::kit
