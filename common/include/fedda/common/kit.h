#pragma once
// Consortium identities and start-up kits (provisioned by `fedda-admin`).
//
//   OUT/root/           root.key (0600, Ed25519: signs every kit), root.pub
//   OUT/coordinator/    coordinator.curve.secret (0600), coordinator.curve.public,
//                       coordinator.sign.key (0600, Ed25519: signs every model sent),
//                       coordinator.sign.pub, root.pub, storage.key (0600),
//                       sites/<site>.manifest.json + .sig (the admitted sites)
//   OUT/sites/<site>/   site.curve.secret (0600), site.curve.public, root.pub, storage.key (0600),
//                       manifest.json + manifest.sig
//
// A manifest (JSON) names the consortium, the site, the coordinator's endpoint, CurveZMQ public
// key and model-signing key, and the site's CurveZMQ public key; the root signs it. Adding a
// site writes its kit and one manifest into the coordinator's folder; no other kit changes.

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
};

// Creates root, coordinator and site kits; refuses to overwrite an existing root.
Status provision(const ProvisionOptions& options);
// Adds one site's kit to an existing consortium folder (needs OUT/root and OUT/coordinator).
Status add_site(const std::filesystem::path& out, const std::string& site);

struct SiteKit {
  std::string consortium;
  std::string site_id;
  std::string coordinator_endpoint;
  std::string coordinator_curve_public;
  std::string coordinator_sign_public;  // PEM
  std::string site_curve_public;
  std::string site_curve_secret;
  std::string storage_key;              // 32 bytes
};

// Reads and checks a site kit: manifest signed by the kit's root, secrets 0600, the key pair
// consistent with the manifest. Error names the file and what is wrong.
Result<SiteKit> load_site_kit(const std::filesystem::path& dir);

struct CoordinatorKit {
  std::string consortium;
  std::string curve_public;
  std::string curve_secret;
  std::string sign_private;                   // PEM
  std::string storage_key;
  std::map<std::string, std::string> sites;   // admitted CurveZMQ public key (Z85) -> site id
};

// Reads the coordinator's kit and every site manifest in it; a manifest that does not verify
// against the root is an error (named), not silently skipped.
Result<CoordinatorKit> load_coordinator_kit(const std::filesystem::path& dir);

}  // namespace fedda::kit
