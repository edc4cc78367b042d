// Regression tests for the faults an outside review found in the federation, each against the
// real processes: a coordinator that is open without a kit, a hello that locks a site out, sites
// that poison the average or forge result rows, an upload slot lost to a quick restart, job state
// after a crash at any step of a save, and failure text that leaves the site unredacted.
#include <gtest/gtest.h>

#include <limits>
#include <optional>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "fedda/common/crypto.h"
#include "fedda/common/files.h"
#include "fedda/common/kit.h"
#include "fedda/common/protocol.h"
#include "fedda/models/quality.h"
#include "fedda/models/weights.h"
#include "support/fake_sites.h"
#include "support/peer_fuzzer.h"
#include "support/fake_coordinator.h"
#include "support/keyed_fake_coordinator.h"
#include "support/federation_fixture.h"

namespace fedda {
namespace {

using nlohmann::json;
using testing::Behaviour;

struct Output {
  int rc = -1;
  std::string text;
};

class Hardening : public Federation {
 protected:
  // A coordinator without a kit (`--insecure`) running `job` in batch form over the state in dir_.
  std::unique_ptr<Process> insecure_coordinator(const fs::path& job, const std::vector<std::string>& extra = {},
                                                const std::string& env = {}) {
    std::vector<std::string> args;
    if (!env.empty()) args = {"/usr/bin/env", env};
    for (const auto& a : {testing::bin("fedda-coordinator").string(), std::string("serve"), std::string("--insecure"),
                          std::string("--job"), job.string(), std::string("--bind"), std::string("tcp://127.0.0.1:0"),
                          std::string("--state"), dir_.path().string(), std::string("--endpoint-file"),
                          endpoint_file().string(), std::string("--heartbeat-ms"), std::string("200")}) {
      args.push_back(a);
    }
    args.insert(args.end(), extra.begin(), extra.end());
    return std::make_unique<Process>(args, coordinator_log());
  }
  // A teacher job over fake sites site0..site{n-1} with a tiny model (no training anywhere).
  fs::path fake_job(const std::string& id, int sites, int rounds, int min_sites = 1, const std::string& extra = "") {
    const auto path = dir_ / (id + ".yaml");
    std::string list;
    for (int i = 0; i < sites; ++i) list += (i ? ", " : "") + ("site" + std::to_string(i));
    std::ofstream(path) << "id: " << id << "\ntype: teacher\nsource: site0\nsites: [" << list << "]\nrounds: " << rounds
                        << "\nlocal_steps: 1\nmin_sites: " << min_sites << "\nevaluate: false\nround_deadline_s: 60\n"
                        << "model: {width: 4, depth: 2, grid_size: 32, grid_spacing: 6}\n" << extra;
    return path;
  }
  // A coordinator serving without a job; its endpoints.
  std::unique_ptr<Process> serve(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {testing::bin("fedda-coordinator").string(), "serve", "--insecure", "--bind",
                                     "tcp://127.0.0.1:0", "--state", dir_.path().string(), "--endpoint-file",
                                     endpoint_file().string(), "--heartbeat-ms", "200"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto p = std::make_unique<Process>(args, coordinator_log());
    endpoint_ = wait_for_endpoint();
    const auto text = testing::read_text(endpoint_file());
    const auto first = text.find('\n');
    admin_ = text.substr(first + 1, text.find('\n', first + 1) - first - 1);
    return p;
  }
  // Submits `job` through fedda-admin once `sites` fake sites have joined, and waits until it ended.
  std::string submit_when_joined(const fs::path& job, const std::string& id, int sites) {
    EXPECT_TRUE(testing::wait_for_text(coordinator_log(), "site site" + std::to_string(sites - 1) + " joined", 30s));
    for (int i = 0; i < sites; ++i) EXPECT_TRUE(testing::wait_for_text(coordinator_log(), "site site" + std::to_string(i) + " joined", 30s));
    Process submit({testing::bin("fedda-admin").string(), "--coordinator", admin_, "submit", job.string()}, dir_ / "submit.log");
    EXPECT_EQ(submit.wait(60s), 0) << testing::read_text(dir_ / "submit.log");
    const auto until = std::chrono::steady_clock::now() + 120s;
    while (std::chrono::steady_clock::now() < until) {
      const auto state = json::parse(testing::read_text(dir_ / "jobs" / id / "state.json"), nullptr, false);
      if (state.is_object() && state["state"] != "queued" && state["state"] != "running") return state["state"];
      std::this_thread::sleep_for(200ms);
    }
    return "(timed out)";
  }
  std::string endpoint_, admin_;
  std::vector<json> rounds_of(const std::string& job) {
    std::vector<json> out;
    std::ifstream in(dir_ / "jobs" / job / "rounds.jsonl");
    for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
    return out;
  }
};

// Fault 1, its other half: an agent whose coordinator is gone waits between reconnections; a
// SIGTERM landing in that wait ended it with std::terminate (zmq::poll threw EINTR) instead of a
// clean stop. A 5 s back-off makes the signal land there every time.
TEST_F(Hardening, AnAgentBackingOffFromAnAbsentCoordinatorStopsCleanlyOnSigterm) {
  site_config_extra_ = "reconnect_min_ms: 5000\nreconnect_max_ms: 10000\n";
  auto agent = start_agent("utrecht", "tcp://127.0.0.1:1");  // nothing listens on port 1
  ASSERT_TRUE(testing::wait_for_text(dir_ / "utrecht.log", "reconnecting in 5000 ms", 20s)) << testing::read_text(dir_ / "utrecht.log");
  agent->signal(SIGTERM);
  EXPECT_EQ(agent->wait(15s), 0) << testing::read_text(dir_ / "utrecht.log");
  EXPECT_NE(testing::read_text(dir_ / "utrecht.log").find("site utrecht: stopped"), std::string::npos);
}

// Fault 2: without a kit the coordinator was open to any peer; now it refuses to start unless
// told --insecure, and then only on loopback, saying so.
TEST_F(Hardening, WithoutAKitTheCoordinatorRefusesToStartUnlessInsecure) {
  const auto job = fake_job("open", 1, 1);
  Process refused({testing::bin("fedda-coordinator").string(), "serve", "--job", job.string(), "--bind",
                   "tcp://127.0.0.1:0", "--state", dir_.path().string()},
                  dir_ / "refused.log");
  EXPECT_NE(refused.wait(30s), 0);
  EXPECT_NE(testing::read_text(dir_ / "refused.log").find("refusing to run open to any peer"), std::string::npos)
      << testing::read_text(dir_ / "refused.log");
  Process wide({testing::bin("fedda-coordinator").string(), "serve", "--insecure", "--job", job.string(), "--bind",
                "tcp://0.0.0.0:0", "--state", dir_.path().string()},
               dir_ / "wide.log");
  EXPECT_NE(wide.wait(30s), 0);
  EXPECT_NE(testing::read_text(dir_ / "wide.log").find("loopback addresses only"), std::string::npos);

  auto coordinator = insecure_coordinator(job);
  const auto endpoint = wait_for_endpoint();
  ASSERT_TRUE(testing::wait_for_text(coordinator_log(), "INSECURE", 10s));
  const auto text = testing::read_text(endpoint_file());
  const auto admin_endpoint = text.substr(text.find('\n') + 1, text.find('\n', text.find('\n') + 1) - text.find('\n') - 1);
  Process admin({testing::bin("fedda-admin").string(), "--coordinator", admin_endpoint, "jobs"}, dir_ / "admin.log");
  EXPECT_EQ(admin.wait(30s), 0) << testing::read_text(dir_ / "admin.log");
  EXPECT_NE(testing::read_text(dir_ / "admin.log").find("without a consortium kit (--insecure)"), std::string::npos)
      << testing::read_text(dir_ / "admin.log");
  testing::FakeSites fakes(endpoint, 1, "site", 200ms);
  EXPECT_EQ(coordinator->wait(60s), 0) << testing::read_text(coordinator_log());
}

// Fault 2: a hello with sequence 2^64-1 claiming a site's id locked the real site out until a
// restart (sequence numbers came from the wall clock and were kept across sessions).
TEST_F(Hardening, AHelloWithTheLargestSequenceDoesNotLockTheSiteOut) {
  auto coordinator = insecure_coordinator(kd_job("kd-locked", {"utrecht", "amsterdam"}, 2, 4, 2));
  const auto endpoint = wait_for_endpoint();
  zmq::context_t context;
  zmq::socket_t intruder(context, zmq::socket_type::dealer);
  intruder.set(zmq::sockopt::linger, 0);
  intruder.connect(endpoint);
  protocol::Header h;
  h.type = protocol::MessageType::hello;
  h.sender = "amsterdam";
  h.sequence = std::numeric_limits<std::uint64_t>::max();
  const auto hello = protocol::encode(h, protocol::Hello{"amsterdam", "intruder", "cpu", 0});
  intruder.send(zmq::buffer(hello.header), zmq::send_flags::sndmore);
  intruder.send(zmq::buffer(hello.body), zmq::send_flags::none);
  ASSERT_TRUE(testing::wait_for_text(coordinator_log(), "site amsterdam joined (agent intruder", 10s));
  auto utrecht = start_agent("utrecht", endpoint);
  auto amsterdam = start_agent("amsterdam", endpoint);
  ASSERT_EQ(coordinator->wait(180s), 0) << testing::read_text(coordinator_log());
  // The real agent's hello (its sequence starting at 1) began a new session, and it took part.
  const auto rounds = rounds_of("kd-locked");
  ASSERT_EQ(rounds.size(), 2u);
  for (const auto& r : rounds) EXPECT_TRUE(has_site(r, "amsterdam")) << r.dump();
}

// Fault 3: one site could poison the global model: the averaging weight was the count it
// claimed in each update, and NaN or Inf weights were averaged in. Here the honest sites return
// the weights they got, so the global model must not move at all.
TEST_F(Hardening, HostileSitesDoNotMoveTheGlobalModelAndAreNamed) {
  const auto job = fake_job("poisoned", 5, 2, 2, "max_update_norm: 10\n");
  auto coordinator = serve();
  const std::map<int, Behaviour> hostile = {{2, Behaviour::nan_weights}, {3, Behaviour::forged_count}, {4, Behaviour::huge_norm}};
  {
    testing::FakeSites fakes(endpoint_, 5, "site", 200ms, [&](int i) {
      return hostile.count(i) ? hostile.at(i) : Behaviour::honest;
    });
    ASSERT_EQ(submit_when_joined(job, "poisoned", 5), "finished") << testing::read_text(coordinator_log());
  }
  const auto rounds = rounds_of("poisoned");
  ASSERT_EQ(rounds.size(), 2u);
  for (const auto& r : rounds) {
    std::map<std::string, std::string> refused;
    for (const auto& x : r["refused"]) refused[x["site"]] = x["reason"];
    EXPECT_NE(refused["site2"].find("NaN"), std::string::npos) << r.dump();
    EXPECT_NE(refused["site3"].find("sample count 10000 differs from the 100 it declared"), std::string::npos) << r.dump();
    EXPECT_NE(refused["site4"].find("exceeds max_update_norm 10"), std::string::npos) << r.dump();
    EXPECT_EQ(r["sites"].size(), 2u) << r.dump();
  }
  const auto stored = models::read_model_weights(dir_ / "jobs" / "poisoned" / "model.pt");
  ASSERT_TRUE(stored) << stored.error().message;
  const auto start = models::new_model_weights(stored->spec, 1).value();
  EXPECT_LT(l2_distance(stored->weights, start), 1e-6);
}

// A steps_by_share job shares one centralized epoch of steps out by sample count. Averaged by
// samples, the sites' moves counted each site's share twice and advanced the model by the mean of
// their steps, not their sum (the paper-cpu grid's federated U-bound fell under its L-bound on a
// pair whose target held a fifth of the samples). Sites whose every step moves each parameter by
// kSteadyStep: a round of 9 steps shared by three sites of 100 samples (3 each), one of which
// says it took 1, moves the model by the two counted sites' 6 steps; the same job without
// steps_by_share (3 steps each, FedAvg) by the mean of the three sites' moves, unchanged.
TEST_F(Hardening, AStepsByShareRoundMovesTheModelAsFarAsItsSitesStepsTogether) {
  const auto by_share = fake_job("epoch", 3, 1, 2, "");
  auto text = testing::read_text(by_share);
  text.replace(text.find("local_steps: 1"), 14, "local_steps: 9\nsteps_by_share: true");
  std::ofstream(by_share) << text;
  const auto plain = fake_job("fedavg", 3, 1, 2, "");
  text = testing::read_text(plain);
  text.replace(text.find("local_steps: 1"), 14, "local_steps: 3");
  std::ofstream(plain) << text;
  auto coordinator = serve();
  {
    testing::FakeSites fakes(endpoint_, 3, "site", 200ms, [](int i) { return i < 2 ? Behaviour::steady_steps : Behaviour::honest; });
    ASSERT_EQ(submit_when_joined(by_share, "epoch", 3), "finished") << testing::read_text(coordinator_log());
    ASSERT_EQ(submit_when_joined(plain, "fedavg", 3), "finished") << testing::read_text(coordinator_log());
  }
  // Each parameter's largest distance from the fresh model's moved by `by` (buffers: from unmoved).
  const auto off_by = [](const std::string& job, const fs::path& dir, float by) {
    const auto stored = models::read_model_weights(dir / "jobs" / job / "model.pt");
    EXPECT_TRUE(stored) << stored.error().message;
    if (!stored) return 1e9;
    const auto start = models::new_model_weights(stored->spec, 1).value();
    double worst = 0;
    for (const auto& t : stored->weights.tensors) {
      const auto* from = start.find(t.name);
      if (!from || t.dtype != DType::f32) continue;
      const float expected = protocol::is_parameter(t.name) ? by : 0.0f;
      const auto now = to_f32(t), was = to_f32(*from);
      for (std::size_t i = 0; i < now.size(); ++i) worst = std::max(worst, std::abs(double(now[i]) - was[i] - expected));
    }
    return worst;
  };
  EXPECT_LT(off_by("epoch", dir_.path(), 6 * testing::kSteadyStep), 1e-5);
  EXPECT_LT(off_by("fedavg", dir_.path(), 2 * testing::kSteadyStep), 1e-5);
  const auto epoch = rounds_of("epoch");
  ASSERT_EQ(epoch.size(), 1u);
  EXPECT_DOUBLE_EQ(epoch[0]["move_scale"].get<double>(), 2.0) << epoch[0].dump();
  ASSERT_EQ(epoch[0]["refused"].size(), 1u) << epoch[0].dump();
  EXPECT_EQ(epoch[0]["refused"][0]["reason"], "1 steps taken, 3 asked") << epoch[0].dump();
  const auto fedavg = rounds_of("fedavg");
  ASSERT_EQ(fedavg.size(), 1u);
  EXPECT_DOUBLE_EQ(fedavg[0]["move_scale"].get<double>(), 1.0);
  EXPECT_EQ(fedavg[0]["sites"].size(), 3u) << fedavg[0].dump();
}

// An outside review's faults 1, 2, 4 and 5 of the hostile-peer issue, against one coordinator:
// an update with a forged tensor shape ended it (std::bad_alloc: the shape was allocated before
// its bytes were checked), one with a precision string that is not UTF-8 ended it while it saved
// the round, a site that is not a site of the job could record a failure under it (and its
// reason, cut inside a character, broke every later JSON answer), a hello whose device is not
// UTF-8 broke `sites`, and a site declaring 10000 samples took 98% of the average. Each is
// refused and named; the honest sites finish the job and the operator's commands still work.
TEST_F(Hardening, ForgedShapesStringsAndCountsDoNotEndTheCoordinatorOrTakeTheAverage) {
  const auto job = fake_job("hostile", 5, 2, 2, "max_sample_share: 0.5\n");
  auto coordinator = serve();
  // A job that runs, waiting for sites that never come, for a stranger to write under.
  const auto waiting = dir_ / "waiting.yaml";
  std::ofstream(waiting) << "id: waiting\ntype: teacher\nsource: ghost0\nsites: [ghost0, ghost1]\nrounds: 1\nlocal_steps: 1\n"
                         << "min_sites: 2\nevaluate: false\nmodel: {width: 4, depth: 2, grid_size: 32, grid_spacing: 6}\n";
  Process submit_waiting({testing::bin("fedda-admin").string(), "--coordinator", admin_, "submit", waiting.string()},
                         dir_ / "submit-waiting.log");
  ASSERT_EQ(submit_waiting.wait(60s), 0) << testing::read_text(dir_ / "submit-waiting.log");
  const std::map<int, Behaviour> hostile = {
      {2, Behaviour::forged_shape}, {3, Behaviour::bad_precision}, {4, Behaviour::inflated_count}};
  {
    testing::FakeSites strangers(endpoint_, 2, "stranger", 200ms,
                                 [](int i) { return i == 0 ? Behaviour::bad_device : Behaviour::foreign_failure; });
    testing::FakeSites fakes(endpoint_, 5, "site", 200ms, [&](int i) { return hostile.count(i) ? hostile.at(i) : Behaviour::honest; });
    ASSERT_EQ(submit_when_joined(job, "hostile", 5), "finished") << testing::read_text(coordinator_log());
    // While the strangers still talk: every operator command answers.
    Process sites({testing::bin("fedda-admin").string(), "--coordinator", admin_, "--json", "sites"}, dir_ / "sites.log");
    ASSERT_EQ(sites.wait(60s), 0) << testing::read_text(dir_ / "sites.log");
    const auto text = testing::read_text(dir_ / "sites.log");  // the --insecure warning, then the document
    const auto listed = json::parse(text.substr(text.find("\n[") + 1), nullptr, false);
    ASSERT_TRUE(listed.is_array()) << testing::read_text(dir_ / "sites.log");
    for (const auto& site : listed) {
      EXPECT_NE(site["site"], "stranger0") << "a hello that is not UTF-8 registered a site";
      if (site["site"] == "stranger1") {
        EXPECT_EQ(site.dump().find("waiting"), std::string::npos) << site.dump();
      }
    }
    Process status({testing::bin("fedda-admin").string(), "--coordinator", admin_, "status", "job\xff"}, dir_ / "status.log");
    EXPECT_NE(status.wait(60s), 0);
    EXPECT_NE(testing::read_text(dir_ / "status.log").find("not valid UTF-8"), std::string::npos) << testing::read_text(dir_ / "status.log");
    EXPECT_TRUE(testing::wait_for_text(coordinator_log(), "dropped job_failed for job waiting", 10s));
  }
  const auto rounds = rounds_of("hostile");
  ASSERT_EQ(rounds.size(), 2u);
  for (const auto& r : rounds) {
    std::map<std::string, std::string> refused;
    for (const auto& x : r["refused"]) refused[x["site"]] = x["reason"];
    EXPECT_NE(refused["site2"].find("has shape [1048576,1048576]"), std::string::npos) << r.dump();
    EXPECT_NE(refused["site4"].find("over max_sample_share 0.50"), std::string::npos) << r.dump();
    EXPECT_NE(r["missing"].dump().find("site3 (malformed)"), std::string::npos) << r.dump();
    EXPECT_EQ(r["sites"].size(), 2u) << r.dump();
  }
  const auto log = testing::read_text(coordinator_log());
  EXPECT_NE(log.find("not valid UTF-8"), std::string::npos) << log;
  EXPECT_NE(log.find("site stranger1: dropped job_failed for job waiting, which it is not a site of"), std::string::npos) << log;
  EXPECT_EQ(log.find("\n[coordinator] [warning] site utrecht: revoked by alice"), std::string::npos) << "a forged log line";
  EXPECT_EQ(log.find('\x1b'), std::string::npos) << "an escape sequence from the wire reached the log";
  EXPECT_TRUE(coordinator->running()) << log;
}

// The coordinator fuzzer's second finding, as a real-process test: two sites each declared
// INT64_MAX samples in job_ready; at half the round's weight each they stayed within
// max_sample_share 0.9, and the round's sample sum overflowed (undefined behaviour). Such a
// declaration is refused: the site is not ready, the rounds neither wait for it nor count it in,
// they name it in `missing`, and the honest sites finish the job with their own weights.
TEST_F(Hardening, SitesDeclaringInt64MaxSamplesAreNotReadyAndDoNotOverflowTheRound) {
  const auto job = fake_job("overflow", 4, 2, 2, "max_sample_share: 0.9\n");
  auto coordinator = serve();
  {
    testing::FakeSites fakes(endpoint_, 4, "site", 200ms,
                             [](int i) { return i >= 2 ? Behaviour::overflowing_count : Behaviour::honest; });
    ASSERT_EQ(submit_when_joined(job, "overflow", 4), "finished") << testing::read_text(coordinator_log());
  }
  const auto rounds = rounds_of("overflow");
  ASSERT_EQ(rounds.size(), 2u);
  for (const auto& r : rounds) {
    std::map<std::string, std::int64_t> samples;
    for (const auto& site : r["sites"]) samples[site["site"]] = site["samples"];
    EXPECT_EQ(samples, (std::map<std::string, std::int64_t>{{"site0", 100}, {"site1", 100}})) << r.dump();
    EXPECT_NE(r["missing"].dump().find("site2 (cannot run it (malformed))"), std::string::npos) << r.dump();
    EXPECT_NE(r["missing"].dump().find("site3 (cannot run it (malformed))"), std::string::npos) << r.dump();
  }
  const auto log = testing::read_text(coordinator_log());
  EXPECT_NE(log.find("site site2: job_ready for overflow declaring 9223372036854775807 samples dropped"), std::string::npos)
      << log;
  EXPECT_TRUE(coordinator->running()) << log;
}

// Found running a consortium by hand: a kd job whose evaluation sites included one that refused
// the job by policy waited "for the evaluation sites" until the start timeout (900 s by default)
// before it evaluated. A site that refused or cannot run the job is not waited for; the
// evaluation names it missing, and the job finishes with the others' scores.
TEST_F(Hardening, AnEvaluationSiteThatRefusedTheJobIsNotWaitedFor) {
  const auto job = fake_job("refused-eval", 1, 1, 1, "");
  {  // evaluated at site1 (honest) and site2 (its policy refuses the job)
    std::string text = testing::read_text(job);
    text.replace(text.find("evaluate: false"), 15, "evaluate: true\nevaluation_sites: [site1, site2]");
    std::ofstream(job) << text;
  }
  auto coordinator = serve();
  {
    testing::FakeSites fakes(endpoint_, 3, "site", 200ms,
                             [](int i) { return i == 2 ? Behaviour::refuses : Behaviour::honest; });
    const auto started = std::chrono::steady_clock::now();
    ASSERT_EQ(submit_when_joined(job, "refused-eval", 3), "finished") << testing::read_text(coordinator_log());
    EXPECT_LT(std::chrono::steady_clock::now() - started, 60s);
  }
  const auto summary = json::parse(testing::read_text(dir_ / "jobs" / "refused-eval" / "summary.json"), nullptr, false);
  ASSERT_TRUE(summary.is_object()) << testing::read_text(coordinator_log());
  EXPECT_TRUE(summary["mean_dsc"].contains("site1")) << summary.dump();
  EXPECT_FALSE(summary["mean_dsc"].contains("site2")) << summary.dump();
  EXPECT_EQ(summary["evaluation_missing"], json::parse(R"x(["site2 (cannot run it (policy))"])x")) << summary.dump();
  EXPECT_NE(testing::read_text(coordinator_log()).find("job refused-eval: evaluating without site2 (cannot run it (policy))"),
            std::string::npos);
}

// The handler-level fuzzer (hostile-peer issue): while two honest sites train a job, six peers
// send mutated messages of every kind through the coordinator's real handlers (and operator
// requests on the admin endpoint). The coordinator must stay up, its memory bounded, the job
// must go on, and a job submitted afterwards must finish. FEDDA_PEER_FUZZ_SECONDS sets the
// fuzzing time (default 20; a long run: 600), and the figures are printed.
std::int64_t resident_mib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) / 1024;
  }
  return -1;
}

TEST_F(Hardening, ThePeerFuzzerNeverStopsTheCoordinatorAndTheHonestPathStillWorks) {
  const char* env = std::getenv("FEDDA_PEER_FUZZ_SECONDS");
  const double seconds = env ? std::atof(env) : 20.0;
  const auto job = dir_ / "open.yaml";
  std::ofstream(job) << "id: open\ntype: teacher\nsource: site0\nsites: [site0, site1, fuzz0, fuzz1]\nrounds: 100000\n"
                     << "local_steps: 1\nmin_sites: 2\nevaluate: false\nround_deadline_s: 2\nmax_sample_share: 0.9\n"
                     << "model: {width: 4, depth: 2, grid_size: 32, grid_spacing: 6}\n";
  auto coordinator = serve();
  std::int64_t before = 0;
  {
    testing::FakeSites honest(endpoint_, 2, "site", 200ms);
    ASSERT_TRUE(testing::wait_for_text(coordinator_log(), "site site1 joined", 30s));
    Process submit({testing::bin("fedda-admin").string(), "--coordinator", admin_, "submit", job.string()}, dir_ / "submit.log");
    ASSERT_EQ(submit.wait(60s), 0) << testing::read_text(dir_ / "submit.log");
    ASSERT_TRUE(testing::wait_for_text(coordinator_log(), "job open: round 1/", 30s));
    before = resident_mib(coordinator->pid());
    testing::PeerFuzzer fuzzer(endpoint_, admin_, 6, "open", 20261202);
    const auto f = fuzzer.run(std::chrono::duration<double>(seconds));
    ASSERT_TRUE(coordinator->running()) << testing::read_text(coordinator_log()).substr(0, 20000);
    const auto after = resident_mib(coordinator->pid());
    std::printf("peer fuzzer: %.0f s, %lld messages (%.0f/s, %.1f MiB), %lld forged updates on upload credit, "
                "%lld operator requests (%lld answered), %d rounds finished meanwhile; coordinator RSS %lld -> %lld MiB\n",
                seconds, static_cast<long long>(f.messages), f.messages / seconds, f.bytes / 1048576.0,
                static_cast<long long>(f.updates), static_cast<long long>(f.admin_requests), static_cast<long long>(f.replies),
                static_cast<int>(rounds_of("open").size()), static_cast<long long>(before), static_cast<long long>(after));
    EXPECT_LT(after, before + 512) << "the coordinator's memory grew under the fuzzer";
    // The service loop catches what a handler throws; each caught exception is still a finding.
    const auto log = testing::read_text(coordinator_log());
    std::size_t caught = 0;
    for (auto at = log.find("whose handling failed"); at != std::string::npos; at = log.find("whose handling failed", at + 1)) ++caught;
    EXPECT_EQ(caught, 0u) << log.substr(log.find("whose handling failed") - std::min<std::size_t>(log.find("whose handling failed"), 300), 1000);
    EXPECT_GT(f.updates, 0) << "the fuzzer never got upload credit: the round handlers were not reached";
    EXPECT_GE(rounds_of("open").size(), 2u) << "the honest sites' job did not go on";
    Process abort({testing::bin("fedda-admin").string(), "--coordinator", admin_, "abort", "open"}, dir_ / "abort.log");
    ASSERT_EQ(abort.wait(60s), 0) << testing::read_text(dir_ / "abort.log");
  }
  // The honest path afterwards: a fresh job over fresh honest sites finishes.
  ASSERT_TRUE(testing::wait_for_text(dir_ / "jobs" / "open" / "state.json", "aborted", 60s));
  testing::FakeSites later(endpoint_, 2, "late", 200ms);
  const auto after_job = dir_ / "after.yaml";
  std::ofstream(after_job) << "id: after\ntype: teacher\nsource: late0\nsites: [late0, late1]\nrounds: 2\nlocal_steps: 1\n"
                           << "min_sites: 2\nevaluate: false\nmodel: {width: 4, depth: 2, grid_size: 32, grid_spacing: 6}\n";
  ASSERT_TRUE(testing::wait_for_text(coordinator_log(), "site late1 joined", 30s));
  Process submit({testing::bin("fedda-admin").string(), "--coordinator", admin_, "submit", after_job.string()}, dir_ / "after.log");
  ASSERT_EQ(submit.wait(60s), 0) << testing::read_text(dir_ / "after.log");
  EXPECT_TRUE(testing::wait_for_text(dir_ / "jobs" / "after" / "state.json", "finished", 60s)) << testing::read_text(coordinator_log()).substr(0, 20000);
  EXPECT_TRUE(coordinator->running());
}

// Regression (first-month issue): a round that began without a site of the job (not connected,
// not ready) recorded `missing: []`. Every round names every training site that did not
// contribute, and why.
TEST_F(Hardening, ARoundNamesEverySiteOfTheJobThatSatItOut) {
  const auto job = fake_job("partial", 3, 2, 2);
  auto coordinator = serve();
  {
    testing::FakeSites fakes(endpoint_, 2, "site", 200ms);  // site2 never connects
    ASSERT_EQ(submit_when_joined(job, "partial", 2), "finished") << testing::read_text(coordinator_log());
  }
  const auto rounds = rounds_of("partial");
  ASSERT_EQ(rounds.size(), 2u);
  for (const auto& r : rounds) EXPECT_EQ(r["missing"], json::array({"site2 (offline)"})) << r.dump();
}

// Fault 7: a site could forge rows of results.csv (subjects from the wire went in unescaped, and
// any number of rows was taken); and (hostile-peer review) subjects were not held to the
// pseudonym form, so a formula or a comma reached results.csv, quoted.
TEST_F(Hardening, AHostileSiteCannotAddRowsToResults) {
  const auto teacher_file = dir_ / "tiny.pt";
  models::ModelSpec spec;
  spec.unet.width = 4;
  spec.unet.depth = 2;
  spec.grid.in_plane_size = {32, 32};
  spec.grid.in_plane_spacing = {6, 6};
  ASSERT_TRUE(models::write_model_weights(teacher_file, spec, models::new_model_weights(spec, 1).value()));
  const auto job = dir_ / "scores.yaml";
  std::ofstream(job) << "id: scores\ntype: evaluate\nteacher: " << teacher_file.string()
                     << "\nsites: [site0, site1]\nevaluation_sites: [site0, site1]\n";
  auto coordinator = serve();
  {
    testing::FakeSites fakes(endpoint_, 2, "site", 200ms, [](int i) { return i == 1 ? Behaviour::extra_rows : Behaviour::honest; });
    ASSERT_EQ(submit_when_joined(job, "scores", 2), "finished") << testing::read_text(coordinator_log());
  }
  const auto csv = testing::read_text(dir_ / "jobs" / "scores" / "results.csv");
  auto rows = protocol::parse_results_csv(csv);
  ASSERT_TRUE(rows) << rows.error().message << "\n" << csv;
  int from_hostile = 0;
  for (const auto& r : *rows) {
    EXPECT_NE(r.subject, "evil");
    EXPECT_NE(r.target, "x");
    from_hostile += r.target == "site1";
  }
  EXPECT_EQ(rows->size(), 2u) << csv;     // the honest site's two declared subjects
  EXPECT_EQ(from_hostile, 0) << csv;      // no row of the hostile site is a pseudonym ("s-" and 16 hex digits)
  EXPECT_NE(testing::read_text(coordinator_log()).find("50 of 50 rows"), std::string::npos);
}

// Fault 5: a site that restarted between update_ready and its upload kept its upload credit in
// the queue, and with every slot taken the round waited for its deadline.
TEST_F(Hardening, ASiteRestartingBeforeItsUploadDoesNotHoldTheUploadSlot) {
  const auto job = fake_job("slot", 3, 2, 2);
  auto coordinator = serve({"--max-uploads", "1"});
  const auto start = std::chrono::steady_clock::now();
  {
    testing::FakeSites fakes(endpoint_, 3, "site", 200ms,
                             [](int i) { return i == 0 ? Behaviour::reconnect_after_ready : Behaviour::honest; });
    ASSERT_EQ(submit_when_joined(job, "slot", 3), "finished") << testing::read_text(coordinator_log());
  }
  // The round deadline is 60 s: the round must close long before, when the others have uploaded.
  EXPECT_LT(std::chrono::steady_clock::now() - start, 30s);
  const auto rounds = rounds_of("slot");
  ASSERT_EQ(rounds.size(), 2u);
  EXPECT_EQ(rounds[0]["missing"], json::array({"site0 (reconnected)"})) << rounds[0].dump();
}

// Fault 6: job state could become unrecoverable after a power loss (renames without an fsync of
// the folder; the previous round's weights deleted right after state.json was replaced). Killed
// at each step of a round's save, the coordinator resumes: no round lost, none repeated.
TEST_F(Hardening, ACrashAtAnyStepOfASaveResumesWithoutLosingOrRepeatingARound) {
  for (const std::string point : {"weights", "rounds", "state", "removed"}) {
    const std::string id = "crash-" + point;
    const auto job = fake_job(id, 2, 4);
    fs::remove(endpoint_file());
    {
      auto crashing = insecure_coordinator(job, {}, "FEDDA_TEST_CRASH_AT=" + point + ":2");
      const auto endpoint = wait_for_endpoint();
      testing::FakeSites fakes(endpoint, 2, "site", 200ms);
      ASSERT_EQ(crashing->wait(60s), 86) << point << "\n" << testing::read_text(coordinator_log());
    }
    fs::remove(endpoint_file());
    auto resumed = insecure_coordinator(job);
    const auto endpoint = wait_for_endpoint();
    testing::FakeSites fakes(endpoint, 2, "site", 200ms);
    ASSERT_EQ(resumed->wait(60s), 0) << point << "\n" << testing::read_text(coordinator_log());
    std::vector<int> numbers;
    for (const auto& r : rounds_of(id)) numbers.push_back(r["round"].get<int>());
    EXPECT_EQ(numbers, (std::vector<int>{1, 2, 3, 4})) << point;
    const auto state = json::parse(testing::read_text(dir_ / "jobs" / id / "state.json"));
    EXPECT_EQ(state["state"], "finished") << point;
    // Only the last round's weights are left.
    int weights = 0;
    for (const auto& e : fs::directory_iterator(dir_ / "jobs" / id)) weights += e.path().extension() == ".weights";
    EXPECT_EQ(weights, 1) << point;
  }
}

// Fault 8: a failure's text (local paths, exception messages) left the site unchecked, and the
// audit log kept only its hash. Now the text is redacted and the full one stays in the audit log.
TEST_F(Hardening, AFailureTellsTheCoordinatorACodeAndKeepsTheFullTextAtTheSite) {
  auto coordinator = insecure_coordinator(kd_job("kd-nodata", {"utrecht", "amsterdam"}, 1, 4, 2), {"--start-timeout", "5"});
  const auto endpoint = wait_for_endpoint();
  const auto empty = dir_ / "private" / "patients" / "amsterdam";
  fs::create_directories(empty);
  auto utrecht = start_agent("utrecht", endpoint);
  // A site with no usable subject joins only when told to (fedda-agent run refuses otherwise).
  Process amsterdam({testing::bin("fedda-agent").string(), "run", "--config", site_config("amsterdam", endpoint, empty).string(),
                     "--allow-no-subjects"},
                    dir_ / "amsterdam.log");
  ASSERT_TRUE(testing::wait_for_text(coordinator_log(), "site amsterdam: cannot run job kd-nodata (no_data)", 120s))
      << testing::read_text(coordinator_log());
  const auto log = testing::read_text(coordinator_log());
  EXPECT_EQ(log.find(empty.string()), std::string::npos) << "a local path reached the coordinator:\n" << log;
  EXPECT_EQ(log.find("patients"), std::string::npos) << log;
  bool full_text = false;
  std::ifstream audit(dir_ / "cache-amsterdam" / "audit.jsonl");
  for (std::string line; std::getline(audit, line);) {
    const auto entry = json::parse(line);
    if (entry["type"] == "job_failed") full_text = entry.value("detail", "").find(empty.string()) != std::string::npos;
  }
  EXPECT_TRUE(full_text) << testing::read_text(dir_ / "cache-amsterdam" / "audit.jsonl");
  coordinator->wait(60s);
}

// ---- site sovereignty ----------------------------------------------------------------------

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
    const auto log = dir_ / ("cmd-" + std::to_string(n++) + ".out");
    Process p(argv, log);
    Output out;
    out.rc = p.wait(120s);
    out.text = testing::read_text(log);
    return out;
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
