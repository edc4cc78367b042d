// Signatures, authenticated encryption and kits: what is altered is refused.
#include "fedda/common/crypto.h"

#include <gtest/gtest.h>

#include <set>
#include <sys/stat.h>

#include "fedda/common/files.h"
#include "fedda/common/kit.h"
#include "support/test_support.h"

namespace fedda {
namespace {

namespace fs = std::filesystem;

TEST(Crypto, SignaturesVerifyOnlyTheSignedMessageUnderTheSignersKey) {
  auto key = crypto::generate_signing_key();
  ASSERT_TRUE(key) << key.error().message;
  auto other = crypto::generate_signing_key();
  ASSERT_TRUE(other);
  auto signature = crypto::sign(key->private_pem, "model bytes");
  ASSERT_TRUE(signature) << signature.error().message;
  EXPECT_EQ(signature->size(), 64u);
  EXPECT_TRUE(crypto::verify(key->public_pem, "model bytes", *signature));
  EXPECT_FALSE(crypto::verify(key->public_pem, "model bytez", *signature));
  EXPECT_FALSE(crypto::verify(other->public_pem, "model bytes", *signature));
  auto flipped = *signature;
  flipped[10] ^= 1;
  EXPECT_FALSE(crypto::verify(key->public_pem, "model bytes", flipped));
  EXPECT_FALSE(crypto::verify("not a key", "model bytes", *signature));
}

TEST(Crypto, SealedDataOpensOnlyUnaltered) {
  auto key = crypto::random_bytes(32).value();
  const std::string plain(100000, 'x');
  auto sealed = crypto::seal(key, plain, "soft-labels-s1.pt");
  ASSERT_TRUE(sealed) << sealed.error().message;
  EXPECT_EQ(sealed->size(), plain.size() + 28);
  EXPECT_EQ(sealed->find(std::string(64, 'x')), std::string::npos);  // no plaintext left in it
  auto opened = crypto::open(key, *sealed, "soft-labels-s1.pt");
  ASSERT_TRUE(opened);
  EXPECT_EQ(*opened, plain);
  for (const std::size_t at : {std::size_t{0}, std::size_t{20}, sealed->size() - 1}) {  // nonce, body, tag
    auto tampered = *sealed;
    tampered[at] ^= 0x01;
    EXPECT_FALSE(crypto::open(key, tampered, "soft-labels-s1.pt")) << "byte " << at;
  }
  EXPECT_FALSE(crypto::open(key, *sealed, "soft-labels-s2.pt"));  // another file's name
  EXPECT_FALSE(crypto::open(crypto::random_bytes(32).value(), *sealed, "soft-labels-s1.pt"));
  EXPECT_FALSE(crypto::open(key, sealed->substr(0, 20), "soft-labels-s1.pt"));
}

TEST(Crypto, ASealedFileCannotStandInForAnother) {
  testing::ScratchDir dir;
  const auto key = crypto::random_bytes(32).value();
  ASSERT_TRUE(crypto::write_sealed(dir / "round-0001.weights", "weights of round 1", key));
  ASSERT_TRUE(crypto::write_sealed(dir / "round-0002.weights", "weights of round 2", key));
  EXPECT_EQ(crypto::read_sealed(dir / "round-0001.weights", key).value(), "weights of round 1");
  fs::rename(dir / "round-0001.weights", dir / "round-0002.weights");  // an old round put in place
  auto swapped = crypto::read_sealed(dir / "round-0002.weights", key);
  ASSERT_FALSE(swapped);
  EXPECT_NE(swapped.error().message.find("round-0002.weights: refused"), std::string::npos) << swapped.error().message;
  ASSERT_TRUE(crypto::write_sealed(dir / "plain.txt", "plain", ""));  // no key: plain
  EXPECT_EQ(files::read_all(dir / "plain.txt").value(), "plain");
}

TEST(Kit, ProvisionedKitsVerifyAndSecretsAre0600) {
  testing::ScratchDir dir;
  ASSERT_TRUE(kit::provision({"wmh", "tcp://coordinator:5570", {"utrecht", "amsterdam"}, dir.path(), {}, {}}));
  auto site = kit::load_site_kit(dir / "sites/amsterdam");
  ASSERT_TRUE(site) << site.error().message;
  EXPECT_EQ(site->site_id, "amsterdam");
  EXPECT_EQ(site->consortium, "wmh");
  EXPECT_EQ(site->storage_key.size(), 32u);
  for (const auto* secret : {"root/root.key", "coordinator/coordinator.curve.secret", "coordinator/coordinator.sign.key",
                             "coordinator/storage.key", "sites/amsterdam/site.curve.secret", "sites/amsterdam/storage.key"}) {
    struct stat info {};
    ASSERT_EQ(::stat((dir.path() / secret).c_str(), &info), 0) << secret;
    EXPECT_EQ(info.st_mode & 0777, 0600u) << secret;
  }
  auto coordinator = kit::load_coordinator_kit(dir / "coordinator");
  ASSERT_TRUE(coordinator) << coordinator.error().message;
  EXPECT_EQ(coordinator->sites.size(), 2u);
  EXPECT_EQ(coordinator->sites.at(site->site_curve_public), "amsterdam");
  EXPECT_FALSE(kit::provision({"wmh", "tcp://coordinator:5570", {"x"}, dir.path(), {}, {}}));  // never overwrites a root
}

TEST(Kit, AKitWithAnAlteredManifestIsRefused) {
  testing::ScratchDir dir;
  ASSERT_TRUE(kit::provision({"wmh", "tcp://coordinator:5570", {"utrecht"}, dir.path(), {}, {}}));
  const auto manifest = dir / "sites/utrecht/manifest.json";
  auto text = files::read_all(manifest).value();
  text.replace(text.find("utrecht"), 7, "intrude");
  ASSERT_TRUE(files::write_atomically(manifest, text));
  auto site = kit::load_site_kit(dir / "sites/utrecht");
  ASSERT_FALSE(site);
  EXPECT_NE(site.error().message.find("not signed by this consortium's root"), std::string::npos) << site.error().message;

  // A manifest signed by another consortium's root is refused by this coordinator.
  testing::ScratchDir other;
  ASSERT_TRUE(kit::provision({"other", "tcp://coordinator:5570", {"utrecht"}, other.path(), {}, {}}));
  fs::copy_file(other / "coordinator/sites/utrecht.manifest.json", dir / "coordinator/sites/spy.manifest.json");
  fs::copy_file(other / "coordinator/sites/utrecht.manifest.sig", dir / "coordinator/sites/spy.manifest.sig");
  auto coordinator = kit::load_coordinator_kit(dir / "coordinator");
  ASSERT_FALSE(coordinator);
  EXPECT_NE(coordinator.error().message.find("spy.manifest.json"), std::string::npos) << coordinator.error().message;
}

TEST(Kit, ASecretReadableByOthersIsRefused) {
  testing::ScratchDir dir;
  ASSERT_TRUE(kit::provision({"wmh", "tcp://coordinator:5570", {"utrecht"}, dir.path(), {}, {}}));
  ::chmod((dir.path() / "sites/utrecht/site.curve.secret").c_str(), 0644);
  auto site = kit::load_site_kit(dir / "sites/utrecht");
  ASSERT_FALSE(site);
  EXPECT_NE(site.error().message.find("must be 0600"), std::string::npos) << site.error().message;
}

TEST(Kit, AddingASiteLeavesTheOtherKitsAlone) {
  testing::ScratchDir dir;
  ASSERT_TRUE(kit::provision({"wmh", "tcp://coordinator:5570", {"utrecht"}, dir.path(), {}, {}}));
  const auto before = files::read_all(dir / "sites/utrecht/manifest.json").value();
  ASSERT_TRUE(kit::add_site(dir.path(), "singapore"));
  EXPECT_EQ(files::read_all(dir / "sites/utrecht/manifest.json").value(), before);
  EXPECT_TRUE(kit::load_site_kit(dir / "sites/singapore"));
  EXPECT_EQ(kit::load_coordinator_kit(dir / "coordinator").value().sites.size(), 1u);  // until admitted (below)
  EXPECT_FALSE(kit::add_site(dir.path(), "singapore"));  // exists already
}

TEST(Kit, OperatorKitsCarryTheirRoleAndNeitherKindPassesForTheOther) {
  testing::ScratchDir dir;
  ASSERT_TRUE(kit::provision({"wmh", "tcp://coordinator:5570", {"utrecht"}, dir.path(), {"alice"}, {}}));
  auto alice = kit::load_operator_kit(dir / "operators/alice");
  ASSERT_TRUE(alice) << alice.error().message;
  EXPECT_EQ(alice->name, "alice");
  EXPECT_EQ(alice->admin_endpoint, "tcp://coordinator:5571");  // the next port by default
  EXPECT_EQ(alice->coordinator_endpoint, "tcp://coordinator:5570");
  struct stat info {};
  ASSERT_EQ(::stat((dir / "operators/alice/operator.curve.secret").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);

  auto as_site = kit::load_site_kit(dir / "operators/alice");
  ASSERT_FALSE(as_site);
  EXPECT_NE(as_site.error().message.find("a kit for operator 'alice', not a site kit"), std::string::npos)
      << as_site.error().message;
  auto as_operator = kit::load_operator_kit(dir / "sites/utrecht");
  ASSERT_FALSE(as_operator);
  EXPECT_NE(as_operator.error().message.find("not an operator kit"), std::string::npos) << as_operator.error().message;

  ASSERT_TRUE(kit::add_operator(dir.path(), "bob"));
  auto coordinator = kit::load_coordinator_kit(dir / "coordinator").value();
  EXPECT_EQ(coordinator.operators.size(), 2u);
  EXPECT_EQ(coordinator.operators.at(alice->operator_curve_public), "alice");
  EXPECT_EQ(coordinator.sites.size(), 1u);
  EXPECT_FALSE(kit::add_operator(dir.path(), "bob"));  // exists already
  EXPECT_FALSE(kit::add_operator(dir.path(), "../x"));  // not an id
}

TEST(Kit, AManifestMovedToTheOtherRolesFolderIsRefused) {
  testing::ScratchDir dir;
  ASSERT_TRUE(kit::provision({"wmh", "tcp://coordinator:5570", {"utrecht"}, dir.path(), {"alice"}, {}}));
  // An operator's manifest dropped among the sites would make an operator key a site.
  fs::copy_file(dir / "coordinator/operators/alice.manifest.json", dir / "coordinator/sites/alice.manifest.json");
  fs::copy_file(dir / "coordinator/operators/alice.manifest.sig", dir / "coordinator/sites/alice.manifest.sig");
  auto coordinator = kit::load_coordinator_kit(dir / "coordinator");
  ASSERT_FALSE(coordinator);
  EXPECT_NE(coordinator.error().message.find("an operator manifest among the sites"), std::string::npos)
      << coordinator.error().message;
}

// Regression (hostile-peer review, fault 6): a kit made with add-site and never admitted joined
// once the coordinator restarted, because the coordinator trusted every manifest under its kit's
// sites/. add-site leaves the manifest in pending-sites/, which a starting coordinator does not
// trust; `admit` is the act that does (the coordinator keeps the admission in its state).
TEST(Kit, ASiteAddedLaterIsNotTrustedUntilAnOperatorAdmitsIt) {
  testing::ScratchDir dir;
  ASSERT_TRUE(kit::provision({"wmh", "tcp://coordinator:5570", {"utrecht"}, dir.path(), {}, {}}));
  ASSERT_TRUE(kit::add_site(dir.path(), "oslo"));
  EXPECT_TRUE(fs::exists(dir / "coordinator" / kit::kPendingSites / "oslo.manifest.json"));
  EXPECT_FALSE(fs::exists(dir / "coordinator" / "sites" / "oslo.manifest.json"));
  const auto coordinator = kit::load_coordinator_kit(dir / "coordinator").value();
  std::set<std::string> trusted;
  for (const auto& [key, id] : coordinator.sites) trusted.insert(id);
  EXPECT_EQ(trusted, std::set<std::string>{"utrecht"});
  // Provisioned with the root at hand (fedda-sim's own consortium), a site is trusted at start.
  ASSERT_TRUE(kit::provision_site(dir.path(), "rome"));
  const auto again = kit::load_coordinator_kit(dir / "coordinator").value();
  trusted.clear();
  for (const auto& [key, id] : again.sites) trusted.insert(id);
  EXPECT_EQ(trusted, (std::set<std::string>{"utrecht", "rome"}));
}

TEST(Kit, VerifiesAManifestAdmittedLater) {
  testing::ScratchDir dir;
  ASSERT_TRUE(kit::provision({"wmh", "tcp://coordinator:5570", {"utrecht"}, dir.path(), {}, {}}));
  const auto coordinator = kit::load_coordinator_kit(dir / "coordinator").value();
  ASSERT_TRUE(kit::add_site(dir.path(), "oslo"));
  const auto text = files::read_all(dir / "sites/oslo/manifest.json").value();
  const auto sig = files::read_all(dir / "sites/oslo/manifest.sig").value();
  auto holder = kit::verify_manifest(coordinator, text, sig);
  ASSERT_TRUE(holder) << holder.error().message;
  EXPECT_EQ(holder->role, "site");
  EXPECT_EQ(holder->id, "oslo");
  auto forged = text;
  forged.replace(forged.find("oslo"), 4, "rome");
  EXPECT_FALSE(kit::verify_manifest(coordinator, forged, sig));
}

TEST(Kit, TheAdminEndpointIsTheNextPortUnlessGiven) {
  EXPECT_EQ(kit::default_admin_endpoint("tcp://10.0.0.1:5570").value(), "tcp://10.0.0.1:5571");
  EXPECT_EQ(kit::default_admin_endpoint("tcp://127.0.0.1:0").value(), "tcp://127.0.0.1:0");
  EXPECT_FALSE(kit::default_admin_endpoint("tcp://host"));
  EXPECT_FALSE(kit::default_admin_endpoint("ipc:///tmp/x"));
  EXPECT_FALSE(kit::default_admin_endpoint("tcp://host:65535"));
}

TEST(Kit, ASecretThatIsALinkIsRefused) {
  testing::ScratchDir dir;
  ASSERT_TRUE(kit::provision({"wmh", "tcp://coordinator:5570", {"utrecht"}, dir.path(), {}, {}}));
  const auto secret = dir / "sites/utrecht/storage.key";
  fs::rename(secret, dir / "elsewhere.key");
  fs::create_symlink(dir / "elsewhere.key", secret);
  auto site = kit::load_site_kit(dir / "sites/utrecht");
  ASSERT_FALSE(site);
  EXPECT_NE(site.error().message.find("a symbolic link"), std::string::npos) << site.error().message;
}

TEST(Kit, ARootFingerprintIsTheRootsAndTellsAForgedKit) {
  testing::ScratchDir dir, forged;
  ASSERT_TRUE(kit::provision({"wmh", "tcp://coordinator:5570", {"utrecht"}, dir.path(), {}, {}}));
  ASSERT_TRUE(kit::provision({"wmh", "tcp://coordinator:5570", {"utrecht"}, forged.path(), {}, {}}));
  const auto real = kit::root_fingerprint(dir / "root/root.pub").value();
  EXPECT_EQ(real.rfind("sha256:", 0), 0u);
  EXPECT_EQ(real.size(), 71u);
  EXPECT_EQ(kit::load_site_kit(dir / "sites/utrecht").value().root_fingerprint, real);
  // A whole forged kit verifies against the root it carries; only its fingerprint tells.
  auto other = kit::load_site_kit(forged / "sites/utrecht");
  ASSERT_TRUE(other);
  EXPECT_NE(other->root_fingerprint, real);
}

TEST(Crypto, ASealedFileIsBoundToItsContext) {
  testing::ScratchDir dir;
  const std::string key(32, '\x05');
  ASSERT_TRUE(crypto::write_sealed(dir / "round-0002.weights", "weights", key, "job a round 2"));
  EXPECT_TRUE(crypto::read_sealed(dir / "round-0002.weights", key, "job a round 2"));
  EXPECT_FALSE(crypto::read_sealed(dir / "round-0002.weights", key, "job b round 2"));  // swapped between jobs
  EXPECT_FALSE(crypto::read_sealed(dir / "round-0002.weights", key, "job a round 3"));  // rolled to another round
  EXPECT_FALSE(crypto::read_sealed(dir / "round-0002.weights", key));
}

}  // namespace
}  // namespace fedda
