// What a site decides and keeps: its policy as written, subject pseudonyms, redacted failure
// text, offers held for approval, and the audit log's account of what it sent.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "fedda/common/crypto.h"
#include "fedda/common/files.h"
#include "fedda/site_agent/approvals.h"
#include "fedda/site_agent/egress.h"
#include "fedda/site_agent/site_config.h"
#include "fedda/site_agent/site_status.h"
#include "site_worker.h"
#include "support/test_support.h"

namespace fedda::site_agent {
namespace {

namespace fs = std::filesystem;

TEST(SitePolicy, IsReadWithItsDefaultsAndMistakesAreNamed) {
  testing::ScratchDir dir;
  const auto path = dir / "site.yaml";
  std::ofstream(path) << "site_id: a\ncoordinator: tcp://h:1\ndata: d\n";
  auto plain = read_site_config(path).value();
  EXPECT_EQ(plain.policy.approval, "auto");
  EXPECT_EQ(plain.policy.min_batch_size, 4);
  EXPECT_EQ(plain.policy.job_types.size(), 4u);
  std::ofstream(path) << "site_id: a\ncoordinator: tcp://h:1\ndata: d\npolicy:\n  job_types: [kd, evaluate]\n"
                         "  trusted_sources: [utrecht]\n  min_batch_size: 8\n  evaluation_interval_s: 3600\n"
                         "  approval: manual\n";
  auto strict = read_site_config(path).value();
  EXPECT_EQ(strict.policy.job_types, (std::vector<std::string>{"kd", "evaluate"}));
  EXPECT_EQ(strict.policy.trusted_sources, std::vector<std::string>{"utrecht"});
  EXPECT_EQ(strict.policy.approval, "manual");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"policy:\n  job_types: [distill]\n", "policy: job_types: 'distill'"},
      {"policy:\n  approval: sometimes\n", "approval must be auto or manual"},
      {"policy:\n  min_batch_size: 0\n", "min_batch_size must be at least 1"},
      {"policy:\n  aproval: manual\n", "unknown key 'aproval'"},
      {"root_fingerprint: abc\n", "root_fingerprint must be sha256:"},
  };
  for (const auto& [extra, expected] : cases) {
    std::ofstream(path) << "site_id: a\ncoordinator: tcp://h:1\ndata: d\n" << extra;
    auto c = read_site_config(path);
    ASSERT_FALSE(c) << extra;
    EXPECT_NE(c.error().message.find(expected), std::string::npos) << c.error().message;
  }
}

TEST(SitePolicy, TheShippedExampleIsValidOnceItsPlaceholderFingerprintIsReplaced) {
  const auto example = fs::path(FEDDA_CONFIGS_DIR) / "site.example.yaml";
  // As shipped, the all-zero fingerprint is named as the placeholder it is.
  auto as_shipped = read_site_config(example);
  ASSERT_FALSE(as_shipped);
  EXPECT_NE(as_shipped.error().message.find("placeholder"), std::string::npos) << as_shipped.error().message;
  // With a real fingerprint in its place, everything else in the example is valid.
  std::ifstream in(example);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string zeros(64, '0'), real = "sha256:" + std::string(64, 'a');
  const auto at = text.find("sha256:" + zeros);
  ASSERT_NE(at, std::string::npos);
  text.replace(at, real.size(), real);
  testing::ScratchDir dir;
  std::ofstream(dir / "site.yaml") << text;
  auto c = read_site_config(dir / "site.yaml");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->policy.approval, "manual");
  EXPECT_EQ(c->root_fingerprint, real);
}

TEST(Pseudonyms, AreKeyedStableAndCarryNothingOfTheId) {
  const std::string key(32, '\x11'), other(32, '\x22');
  const auto p = pseudonym(key, "patient-0042");
  EXPECT_EQ(p, pseudonym(key, "patient-0042"));
  EXPECT_NE(p, pseudonym(key, "patient-0043"));
  EXPECT_NE(p, pseudonym(other, "patient-0042"));  // another site's key: another pseudonym
  EXPECT_EQ(p.size(), 18u);
  EXPECT_EQ(p.rfind("s-", 0), 0u);
  EXPECT_EQ(p.find("0042"), std::string::npos);
  // Without a kit the key is made once in the cache (0600) and kept.
  testing::ScratchDir dir;
  SiteConfig c;
  c.cache_dir = dir / "cache";
  const auto a = pseudonym_key(c).value(), b = pseudonym_key(c).value();
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.size(), 32u);
}

TEST(Redaction, TakesOutLocalPathsAndSubjectIds) {
  const auto text = redact("cannot read /srv/wmh/amsterdam/0042/pre/FLAIR.nii.gz: skipping amsterdam/0042 (of /srv/wmh/amsterdam); "
                           "2 of 5 scans",
                           {"0042", "0043"}, "/srv/wmh/amsterdam");
  EXPECT_EQ(text.find("/srv"), std::string::npos) << text;
  EXPECT_EQ(text.find("0042"), std::string::npos) << text;
  EXPECT_NE(text.find("2 of 5 scans"), std::string::npos) << text;  // what is not local stays readable
}

TEST(Approvals, AnApprovalHoldsForTheJobAsOfferedOnly) {
  testing::ScratchDir dir;
  ASSERT_TRUE(write_pending(dir.path(), {"kd-1", "digest-a", R"({"job": "kd-1"})"}));
  EXPECT_EQ(list_pending(dir.path()).size(), 1u);
  EXPECT_FALSE(decision(dir.path(), "kd-1", "digest-a"));
  ASSERT_TRUE(decide(dir.path(), "kd-1", true));
  EXPECT_EQ(decision(dir.path(), "kd-1", "digest-a"), std::optional<bool>(true));
  EXPECT_FALSE(decision(dir.path(), "kd-1", "digest-b")) << "an approval for another version of the job";
  ASSERT_TRUE(decide(dir.path(), "kd-1", false));
  EXPECT_EQ(decision(dir.path(), "kd-1", "digest-a"), std::optional<bool>(false));  // the last word counts
  EXPECT_FALSE(decision(dir.path(), "kd-1", "digest-b")) << "a refusal of another version of the job";
  EXPECT_FALSE(decide(dir.path(), "nothing", true));
  clear_pending(dir.path(), "kd-1");
  EXPECT_TRUE(list_pending(dir.path()).empty());
}

// Regression (security issue): the digest covered the job's settings only, so a job deleted
// and submitted again under its id with another teacher found the approval of the first.
TEST(Approvals, TheDigestCoversTheTeacherAndTheQualityEstimatorAsWellAsTheSettings) {
  protocol::JobOffer offer;
  offer.job.id = "kd-1";
  offer.job.type = protocol::JobType::kd;
  offer.job.sites = {"amsterdam", "utrecht"};
  offer.teacher.tensors.push_back(make_f32("w", {2}, {1.0f, 2.0f}));
  offer.quality_estimator = R"({"version": 1})";
  const auto digest = offer_digest(offer);
  EXPECT_EQ(digest.size(), 64u);
  EXPECT_EQ(offer_digest(offer), digest) << "the same offer, the same digest";
  auto other_teacher = offer;
  other_teacher.teacher.tensors[0] = make_f32("w", {2}, {1.0f, 2.5f});
  EXPECT_NE(offer_digest(other_teacher), digest);
  auto other_shape = offer;
  other_shape.teacher.tensors[0] = make_f32("w", {1, 2}, {1.0f, 2.0f});
  EXPECT_NE(offer_digest(other_shape), digest);
  auto other_name = offer;
  other_name.teacher.tensors[0].name = "v";
  EXPECT_NE(offer_digest(other_name), digest);
  auto other_estimator = offer;
  other_estimator.quality_estimator = R"({"version": 2})";
  EXPECT_NE(offer_digest(other_estimator), digest);
  auto other_settings = offer;
  other_settings.job.rounds += 1;
  EXPECT_NE(offer_digest(other_settings), digest);
}

// Regression (first-month issue): an approval was deleted once used, so the same job offered
// again after a coordinator restart waited for the administrator again and the job stalled. A
// settled offer leaves the waiting list; its decision stays until the job ends.
TEST(Approvals, ADecisionOutlivesItsOfferUntilTheJobEnds) {
  testing::ScratchDir dir;
  ASSERT_TRUE(write_pending(dir.path(), {"kd-1", "digest-a", R"({"job": "kd-1"})"}));
  ASSERT_TRUE(decide(dir.path(), "kd-1", true));
  settle_pending(dir.path(), "kd-1");
  EXPECT_TRUE(list_pending(dir.path()).empty());
  EXPECT_EQ(decision(dir.path(), "kd-1", "digest-a"), std::optional<bool>(true));
  EXPECT_FALSE(decision(dir.path(), "kd-1", "digest-b"));
  clear_pending(dir.path(), "kd-1");  // the job ended
  EXPECT_FALSE(decision(dir.path(), "kd-1", "digest-a"));
}

TEST(AuditLog, CountsHeartbeatsAndKeepsAFailuresFullText) {
  testing::ScratchDir dir;
  {
    AuditLog audit(dir / "audit.jsonl");
    for (int i = 0; i < 100; ++i) audit.record(protocol::MessageType::heartbeat, "", 0, "", "");
    audit.record(protocol::MessageType::job_failed, "kd-1", 0, "redacted", "", "full text with /srv/path");
    audit.record(protocol::MessageType::round_update, "kd-1", 1, std::string(1000, 'x'), "w[2x2]");
  }
  int lines = 0;
  std::ifstream in(dir / "audit.jsonl");
  for (std::string line; std::getline(in, line);) ++lines;
  EXPECT_EQ(lines, 3);  // one line for the hundred heartbeats
  const auto sent = summarize_audit(dir / "audit.jsonl");
  ASSERT_EQ(sent.size(), 2u);
  long heartbeats = 0, updates = 0;
  for (const auto& s : sent) {
    if (s.job.empty()) heartbeats = s.by_type.at("heartbeat");
    if (s.job == "kd-1") updates = s.updates_with_tensors;
  }
  EXPECT_EQ(heartbeats, 100);
  EXPECT_EQ(updates, 1);
  EXPECT_NE(files::read_all(dir / "audit.jsonl").value().find("full text with /srv/path"), std::string::npos);
}

}  // namespace
}  // namespace fedda::site_agent
