#include "fedda/common/kit.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <algorithm>
#include <cctype>

#include <nlohmann/json.hpp>

#include "fedda/common/crypto.h"
#include "fedda/common/files.h"
#include "fedda/common/protocol.h"

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

// A secret file is opened once and checked on its descriptor: a regular file (not a link, which
// could be swapped between a check and the open), owned by this user, readable by no one else.
Result<std::string> read_secret(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ELOOP) return make_error(path.string() + ": a symbolic link; a secret must be a regular file");
    return make_error(path.string() + ": missing or unreadable (" + std::strerror(errno) + ")");
  }
  struct stat info {};
  std::string text;
  std::string problem;
  if (::fstat(fd, &info) != 0) {
    problem = std::string("cannot stat: ") + std::strerror(errno);
  } else if (!S_ISREG(info.st_mode)) {
    problem = "not a regular file";
  } else if ((info.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%o", static_cast<unsigned>(info.st_mode & 0777));
    problem = std::string("readable by others (mode ") + mode + "); it must be 0600";
  } else if (info.st_uid != ::geteuid()) {
    problem = "owned by user " + std::to_string(info.st_uid) + ", not by this user (" + std::to_string(::geteuid()) + ")";
  } else {
    char buffer[4096];
    for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0;) text.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  if (!problem.empty()) return make_error(path.string() + ": " + problem);
  return text;
}

// The role's folders and file stems: sites/<id>/site.*, operators/<id>/operator.*.
const char* folder_of(const std::string& role) { return role == "site" ? "sites" : "operators"; }

Result<nlohmann::json> consortium_info(const fs::path& out) {
  auto text = files::read_all(out / "consortium.json");
  if (!text) return text.error();
  try {
    auto info = nlohmann::json::parse(*text);
    if (!info.contains("admin")) {  // written before operators existed
      auto admin = default_admin_endpoint(info.at("coordinator").get<std::string>());
      if (!admin) return admin.error();
      info["admin"] = *admin;
    }
    return info;
  } catch (const std::exception& e) {
    return make_error((out / "consortium.json").string() + ": " + e.what());
  }
}

// A kit for a site or an operator, and its manifest in the coordinator's folder: in the role's
// folder (trusted when the coordinator starts) or, for a site to be admitted later, in
// pending-sites/ (trusted only once an operator admits it).
// A provision --operators entry, NAME or NAME:ROLE, as (name, role); lead when no role is said.
std::pair<std::string, std::string> operator_entry(const std::string& entry) {
  const auto colon = entry.find(':');
  if (colon == std::string::npos) return {entry, "lead"};
  return {entry.substr(0, colon), entry.substr(colon + 1)};
}

Status write_holder(const fs::path& out, const std::string& role, const std::string& id, bool pending = false,
                    const std::string& operator_role = "lead") {
  if (!safe_id(id)) return make_error(role + " id '" + id + "': use 1-64 letters, digits, '-' or '_'");
  if (role == "operator") {
    if (auto st = check_operator_role(operator_role); !st) return make_error("operator '" + id + "': " + st.error().message);
  }
  const auto root = out / "root", coordinator = out / "coordinator", dir = out / folder_of(role) / id;
  if (fs::exists(dir)) return make_error(dir.string() + ": a kit for " + role + " '" + id + "' exists already");
  auto root_key = read_secret(root / "root.key");
  if (!root_key) return root_key.error();
  auto root_pub = files::read_all(root / "root.pub");
  if (!root_pub) return root_pub.error();
  auto info = consortium_info(out);
  if (!info) return info.error();
  auto coordinator_curve = read_line(coordinator / "coordinator.curve.public");
  if (!coordinator_curve) return coordinator_curve.error();
  auto coordinator_sign = files::read_all(coordinator / "coordinator.sign.pub");
  if (!coordinator_sign) return coordinator_sign.error();
  auto pair = crypto::generate_curve_keypair();
  if (!pair) return pair.error();
  nlohmann::json manifest = {{"format", 2},
                             {"role", role},
                             {"consortium", info->at("consortium")},
                             {"coordinator_endpoint", info->at("coordinator")},
                             {"admin_endpoint", info->at("admin")},
                             {"coordinator_curve_public", *coordinator_curve},
                             {"coordinator_sign_public", *coordinator_sign}};
  manifest[role == "site" ? "site_id" : "operator"] = id;
  if (role == "operator") manifest["operator_role"] = operator_role;
  manifest[role + "_curve_public"] = pair->public_z85;
  // A site's Ed25519 identity: it signs its secure-aggregation round keys, which the other
  // sites check against this root-signed manifest (the coordinator only relays them).
  Result<crypto::SigningKey> identity = crypto::SigningKey{};
  if (role == "site") {
    identity = crypto::generate_signing_key();
    if (!identity) return identity.error();
    manifest["site_sign_public"] = identity->public_pem;
  }
  const std::string text = manifest.dump(2) + "\n";
  auto signature = crypto::sign(*root_key, text);
  if (!signature) return signature.error();
  fs::create_directories(dir);
  const fs::path manifests = coordinator / (pending ? kPendingSites : folder_of(role));
  fs::create_directories(manifests);
  std::vector<Status> written = {write_pair(dir, role, *pair), files::write_atomically(dir / "root.pub", *root_pub),
                                 files::write_atomically(dir / "manifest.json", text),
                                 files::write_atomically(dir / "manifest.sig", *signature),
                                 files::write_atomically(manifests / (id + ".manifest.json"), text),
                                 files::write_atomically(manifests / (id + ".manifest.sig"), *signature)};
  if (role == "site") {
    auto storage = crypto::random_bytes(crypto::kStorageKeyBytes);
    if (!storage) return storage.error();
    written.push_back(files::write_secret(dir / "storage.key", *storage));
    written.push_back(files::write_secret(dir / "site.sign.key", identity->private_pem));
  }
  for (const auto& st : written) {
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

// The manifest's role ("site" when absent: format 1) and its holder.
Result<Holder> holder_of(const nlohmann::json& manifest, const std::string& source) {
  try {
    Holder h;
    h.role = manifest.value("role", std::string("site"));
    if (h.role == "site") {
      h.id = manifest.at("site_id").get<std::string>();
    } else if (h.role == "operator") {
      h.id = manifest.at("operator").get<std::string>();
      h.operator_role = manifest.value("operator_role", std::string("lead"));  // before roles: a lead
      if (!check_operator_role(h.operator_role)) return make_error(source + ": unknown operator role '" + h.operator_role + "'");
    } else {
      return make_error(source + ": unknown role '" + h.role + "'");
    }
    h.curve_public = manifest.at(h.role + "_curve_public").get<std::string>();
    if (!safe_id(h.id)) return make_error(source + ": '" + h.id + "' is not a valid id");
    return h;
  } catch (const std::exception& e) {
    return make_error(source + ": " + e.what());
  }
}

}  // namespace

Result<std::string> status_page_token(const CoordinatorKit& kit) {
  return crypto::hmac_sha256_hex(kit.storage_key, "fedda status page token");
}

bool safe_id(const std::string& id) {
  return !id.empty() && id.size() <= 64 && id.front() != '.' &&
         std::all_of(id.begin(), id.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_'; });
}

Result<std::string> default_admin_endpoint(const std::string& coordinator) {
  const auto colon = coordinator.rfind(':');
  if (coordinator.rfind("tcp://", 0) != 0 || colon == std::string::npos || colon < 6) {
    return make_error("coordinator '" + coordinator + "': expected tcp://HOST:PORT");
  }
  const std::string port = coordinator.substr(colon + 1);
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit)) {
    return make_error("coordinator '" + coordinator + "': the port must be a number");
  }
  const int p = std::stoi(port);
  if (p > 65534) return make_error("coordinator '" + coordinator + "': no port above it for the admin endpoint; give one");
  return coordinator.substr(0, colon + 1) + std::to_string(p == 0 ? 0 : p + 1);
}

Status provision(const ProvisionOptions& o) {

  if (o.consortium.empty()) return make_error("a consortium name is needed");
  std::string admin = o.admin;
  if (admin.empty()) {
    auto derived = default_admin_endpoint(o.coordinator);
    if (!derived) return derived.error();
    admin = *derived;
  } else if (admin.rfind("tcp://", 0) != 0) {
    return make_error("admin endpoint '" + admin + "': expected tcp://HOST:PORT");
  }
  if (admin == o.coordinator && o.coordinator.substr(o.coordinator.rfind(':')) != ":0") {
    return make_error("the admin endpoint must differ from the sites' endpoint " + o.coordinator);
  }
  if (fs::exists(o.out / "root")) return make_error((o.out / "root").string() + ": a consortium exists here already");
  for (const auto& entry : o.operators) {  // checked before anything is written
    if (auto st = check_operator_role(operator_entry(entry).second); !st) {
      return make_error("--operators '" + entry + "': " + st.error().message);
    }
  }
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
  const nlohmann::json info = {{"consortium", o.consortium}, {"coordinator", o.coordinator}, {"admin", admin}};
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
    if (auto st = write_holder(o.out, "site", site); !st) return st;
  }
  for (const auto& entry : o.operators) {
    const auto [name, role] = operator_entry(entry);
    if (auto st = write_holder(o.out, "operator", name, false, role); !st) return st;
  }
  return Status::success();
}

Status add_site(const fs::path& out, const std::string& site) { return write_holder(out, "site", site, true); }
Status provision_site(const fs::path& out, const std::string& site) { return write_holder(out, "site", site); }
Status add_operator(const fs::path& out, const std::string& name, const std::string& role) {
  return write_holder(out, "operator", name, false, role);
}

Status check_operator_role(const std::string& role) {
  if (auto known = protocol::parse_operator_role(role); !known) return known.error();
  return Status::success();
}

namespace {

// A kit folder's manifest, checked against the kit's root and required to be of `role`.
Result<std::pair<nlohmann::json, Holder>> own_manifest(const fs::path& dir, const std::string& role) {
  auto root_pub = files::read_all(dir / "root.pub");
  if (!root_pub) return root_pub.error();
  auto manifest = verified_manifest(dir / "manifest.json", dir / "manifest.sig", *root_pub);
  if (!manifest) return manifest.error();
  auto holder = holder_of(*manifest, (dir / "manifest.json").string());
  if (!holder) return holder.error();
  if (holder->role != role) {
    return make_error((dir / "manifest.json").string() + ": a kit for " + holder->role + " '" + holder->id +
                      "', not " + std::string(role == "operator" ? "an " : "a ") + role + " kit");
  }
  return std::make_pair(std::move(*manifest), std::move(*holder));
}

// The kit's CurveZMQ secret, checked against the public key its manifest names.
Result<std::string> own_secret(const fs::path& file, const std::string& manifest_public) {
  auto secret = read_secret(file);
  if (!secret) return secret.error();
  while (!secret->empty() && secret->back() == '\n') secret->pop_back();
  auto derived = crypto::curve_public_of(*secret);
  if (!derived) return make_error(file.string() + ": " + derived.error().message);
  if (*derived != manifest_public) return make_error(file.string() + ": does not belong to the public key in the manifest");
  return *secret;
}

}  // namespace

Result<SiteKit> load_site_kit(const fs::path& dir) {
  auto own = own_manifest(dir, "site");
  if (!own) return own.error();
  const auto& [manifest, holder] = *own;
  SiteKit kit;
  try {
    kit.consortium = manifest.at("consortium");
    kit.site_id = holder.id;
    kit.coordinator_endpoint = manifest.at("coordinator_endpoint");
    kit.coordinator_curve_public = manifest.at("coordinator_curve_public");
    kit.coordinator_sign_public = manifest.at("coordinator_sign_public");
    kit.site_curve_public = holder.curve_public;
  } catch (const std::exception& e) {
    return make_error((dir / "manifest.json").string() + ": " + e.what());
  }
  auto secret = own_secret(dir / "site.curve.secret", kit.site_curve_public);
  if (!secret) return secret.error();
  kit.site_curve_secret = *secret;
  auto storage = read_secret(dir / "storage.key");
  if (!storage) return storage.error();
  if (storage->size() != crypto::kStorageKeyBytes) return make_error((dir / "storage.key").string() + ": not a 32-byte key");
  kit.storage_key = *storage;
  auto fingerprint = root_fingerprint(dir / "root.pub");
  if (!fingerprint) return fingerprint.error();
  kit.root_fingerprint = *fingerprint;
  auto root_pub = files::read_all(dir / "root.pub");
  if (!root_pub) return root_pub.error();
  kit.root_public = *root_pub;
  auto text = files::read_all(dir / "manifest.json");
  auto sig = files::read_all(dir / "manifest.sig");
  if (!text) return text.error();
  if (!sig) return sig.error();
  kit.manifest = *text;
  kit.manifest_signature = *sig;
  // Kits made before secure aggregation have no signing identity: they work for everything else.
  if (manifest.contains("site_sign_public")) {
    auto sign_key = read_secret(dir / "site.sign.key");
    if (!sign_key) return sign_key.error();
    auto probe = crypto::sign(*sign_key, "fedda kit check");
    if (!probe || !crypto::verify(manifest.at("site_sign_public").get<std::string>(), "fedda kit check", *probe)) {
      return make_error((dir / "site.sign.key").string() + ": does not belong to the signing key in the manifest");
    }
    kit.site_sign_private = *sign_key;
  }
  return kit;
}

Result<std::string> site_signing_key(const std::string& root_public, const std::string& manifest, const std::string& signature,
                                     const std::string& site) {
  if (auto st = crypto::verify(root_public, manifest, signature); !st) {
    return make_error("site '" + site + "': its manifest is not signed by this consortium's root");
  }
  try {
    const auto m = nlohmann::json::parse(manifest);
    if (m.value("role", std::string("site")) != "site" || m.at("site_id").get<std::string>() != site) {
      return make_error("site '" + site + "': the manifest relayed for it is another holder's");
    }
    if (!m.contains("site_sign_public")) {
      return make_error("site '" + site + "': its kit predates secure aggregation (no signing key); re-issue it with fedda-admin add-site");
    }
    return m.at("site_sign_public").get<std::string>();
  } catch (const std::exception& e) {
    return make_error("site '" + site + "': unreadable manifest: " + e.what());
  }
}

Result<std::string> root_fingerprint(const fs::path& root_pub) {
  auto pem = files::read_all(root_pub);
  if (!pem) return pem.error();
  auto fingerprint = crypto::public_key_fingerprint(*pem);
  if (!fingerprint) return make_error(root_pub.string() + ": " + fingerprint.error().message);
  return fingerprint;
}

Result<OperatorKit> load_operator_kit(const fs::path& dir) {
  auto own = own_manifest(dir, "operator");
  if (!own) return own.error();
  const auto& [manifest, holder] = *own;
  OperatorKit kit;
  try {
    kit.consortium = manifest.at("consortium");
    kit.name = holder.id;
    kit.coordinator_endpoint = manifest.at("coordinator_endpoint");
    kit.admin_endpoint = manifest.at("admin_endpoint");
    kit.coordinator_curve_public = manifest.at("coordinator_curve_public");
    kit.operator_curve_public = holder.curve_public;
  } catch (const std::exception& e) {
    return make_error((dir / "manifest.json").string() + ": " + e.what());
  }
  auto secret = own_secret(dir / "operator.curve.secret", kit.operator_curve_public);
  if (!secret) return secret.error();
  kit.operator_curve_secret = *secret;
  auto fingerprint = root_fingerprint(dir / "root.pub");
  if (!fingerprint) return fingerprint.error();
  kit.root_fingerprint = *fingerprint;
  return kit;
}

Result<Holder> verify_manifest(const CoordinatorKit& kit, const std::string& text, const std::string& signature) {
  if (auto st = crypto::verify(kit.root_public, text, signature); !st) {
    return make_error("the manifest is not signed by this consortium's root (" + st.error().message + ")");
  }
  try {
    const auto manifest = nlohmann::json::parse(text);
    if (manifest.at("coordinator_curve_public") != kit.curve_public) return make_error("the manifest was issued for another coordinator");
    return holder_of(manifest, "the manifest");
  } catch (const std::exception& e) {
    return make_error(std::string("the manifest: ") + e.what());
  }
}

Result<CoordinatorKit> load_coordinator_kit(const fs::path& dir) {
  auto root_pub = files::read_all(dir / "root.pub");
  if (!root_pub) return root_pub.error();
  CoordinatorKit kit;
  kit.dir = dir;
  kit.root_public = *root_pub;
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
  if (storage->size() != crypto::kStorageKeyBytes) return make_error((dir / "storage.key").string() + ": not a 32-byte key");
  kit.storage_key = *storage;
  for (const char* folder : {"sites", "operators"}) {
    std::error_code ec;
    std::vector<fs::path> manifests;
    for (const auto& entry : fs::directory_iterator(dir / folder, ec)) {
      const auto name = entry.path().filename().string();
      const std::string suffix = ".manifest.json";
      if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
        manifests.push_back(entry.path());
      }
    }
    std::sort(manifests.begin(), manifests.end());
    for (const auto& path : manifests) {
      auto text = files::read_all(path);
      if (!text) return text.error();
      auto sig_path = path;
      sig_path.replace_extension(".sig");
      auto signature = files::read_all(sig_path);
      if (!signature) return signature.error();
      auto holder = verify_manifest(kit, *text, *signature);
      if (!holder) return make_error(path.string() + ": " + holder.error().message);
      if (holder->role != (std::string(folder) == "sites" ? "site" : "operator")) {
        return make_error(path.string() + ": " + (holder->role == "operator" ? "an " : "a ") + holder->role +
                          " manifest among the " + folder);
      }
      try {
        kit.consortium = nlohmann::json::parse(*text).at("consortium");
      } catch (const std::exception& e) {
        return make_error(path.string() + ": " + e.what());
      }
      (holder->role == "site" ? kit.sites : kit.operators)[holder->curve_public] = holder->id;
      if (holder->role == "operator") kit.operator_roles[holder->id] = holder->operator_role;
    }
  }
  if (kit.sites.empty()) return make_error((dir / "sites").string() + ": no site manifests; provision or add sites first");
  return kit;
}

}  // namespace fedda::kit
