// What a site decides, against the real processes: its privacy ceiling over any job, refusal
// codes and nothing else for a hostile coordinator, quality reports as aggregates only, updates
// never in the clear where it requires secure aggregation, jobs run only after its
// administrator approves, its log lines only as its policy allows, and a forged kit refused by
// the pinned root. (Compiled into federation_test beside the coordinator's hardening tests: the
// same fixture starts the processes.)
#include <gtest/gtest.h>

#include <fstream>
#include <optional>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "fedda/common/crypto.h"
#include "fedda/common/files.h"
#include "fedda/common/kit.h"
#include "fedda/common/protocol.h"
#include "fedda/models/quality.h"
#include "fedda/models_core/weights.h"
#include "support/fake_sites.h"
#include "support/fake_coordinator.h"
#include "support/keyed_fake_coordinator.h"
#include "support/federation_fixture.h"

namespace fedda {
namespace {

using nlohmann::json;
using testing::Behaviour;

using testing::Output;

class Sovereignty : public Federation {
 protected:
  void SetUp() override {
    kit_ = dir_ / "kits";
    ASSERT_TRUE(kit::provision({"wmh", "tcp://127.0.0.1:0", {"utrecht", "amsterdam"}, kit_, {"alice"}, {}}));
    fingerprint_ = kit::root_fingerprint(kit_ / "root" / "root.pub").value();
  }
  // amsterdam's config with its kit, the pinned root and `policy` (YAML lines under policy:).
  fs::path amsterdam_config(const std::string& endpoint, const std::string& policy, const std::string& fingerprint = "") {
    const auto path = dir_ / "amsterdam-sovereign.yaml";
    std::ofstream(path) << "site_id: amsterdam\ncoordinator: " << endpoint << "\ndata: " << (data_dir() / "amsterdam").string()
                        << "\ncache_dir: " << (dir_ / "cache-amsterdam").string() << "\nthreads: 1\nheartbeat_ms: 200\n"
                        << "reconnect_min_ms: 100\nreconnect_max_ms: 1000\nkit: " << (kit_ / "sites" / "amsterdam").string()
                        << "\nroot_fingerprint: " << (fingerprint.empty() ? fingerprint_ : fingerprint) << "\npolicy:\n" << policy;
    return path;
  }
  // amsterdam's agent under `policy`, talking to `endpoint`.
  Process amsterdam_agent(const std::string& endpoint, const std::string& policy) {
    return Process({testing::bin("fedda-agent").string(), "run", "--config", amsterdam_config(endpoint, policy).string()},
                   dir_ / "amsterdam.log");
  }
  Output run(const std::vector<std::string>& argv) {
    static int n = 0;
    return testing::run_to_end(argv, dir_ / ("cmd-" + std::to_string(n++) + ".out"));
  }
  // The coordinator with the consortium's kit, serving without a job over STATE in dir_/state.
  std::unique_ptr<Process> kit_coordinator() {
    return std::make_unique<Process>(
        std::vector<std::string>{testing::bin("fedda-coordinator").string(), "serve", "--kit", (kit_ / "coordinator").string(),
                                 "--bind", "tcp://127.0.0.1:0", "--state", (dir_ / "state").string(), "--endpoint-file",
                                 endpoint_file().string(), "--heartbeat-ms", "200"},
        coordinator_log());
  }
  // Its sites' and operators' endpoints, as its endpoint file gives them.
  std::pair<std::string, std::string> endpoints() {
    const auto text = testing::read_text(endpoint_file());
    const auto first = text.find('\n');
    return {text.substr(0, first), text.substr(first + 1, text.find('\n', first + 1) - first - 1)};
  }
  // fedda-admin with alice's kit against the admin endpoint `admin`.
  Output operator_command(const std::string& admin, const std::vector<std::string>& args) {
    std::vector<std::string> argv = {testing::bin("fedda-admin").string(), "--kit", (kit_ / "operators" / "alice").string(),
                                     "--coordinator", admin};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
  }
  std::string fingerprint_;
};



// A site's privacy ceiling (policy max_epsilon) wins over any job: a job without DP, one whose
// target is above the ceiling and one whose noise would spend more than it are refused by that
// rule; a job within it trains, and its update says what it spent, never past the job's plan.
TEST_F(Sovereignty, ASitesPrivacyCeilingWinsOverAnyJob) {
  zmq::context_t context;
  testing::KeyedFakeCoordinator coordinator(context, kit_, teacher());
  Process agent = amsterdam_agent(coordinator.fake.endpoint(), "  max_epsilon: 3\n");
  ASSERT_TRUE(coordinator.greet(protocol::Welcome{200, 50}));
  const auto dp_offer = [&](const std::string& id, protocol::DpSpec dp) {
    auto o = protocol::decode_body<protocol::JobOffer>(coordinator.offer(id, protocol::JobType::kd, 8, 2)).value();
    o.job.rounds = 2;
    o.job.dp = dp;
    coordinator.send(protocol::MessageType::job_offer, id, 0, protocol::encode(protocol::Header{}, o).body, true);
  };
  const auto refusal = [&](const std::string& job) {
    auto m = coordinator.next(protocol::MessageType::job_failed);
    EXPECT_TRUE(m) << testing::read_text(dir_ / "amsterdam.log");
    if (!m) return protocol::JobFailed{};
    EXPECT_EQ(m->first.job_id, job);
    return protocol::decode_body<protocol::JobFailed>(m->second).value();
  };
  coordinator.send(protocol::MessageType::job_offer, "kd-plain", 0, coordinator.offer("kd-plain", protocol::JobType::kd, 8, 2), true);
  auto refused = refusal("kd-plain");
  EXPECT_EQ(refused.rule, "max_epsilon");
  dp_offer("kd-target-8", {1.0, 0, 8, 1e-5, 2});
  refused = refusal("kd-target-8");
  EXPECT_EQ(refused.rule, "max_epsilon");
  dp_offer("kd-little-noise", {1.0, 0.3, 0, 1e-5, 2});  // spends far more than 3 over 4 steps
  refused = refusal("kd-little-noise");
  EXPECT_EQ(refused.code, protocol::FailureCode::policy);
  EXPECT_EQ(refused.rule, "max_epsilon");

  dp_offer("kd-private", {1.0, 0, 2.5, 1e-5, 2});  // a target within the ceiling: the site picks the noise
  ASSERT_TRUE(coordinator.next(protocol::MessageType::job_ready)) << testing::read_text(dir_ / "amsterdam.log");
  double previous = 0;
  for (int round = 1; round <= 2; ++round) {
    protocol::RoundTask task;
    task.learning_rate = 1e-4;
    task.model = coordinator.teacher_model.weights;
    coordinator.send(protocol::MessageType::round_task, "kd-private", round, protocol::encode(protocol::Header{}, task).body, true);
    ASSERT_TRUE(coordinator.next(protocol::MessageType::update_ready)) << testing::read_text(dir_ / "amsterdam.log");
    coordinator.send(protocol::MessageType::upload, "kd-private", round, std::string(), false);
    auto m = coordinator.next(protocol::MessageType::round_update);
    ASSERT_TRUE(m);
    const auto update = protocol::decode_body<protocol::RoundUpdate>(m->second).value();
    EXPECT_GT(update.epsilon, previous);
    EXPECT_LE(update.epsilon, 2.5 * 1.0001);
    EXPECT_GT(update.noise_multiplier, 0);
    previous = update.epsilon;
  }
  EXPECT_NEAR(previous, 2.5, 0.01);  // the planned steps spend the target
  // The site's ledger counted them on disk, before each update left.
  const auto ledger = nlohmann::json::parse(testing::read_text(dir_ / "cache-amsterdam" / "privacy" / "kd-private.json"));
  EXPECT_EQ(ledger["steps"], 4);
  EXPECT_NEAR(ledger["epsilon"].get<double>(), previous, 1e-9);
  // Round 2 asked for again (as after a coordinator's restart) would be new steps on the same
  // patients, beyond the four the guarantee covers: refused, nothing trained, whatever the round's number.
  protocol::RoundTask task;
  task.model = coordinator.teacher_model.weights;
  coordinator.send(protocol::MessageType::round_task, "kd-private", 2, protocol::encode(protocol::Header{}, task).body, true);
  refused = refusal("kd-private");
  EXPECT_EQ(refused.rule, "max_epsilon");
  EXPECT_NE(refused.reason.find("beyond the job's planned 4"), std::string::npos) << refused.reason;
  EXPECT_NE(testing::read_text(dir_ / "amsterdam.log").find("patient-level DP-SGD"), std::string::npos);
  agent.signal(SIGTERM);
  EXPECT_EQ(agent.wait(30s), 0);
}

// A coordinator holding the consortium's real keys asks for what the site's policy forbids:
// only refusal codes leave the site.
TEST_F(Sovereignty, AHostileCoordinatorGetsNothingButRefusalCodes) {
  zmq::context_t context;
  testing::KeyedFakeCoordinator coordinator(context, kit_, teacher());
  auto& fake = coordinator.fake;
  Process agent = amsterdam_agent(fake.endpoint(), "  job_types: [kd, evaluate]\n  min_batch_size: 4\n  evaluation_interval_s: 3600\n");
  const auto next = [&](protocol::MessageType type) { return coordinator.next(type); };
  const auto send = [&](protocol::MessageType type, const std::string& job, int round, std::string body, bool sign) {
    coordinator.send(type, job, round, std::move(body), sign);
  };
  const auto offer = [&](const std::string& id, protocol::JobType type, int batch, int steps) {
    return coordinator.offer(id, type, batch, steps);
  };
  ASSERT_TRUE(coordinator.greet(protocol::Welcome{200, 50}));
  const auto& teacher_model = coordinator.teacher_model;
  const auto failure = [&](const std::string& job) {
    auto m = next(protocol::MessageType::job_failed);
    EXPECT_TRUE(m);
    if (!m) return protocol::JobFailed{};
    EXPECT_EQ(m->first.job_id, job);
    return protocol::decode_body<protocol::JobFailed>(m->second).value();
  };
  send(protocol::MessageType::job_offer, "kd-batch-1", 0, offer("kd-batch-1", protocol::JobType::kd, 1, 1), true);
  auto refused = failure("kd-batch-1");
  EXPECT_EQ(refused.code, protocol::FailureCode::policy);
  EXPECT_EQ(refused.rule, "min_batch_size");
  send(protocol::MessageType::job_offer, "ada-1", 0, offer("ada-1", protocol::JobType::ada, 8, 8), true);
  refused = failure("ada-1");
  EXPECT_EQ(refused.code, protocol::FailureCode::policy);
  EXPECT_EQ(refused.rule, "job_types");
  auto unknown = offer("odd-1", protocol::JobType::teacher, 8, 8);
  unknown.replace(unknown.find("teacher"), 7, "extract");  // a job type this site has never heard of
  send(protocol::MessageType::job_offer, "odd-1", 0, unknown, true);
  EXPECT_EQ(failure("odd-1").code, protocol::FailureCode::malformed);

  // An evaluation it accepts, answered once; asked again within the hour, refused.
  send(protocol::MessageType::job_offer, "eval-1", 0, offer("eval-1", protocol::JobType::evaluate, 8, 8), true);
  auto ready = next(protocol::MessageType::job_ready);
  ASSERT_TRUE(ready);
  protocol::RoundTask task;
  task.evaluate = true;
  task.model = teacher_model.weights;
  const auto task_body = protocol::encode(protocol::Header{}, task).body;
  send(protocol::MessageType::round_task, "eval-1", 2, task_body, true);
  ASSERT_TRUE(next(protocol::MessageType::update_ready));
  send(protocol::MessageType::upload, "eval-1", 2, std::string(), false);
  auto scored = next(protocol::MessageType::round_update);
  ASSERT_TRUE(scored);
  const auto update = protocol::decode_body<protocol::RoundUpdate>(scored->second).value();
  const auto subjects = imaging::find_clinic_subjects(data_dir(), "amsterdam").value();
  ASSERT_FALSE(update.metrics.empty());
  for (const auto& m : update.metrics) {
    EXPECT_EQ(m.subject.rfind("s-", 0), 0u) << m.subject;  // pseudonyms only
    for (const auto& s : subjects) EXPECT_NE(m.subject, s.subject);
  }
  send(protocol::MessageType::round_task, "eval-1", 3, task_body, true);
  refused = failure("eval-1");
  EXPECT_EQ(refused.code, protocol::FailureCode::policy);
  EXPECT_EQ(refused.rule, "evaluation_interval_s");
  const std::set<protocol::MessageType> allowed = {protocol::MessageType::hello, protocol::MessageType::heartbeat,
                                                   protocol::MessageType::job_failed, protocol::MessageType::job_ready,
                                                   protocol::MessageType::update_ready, protocol::MessageType::round_update};
  for (const auto& [h, body] : fake.received()) {
    EXPECT_TRUE(allowed.count(h.type)) << protocol::type_name(h.type);
    if (h.type == protocol::MessageType::round_update) {
      EXPECT_EQ(h.job_id, "eval-1");
    }
  }
  EXPECT_TRUE(agent.running());
}

// An evaluation round's quality report: the site writes the per-scan report into its cache and
// sends the evaluation with the report's aggregates only. Everything the agent sent is decoded:
// no message but the expected ones, no bytes beyond what the decoded update re-encodes to, subjects
// only as pseudonyms, and the aggregates exactly those of the site's local summary.
TEST_F(Sovereignty, AQualityReportLeavesTheSiteAsAggregatesOnly) {
  // The estimator the job's model file would carry, fitted on the source's labelled scans.
  auto estimator = models::calibrate_quality(teacher(), imaging::find_clinic_subjects(data_dir(), "utrecht").value(), {});
  ASSERT_TRUE(estimator) << estimator.error().message;
  zmq::context_t context;
  testing::KeyedFakeCoordinator coordinator(context, kit_, teacher());
  auto& fake = coordinator.fake;
  Process agent = amsterdam_agent(fake.endpoint(), "  job_types: [evaluate]\n");
  ASSERT_TRUE(coordinator.greet(protocol::Welcome{200, 50}));
  coordinator.send(protocol::MessageType::job_offer, "eval-q", 0,
                   coordinator.offer("eval-q", protocol::JobType::evaluate, 8, 8, false, models::to_json(*estimator)), true);
  auto ready = coordinator.next(protocol::MessageType::job_ready);
  ASSERT_TRUE(ready);
  const auto evaluated = protocol::decode_body<protocol::JobReady>(ready->second).value().evaluation_subjects;
  protocol::RoundTask task;
  task.evaluate = true;
  task.model = coordinator.teacher_model.weights;
  const int final_round = protocol::JobSpec{}.rounds + 1;  // the evaluation after the job's last round
  coordinator.send(protocol::MessageType::round_task, "eval-q", final_round, protocol::encode(protocol::Header{}, task).body, true);
  ASSERT_TRUE(coordinator.next(protocol::MessageType::update_ready));
  coordinator.send(protocol::MessageType::upload, "eval-q", final_round, std::string(), false);
  auto scored = coordinator.next(protocol::MessageType::round_update);
  ASSERT_TRUE(scored) << testing::read_text(dir_ / "amsterdam.log");
  const auto update = protocol::decode_body<protocol::RoundUpdate>(scored->second).value();
  ASSERT_TRUE(update.has_quality) << testing::read_text(dir_ / "amsterdam.log");
  EXPECT_EQ(update.quality.scans, evaluated);
  EXPECT_TRUE(update.quality.estimated);

  // At the site: the per-scan report, and the aggregates that left.
  const auto report = dir_ / "cache-amsterdam" / "reports" / "eval-q";
  const auto csv = testing::read_text(report / "estimates.csv");
  EXPECT_EQ(static_cast<int>(std::count(csv.begin(), csv.end(), '\n')), evaluated + 1) << csv;
  EXPECT_TRUE(fs::exists(report / "report.html"));
  EXPECT_FALSE(fs::exists(report / "model.pt")) << "the evaluated weights are not kept with the report";
  // The site's first report of at least 3 scans becomes its drift baseline.
  EXPECT_EQ(fs::exists(dir_ / "cache-amsterdam" / "reports" / "site-profile.json"), evaluated >= 3) << evaluated;
  const auto local = nlohmann::json::parse(testing::read_text(report / "summary.json"));
  EXPECT_EQ(local["scans"].get<int>(), update.quality.scans);
  EXPECT_EQ(local["flagged"].get<int>(), update.quality.flagged);
  EXPECT_DOUBLE_EQ(local["estimated_dsc_median"].get<double>(), update.quality.median);

  // What went out: the expected messages only, each exactly what its decoded form encodes to.
  const auto subjects = imaging::find_clinic_subjects(data_dir(), "amsterdam").value();
  const std::set<protocol::MessageType> allowed = {protocol::MessageType::hello, protocol::MessageType::heartbeat,
                                                   protocol::MessageType::job_ready, protocol::MessageType::update_ready,
                                                   protocol::MessageType::round_update};
  for (const auto& [h, body] : fake.received()) {
    EXPECT_TRUE(allowed.count(h.type)) << protocol::type_name(h.type);
    if (h.type != protocol::MessageType::round_update) continue;
    const auto u = protocol::decode_body<protocol::RoundUpdate>(body).value();
    EXPECT_EQ(protocol::encode(protocol::Header{}, u).body, body) << "bytes beyond the decoded update";
    EXPECT_TRUE(u.model.tensors.empty() && u.discriminator_grads.tensors.empty());
    for (const auto& m : u.metrics) {
      EXPECT_EQ(m.subject.rfind("s-", 0), 0u) << m.subject;
      for (const auto& s : subjects) EXPECT_NE(m.subject, s.subject);
    }
  }
  EXPECT_TRUE(agent.running());
}

// require_secure_aggregation: a plain training job is refused by rule; a secure one is taken,
// and its round trained without the key exchange never leaves (held back, not sent in the clear).
TEST_F(Sovereignty, ASiteRequiringSecureAggregationNeverSendsAnUpdateInTheClear) {
  zmq::context_t context;
  testing::KeyedFakeCoordinator coordinator(context, kit_, teacher());
  Process agent = amsterdam_agent(coordinator.fake.endpoint(), "  require_secure_aggregation: true\n");
  // Heartbeats every second, gone after 100 missed: this fake sends none, and the test is short.
  ASSERT_TRUE(coordinator.greet(protocol::Welcome{1000, 100}));
  coordinator.send(protocol::MessageType::job_offer, "kd-plain", 0, coordinator.offer("kd-plain", protocol::JobType::kd, 4, 2), true);
  auto refused = coordinator.next(protocol::MessageType::job_failed);
  ASSERT_TRUE(refused);
  const auto failed = protocol::decode_body<protocol::JobFailed>(refused->second).value();
  EXPECT_EQ(failed.code, protocol::FailureCode::policy);
  EXPECT_EQ(failed.rule, "require_secure_aggregation");
  coordinator.send(protocol::MessageType::job_offer, "kd-secure", 0, coordinator.offer("kd-secure", protocol::JobType::kd, 4, 2, true), true);
  ASSERT_TRUE(coordinator.next(protocol::MessageType::job_ready, 60s)) << testing::read_text(dir_ / "amsterdam.log");
  protocol::RoundTask task;
  task.learning_rate = 1e-4;
  task.model = coordinator.teacher_model.weights;
  coordinator.send(protocol::MessageType::round_task, "kd-secure", 1, protocol::encode(protocol::Header{}, task).body, true);
  ASSERT_TRUE(testing::wait_for_text(dir_ / "amsterdam.log", "round 1's update held back", 120s)) << testing::read_text(dir_ / "amsterdam.log");
  EXPECT_FALSE(coordinator.next(protocol::MessageType::update_ready, 2s));
  for (const auto& [h, body] : coordinator.fake.received()) EXPECT_NE(h.type, protocol::MessageType::round_update);
  EXPECT_TRUE(agent.running());
}

// policy approval: manual holds an offer until the site's administrator approves it, showing
// first what the job is and what it will send; the coordinator sees the site waiting.
TEST_F(Sovereignty, AManualSiteRunsAJobOnlyAfterItsAdministratorApproves) {
  auto coordinator = kit_coordinator();
  ASSERT_TRUE(testing::wait_for_text(endpoint_file(), "\ntcp://", 30s));
  const auto [endpoint, admin] = endpoints();
  auto utrecht = start_agent("utrecht", endpoint);
  const auto config = amsterdam_config(endpoint, "  approval: manual\n");
  Process amsterdam({testing::bin("fedda-agent").string(), "run", "--config", config.string()}, dir_ / "amsterdam.log");
  const auto fedda_admin = [&, admin = admin](std::vector<std::string> args) { return operator_command(admin, args); };
  ASSERT_EQ(fedda_admin({"submit", kd_job("kd-approved", {"utrecht", "amsterdam"}, 3, 4, 2).string()}).rc, 0);
  ASSERT_TRUE(testing::wait_for_text(coordinator_log(), "site amsterdam: job kd-approved waits at the site", 60s))
      << testing::read_text(coordinator_log());
  const auto sites = fedda_admin({"sites", "--json"});
  EXPECT_NE(sites.text.find("awaiting approval"), std::string::npos) << sites.text;
  // What a real agent says of its machine (first-month issue: `sites` shows each site's resources).
  const auto listed = json::parse(sites.text.substr(sites.text.find('[')), nullptr, false);
  ASSERT_TRUE(listed.is_array()) << sites.text;
  for (const auto& site : listed) {
    if (site["site"] != "amsterdam") continue;
    EXPECT_GE(site["resources"]["cores"].get<int>(), 1) << site.dump();
    EXPECT_GT(site["resources"]["memory_bytes"].get<std::int64_t>(), std::int64_t{1} << 28) << site.dump();
    EXPECT_GT(site["resources"]["cache_free_bytes"].get<std::int64_t>(), 0) << site.dump();
    EXPECT_TRUE(site["resources"]["precision"] == "float32" || site["resources"]["precision"] == "bfloat16") << site.dump();
  }
  const auto table = fedda_admin({"sites"});
  EXPECT_NE(table.text.find("RESOURCES"), std::string::npos) << table.text;
  EXPECT_NE(table.text.find(" cores, "), std::string::npos) << table.text;
  // Regression (first-month issue): `jobs` said "waiting for sites (1 of min_sites 2 ready)" and
  // hid why; it names the site and what it waits for.
  const auto jobs = fedda_admin({"jobs"});
  EXPECT_NE(jobs.text.find("amsterdam awaiting approval at the site"), std::string::npos) << jobs.text;
  const auto pending = run({testing::bin("fedda-agent").string(), "pending", "--config", config.string(), "--json"});
  ASSERT_EQ(pending.rc, 0) << pending.text;
  const auto offers = json::parse(pending.text.substr(pending.text.find('[')));
  ASSERT_EQ(offers.size(), 1u);
  EXPECT_EQ(offers[0]["job"], "kd-approved");
  EXPECT_GT(offers[0]["offer"]["bytes_per_round"].get<std::int64_t>(), 1000);
  EXPECT_FALSE(offers[0]["offer"]["sends_per_round"].empty());
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(testing::read_text(coordinator_log()).find("job kd-approved: round 1/3"), std::string::npos)
      << "a round started before the site approved";
  const auto approved = run({testing::bin("fedda-agent").string(), "approve", "kd-approved", "--config", config.string()});
  ASSERT_EQ(approved.rc, 0) << approved.text;
  // Regression (first-month issue): the coordinator restarts after the approval and offers the
  // unchanged job again; the site honours its approval instead of asking again.
  ASSERT_TRUE(testing::wait_for_text(coordinator_log(), "job kd-approved: round 1/3", 120s)) << testing::read_text(coordinator_log());
  coordinator->signal(SIGTERM);
  ASSERT_EQ(coordinator->wait(120s), 0) << testing::read_text(coordinator_log());
  coordinator = std::make_unique<Process>(
      std::vector<std::string>{testing::bin("fedda-coordinator").string(), "serve", "--kit", (kit_ / "coordinator").string(),
                               "--bind", endpoint, "--admin-bind", admin, "--state", (dir_ / "state").string(),
                               "--heartbeat-ms", "200"},
      dir_ / "coordinator-2.log");
  ASSERT_TRUE(testing::wait_for_text(dir_ / "coordinator-2.log", "job kd-approved finished", 180s))
      << testing::read_text(dir_ / "coordinator-2.log");
  const auto agent_log = testing::read_text(dir_ / "amsterdam.log");
  const auto asked = agent_log.find("waits for this site's administrator");
  EXPECT_EQ(agent_log.find("waits for this site's administrator", asked + 1), std::string::npos)
      << "the site asked again for the job it had approved\n" << agent_log;

  // The results name amsterdam's subjects by the pseudonyms `fedda-agent subjects` lists.
  const auto map_out = run({testing::bin("fedda-agent").string(), "subjects", "--config", config.string(), "--json"});
  ASSERT_EQ(map_out.rc, 0) << map_out.text;
  const auto map = json::parse(map_out.text.substr(map_out.text.find('{')));
  const auto rows = protocol::parse_results_csv(testing::read_text(dir_ / "state" / "jobs" / "kd-approved" / "results.csv")).value();
  ASSERT_FALSE(rows.empty());
  for (const auto& r : rows) EXPECT_TRUE(map.contains(r.subject)) << r.subject;
  const auto status = run({testing::bin("fedda-agent").string(), "status", "--config", config.string()});
  EXPECT_EQ(status.rc, 0);
  EXPECT_NE(status.text.find("kd-approved"), std::string::npos) << status.text;
  EXPECT_NE(status.text.find("joined"), std::string::npos) << status.text;
}

// `fedda-admin logs SITE` (first-month issue: site logs on request, the site in charge): the
// coordinator relays the request to the site's running agent, which answers what its policy
// share_logs lets leave, redacted; a site with the default (none) sends nothing, and its refusal
// reaches the operator; the site's audit log records what it sent.
TEST_F(Sovereignty, AnOperatorGetsASitesLogLinesOnlyAsTheSitesPolicyAllows) {
  auto coordinator = kit_coordinator();
  ASSERT_TRUE(testing::wait_for_text(endpoint_file(), "\ntcp://", 30s));
  const auto [endpoint, admin] = endpoints();
  auto utrecht = start_agent("utrecht", endpoint);  // share_logs: none, the default
  auto amsterdam = amsterdam_agent(endpoint, "  job_types: [teacher, evaluate]\n  share_logs: job\n");
  const auto fedda_admin = [&, admin = admin](std::vector<std::string> args) { return operator_command(admin, args); };
  ASSERT_TRUE(testing::wait_for_text(coordinator_log(), "site amsterdam joined", 60s)) << testing::read_text(coordinator_log());
  // A kd job amsterdam's policy refuses: its agent logs why, naming the job.
  ASSERT_EQ(fedda_admin({"submit", kd_job("kd-refused", {"utrecht", "amsterdam"}, 1, 2, 1).string()}).rc, 0);
  ASSERT_TRUE(testing::wait_for_text(coordinator_log(), "site amsterdam: cannot run job kd-refused", 60s))
      << testing::read_text(coordinator_log());

  const auto of_job = fedda_admin({"--json", "logs", "amsterdam", "--job", "kd-refused"});
  ASSERT_EQ(of_job.rc, 0) << of_job.text;
  const auto answer = json::parse(of_job.text.substr(of_job.text.find('{')), nullptr, false);
  ASSERT_TRUE(answer.is_object()) << of_job.text;
  EXPECT_EQ(answer["policy"], "job");
  ASSERT_FALSE(answer["lines"].empty()) << of_job.text;
  bool error_line = false, info_line = false;
  for (const auto& line : answer["lines"]) {
    const auto l = line.get<std::string>();
    EXPECT_NE(l.find("kd-refused"), std::string::npos) << l;
    EXPECT_EQ(l.find(dir_.path().string()), std::string::npos) << "a local path left the site: " << l;
    EXPECT_EQ(l.find(data_dir().string()), std::string::npos) << "a local path left the site: " << l;
    error_line |= l.find("] [error] ") != std::string::npos;
    info_line |= l.find("] [info] ") != std::string::npos;
  }
  EXPECT_TRUE(error_line) << of_job.text;
  EXPECT_TRUE(info_line) << "share_logs: job gives the job's info lines too\n" << of_job.text;
  // Without --job: the warnings and errors only, at most --tail of them.
  const auto problems = fedda_admin({"--json", "logs", "amsterdam", "--tail", "2"});
  ASSERT_EQ(problems.rc, 0) << problems.text;
  const auto latest = json::parse(problems.text.substr(problems.text.find('{')), nullptr, false);
  ASSERT_TRUE(latest.is_object()) << problems.text;
  EXPECT_GE(latest["lines"].size(), 1u);
  EXPECT_LE(latest["lines"].size(), 2u);
  for (const auto& line : latest["lines"]) EXPECT_EQ(line.get<std::string>().find("] [info] "), std::string::npos) << line;
  // The table form names the site and its policy.
  const auto table = fedda_admin({"logs", "amsterdam", "--job", "kd-refused"});
  EXPECT_NE(table.text.find("site amsterdam (share_logs: job): "), std::string::npos) << table.text;

  // Exit codes tell a refusal (4) from what does not exist (3).
  const auto none = fedda_admin({"logs", "utrecht"});
  EXPECT_EQ(none.rc, 4);
  EXPECT_NE(none.text.find("site utrecht: this site shares no log lines (its policy share_logs: none)"), std::string::npos)
      << none.text;
  const auto stranger = fedda_admin({"logs", "nowhere"});
  EXPECT_EQ(stranger.rc, 3);
  EXPECT_NE(stranger.text.find("no site 'nowhere' in this consortium"), std::string::npos) << stranger.text;
  const auto tail = fedda_admin({"logs", "amsterdam", "--tail", "0"});
  EXPECT_NE(tail.rc, 0);

  // Each site's audit log holds what it sent; the coordinator's, who asked.
  EXPECT_NE(testing::read_text(dir_ / "cache-amsterdam" / "audit.jsonl").find("logs_reply"), std::string::npos);
  EXPECT_NE(testing::read_text(dir_ / "cache-utrecht" / "audit.jsonl").find("logs_reply"), std::string::npos);
  EXPECT_NE(testing::read_text(dir_ / "state" / "audit.jsonl").find("\"command\":\"logs\""), std::string::npos)
      << testing::read_text(dir_ / "state" / "audit.jsonl");
  EXPECT_TRUE(coordinator->running());
  EXPECT_TRUE(amsterdam.running());
}

// Fault 4: a kit vouches for itself; the root fingerprint pinned in site.yaml tells a forged one.
TEST_F(Sovereignty, AForgedKitIsRefusedByThePinnedRootFingerprint) {
  ASSERT_TRUE(kit::provision({"wmh", "tcp://127.0.0.1:5570", {"amsterdam"}, dir_ / "forged", {}, {}}));
  const auto real = fingerprint_;
  kit_ = dir_ / "forged";  // the agent gets the forged kit, but the consortium's root pinned
  const auto config = amsterdam_config("tcp://127.0.0.1:5570", "  approval: auto\n", real);
  const auto started = run({testing::bin("fedda-agent").string(), "run", "--config", config.string()});
  EXPECT_EQ(started.rc, 1);
  EXPECT_NE(started.text.find("not by the consortium root pinned in root_fingerprint"), std::string::npos) << started.text;
  const auto checked = run({testing::bin("fedda-agent").string(), "check", "--config", config.string()});
  EXPECT_NE(checked.rc, 0);
  EXPECT_NE(checked.text.find("a forged or wrong kit"), std::string::npos) << checked.text;
  // Without a pin at all the agent refuses too (it used to warn and trust the kit's own root).
  auto text = testing::read_text(config);
  text.erase(text.find("root_fingerprint:"), text.find('\n', text.find("root_fingerprint:")) - text.find("root_fingerprint:") + 1);
  std::ofstream(dir_ / "unpinned.yaml") << text;
  const auto unpinned = run({testing::bin("fedda-agent").string(), "run", "--config", (dir_ / "unpinned.yaml").string()});
  EXPECT_EQ(unpinned.rc, 1);
  EXPECT_NE(unpinned.text.find("root_fingerprint is not set in the site config"), std::string::npos) << unpinned.text;
  const auto verified = run({testing::bin("fedda-admin").string(), "verify-kit", (dir_ / "forged" / "sites" / "amsterdam").string()});
  EXPECT_EQ(verified.rc, 0);  // it verifies against its own root ...
  EXPECT_EQ(verified.text.find(real), std::string::npos);  // ... whose fingerprint is not the consortium's
  EXPECT_NE(verified.text.find("root fingerprint: sha256:"), std::string::npos) << verified.text;
}

}  // namespace
}  // namespace fedda
