#include "fedda/common/kit.h"

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "fedda/common/crypto.h"
#include "fedda/common/files.h"

namespace fedda::kit {
namespace fs = std::filesystem;

namespace {

Status write_pair(const fs::path& dir, const std::string& stem, const crypto::CurveKeyPair& pair) {
  if (auto st = files::write_secret(dir / (stem + ".curve.secret"), pair.secret_z85 + "\n"); !st) return st;
  return files::write_atomically(dir / (stem + ".curve.public"), pair.public_z85 + "\n");
}

Result<std::string> read_line(const fs::path& path) {
  auto text = files::read_all(path);
  if (!text) return text.error();
  while (!text->empty() && (text->back() == '\n' || text->back() == '\r')) text->pop_back();
  return *text;
}

Result<std::string> read_secret(const fs::path& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return make_error(path.string() + ": missing");
  if ((info.st_mode & 077) != 0) {
    return make_error(path.string() + ": readable by others (mode " + std::to_string(info.st_mode & 0777) +
                      " octal " + [&] { char b[8]; std::snprintf(b, sizeof b, "%o", info.st_mode & 0777); return std::string(b); }() +
                      "); it must be 0600");
  }
  return files::read_all(path);
}

bool safe_id(const std::string& id) {
  return !id.empty() && id.size() <= 64 && id.front() != '.' &&
         std::all_of(id.begin(), id.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_'; });
}

Status write_site(const fs::path& out, const std::string& site) {
  if (!safe_id(site)) return make_error("site id '" + site + "': use letters, digits, '-' or '_'");
  const auto root = out / "root", coordinator = out / "coordinator", dir = out / "sites" / site;
  if (fs::exists(dir)) return make_error(dir.string() + ": a kit for site '" + site + "' exists already");
  auto root_key = read_secret(root / "root.key");
  if (!root_key) return root_key.error();
  auto root_pub = files::read_all(root / "root.pub");
  if (!root_pub) return root_pub.error();
  auto consortium = files::read_all(out / "consortium.json");
  if (!consortium) return consortium.error();
  const auto info = nlohmann::json::parse(*consortium);
  auto coordinator_curve = read_line(coordinator / "coordinator.curve.public");
  if (!coordinator_curve) return coordinator_curve.error();
  auto coordinator_sign = files::read_all(coordinator / "coordinator.sign.pub");
  if (!coordinator_sign) return coordinator_sign.error();
  auto pair = crypto::generate_curve_keypair();
  if (!pair) return pair.error();
  auto storage = crypto::random_bytes(crypto::kStorageKeyBytes);
  if (!storage) return storage.error();
  const nlohmann::json manifest = {{"format", 1},
                                   {"consortium", info.at("consortium")},
                                   {"site_id", site},
                                   {"coordinator_endpoint", info.at("coordinator")},
                                   {"coordinator_curve_public", *coordinator_curve},
                                   {"coordinator_sign_public", *coordinator_sign},
                                   {"site_curve_public", pair->public_z85}};
  const std::string text = manifest.dump(2) + "\n";
  auto signature = crypto::sign(*root_key, text);
  if (!signature) return signature.error();
  fs::create_directories(dir);
  for (const auto& st : {write_pair(dir, "site", *pair), files::write_atomically(dir / "root.pub", *root_pub),
                         files::write_secret(dir / "storage.key", *storage),
                         files::write_atomically(dir / "manifest.json", text),
                         files::write_atomically(dir / "manifest.sig", *signature),
                         files::write_atomically(coordinator / "sites" / (site + ".manifest.json"), text),
                         files::write_atomically(coordinator / "sites" / (site + ".manifest.sig"), *signature)}) {
    if (!st) return st;
  }
  return Status::success();
}

Result<nlohmann::json> verified_manifest(const fs::path& json, const fs::path& sig, const std::string& root_pub) {
  auto text = files::read_all(json);
  if (!text) return text.error();
  auto signature = files::read_all(sig);
  if (!signature) return signature.error();
  if (auto st = crypto::verify(root_pub, *text, *signature); !st) {
    return make_error(json.string() + ": not signed by this consortium's root (" + st.error().message + ")");
  }
  try {
    return nlohmann::json::parse(*text);
  } catch (const std::exception& e) {
    return make_error(json.string() + ": " + e.what());
  }
}

}  // namespace

Status provision(const ProvisionOptions& o) {
  if (o.consortium.empty()) return make_error("a consortium name is needed");
  if (o.coordinator.rfind("tcp://", 0) != 0) return make_error("coordinator '" + o.coordinator + "': expected tcp://HOST:PORT");
  if (fs::exists(o.out / "root")) return make_error((o.out / "root").string() + ": a consortium exists here already");
  auto root = crypto::generate_signing_key();
  if (!root) return root.error();
  auto signer = crypto::generate_signing_key();
  if (!signer) return signer.error();
  auto curve = crypto::generate_curve_keypair();
  if (!curve) return curve.error();
  auto storage = crypto::random_bytes(crypto::kStorageKeyBytes);
  if (!storage) return storage.error();
  const auto coordinator = o.out / "coordinator";
  fs::create_directories(o.out / "root");
  fs::create_directories(coordinator / "sites");
  const nlohmann::json info = {{"consortium", o.consortium}, {"coordinator", o.coordinator}};
  for (const auto& st : {files::write_atomically(o.out / "consortium.json", info.dump(2) + "\n"),
                         files::write_secret(o.out / "root" / "root.key", root->private_pem),
                         files::write_atomically(o.out / "root" / "root.pub", root->public_pem),
                         files::write_atomically(coordinator / "root.pub", root->public_pem),
                         write_pair(coordinator, "coordinator", *curve),
                         files::write_secret(coordinator / "coordinator.sign.key", signer->private_pem),
                         files::write_atomically(coordinator / "coordinator.sign.pub", signer->public_pem),
                         files::write_secret(coordinator / "storage.key", *storage)}) {
    if (!st) return st;
  }
  for (const auto& site : o.sites) {
    if (auto st = write_site(o.out, site); !st) return st;
  }
  return Status::success();
}

Status add_site(const fs::path& out, const std::string& site) { return write_site(out, site); }

Result<SiteKit> load_site_kit(const fs::path& dir) {
  auto root_pub = files::read_all(dir / "root.pub");
  if (!root_pub) return root_pub.error();
  auto manifest = verified_manifest(dir / "manifest.json", dir / "manifest.sig", *root_pub);
  if (!manifest) return manifest.error();
  SiteKit kit;
  try {
    kit.consortium = manifest->at("consortium");
    kit.site_id = manifest->at("site_id");
    kit.coordinator_endpoint = manifest->at("coordinator_endpoint");
    kit.coordinator_curve_public = manifest->at("coordinator_curve_public");
    kit.coordinator_sign_public = manifest->at("coordinator_sign_public");
    kit.site_curve_public = manifest->at("site_curve_public");
  } catch (const std::exception& e) {
    return make_error((dir / "manifest.json").string() + ": " + e.what());
  }
  auto secret = read_secret(dir / "site.curve.secret");
  if (!secret) return secret.error();
  while (!secret->empty() && secret->back() == '\n') secret->pop_back();
  auto derived = crypto::curve_public_of(*secret);
  if (!derived) return make_error((dir / "site.curve.secret").string() + ": " + derived.error().message);
  if (*derived != kit.site_curve_public) {
    return make_error((dir / "site.curve.secret").string() + ": does not belong to the public key in the manifest");
  }
  kit.site_curve_secret = *secret;
  auto storage = read_secret(dir / "storage.key");
  if (!storage) return storage.error();
  if (storage->size() != crypto::kStorageKeyBytes) return make_error((dir / "storage.key").string() + ": not a 32-byte key");
  kit.storage_key = *storage;
  return kit;
}

Result<CoordinatorKit> load_coordinator_kit(const fs::path& dir) {
  auto root_pub = files::read_all(dir / "root.pub");
  if (!root_pub) return root_pub.error();
  CoordinatorKit kit;
  auto pub = read_line(dir / "coordinator.curve.public");
  if (!pub) return pub.error();
  auto secret = read_secret(dir / "coordinator.curve.secret");
  if (!secret) return secret.error();
  while (!secret->empty() && secret->back() == '\n') secret->pop_back();
  auto derived = crypto::curve_public_of(*secret);
  if (!derived || *derived != *pub) return make_error((dir / "coordinator.curve.secret").string() + ": does not match coordinator.curve.public");
  kit.curve_public = *pub;
  kit.curve_secret = *secret;
  auto sign_key = read_secret(dir / "coordinator.sign.key");
  if (!sign_key) return sign_key.error();
  kit.sign_private = *sign_key;
  auto storage = read_secret(dir / "storage.key");
  if (!storage) return storage.error();
  kit.storage_key = *storage;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir / "sites", ec)) {
    const auto name = entry.path().filename().string();
    const std::string suffix = ".manifest.json";
    if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    auto sig = entry.path();
    sig.replace_extension(".sig");
    auto manifest = verified_manifest(entry.path(), sig, *root_pub);
    if (!manifest) return manifest.error();
    try {
      if (manifest->at("coordinator_curve_public") != kit.curve_public) {
        return make_error(entry.path().string() + ": issued for another coordinator");
      }
      kit.consortium = manifest->at("consortium");
      kit.sites[manifest->at("site_curve_public").get<std::string>()] = manifest->at("site_id").get<std::string>();
    } catch (const std::exception& e) {
      return make_error(entry.path().string() + ": " + e.what());
    }
  }
  if (kit.sites.empty()) return make_error((dir / "sites").string() + ": no site manifests; provision or add sites first");
  return kit;
}

}  // namespace fedda::kit
