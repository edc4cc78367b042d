// The coordinator as a service, as operators use it: `fedda-coordinator serve` with a kit, real
// agents, and every command through the `fedda-admin` executable with an operator kit, over
// CurveZMQ on loopback. Faults are real: the service is killed with SIGKILL and restarted, a
// site's key and an unknown operator's key knock on the admin endpoint.
#include <gtest/gtest.h>

#include <regex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "fedda/common/crypto.h"
#include "fedda/common/files.h"
#include "fedda/common/kit.h"
#include "fedda/common/protocol.h"
#include "fedda/common/version.h"
#include "fedda/models/federated.h"
#include "fedda/models/quality.h"
#include "support/curve_client.h"
#include "support/federation_fixture.h"

namespace fedda {
namespace {

using nlohmann::json;

using testing::Output;

class Service : public Federation {
 protected:
  void SetUp() override {
    kit_ = dir_ / "kits";
    ASSERT_TRUE(kit::provision({"wmh", "tcp://127.0.0.1:0", {"utrecht", "amsterdam", "singapore"}, kit_, {"alice"}, {}}));
  }

  std::unique_ptr<Process> serve(const std::string& bind = "tcp://127.0.0.1:0", const std::string& admin_bind = "") {
    std::vector<std::string> args = {testing::bin("fedda-coordinator").string(), "serve", "--kit",
                                     (kit_ / "coordinator").string(), "--bind", bind, "--state", state().string(),
                                     "--endpoint-file", endpoint_file().string(), "--heartbeat-ms", "200",
                                     "--start-timeout", "120"};
    if (!admin_bind.empty()) args.insert(args.end(), {"--admin-bind", admin_bind});
    return std::make_unique<Process>(args, coordinator_log());
  }
  fs::path state() const { return dir_ / "state"; }
  fs::path job_dir(const std::string& id) const { return state() / "jobs" / id; }

  // Waits for the endpoint file of a fresh start; sets endpoint_ and admin_.
  void endpoints() {
    ASSERT_TRUE(testing::wait_for_text(endpoint_file(), "\ntcp://", 30s)) << testing::read_text(coordinator_log());
    const auto text = testing::read_text(endpoint_file());
    const auto first = text.find('\n');
    endpoint_ = text.substr(0, first);
    admin_ = text.substr(first + 1, text.find('\n', first + 1) - first - 1);
  }

  // Runs fedda-admin with alice's kit (or `kit`) against this coordinator.
  Output admin(std::vector<std::string> args, const fs::path& kit = {}) {
    static int calls = 0;
    const auto log = dir_ / ("admin-" + std::to_string(calls++) + ".out");
    std::vector<std::string> argv = {testing::bin("fedda-admin").string(), "--kit",
                                     (kit.empty() ? kit_ / "operators" / "alice" : kit).string(), "--coordinator", admin_};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::run_to_end(argv, log);
  }
  json admin_json(std::vector<std::string> args) {
    args.push_back("--json");
    const auto out = admin(args);
    EXPECT_EQ(out.rc, 0) << out.text;
    const auto start = out.text.find_first_of("[{");
    return start == std::string::npos ? json() : json::parse(out.text.substr(start), nullptr, false);
  }
  // `site`'s row of `fedda-admin sites --json` (null when it has none).
  json site_row(const std::string& site) {
    for (const auto& s : admin_json({"sites"})) {
      if (s["site"] == site) return s;
    }
    return json();
  }
  std::string state_of(const std::string& job) {
    for (const auto& j : admin_json({"jobs"})) {
      if (j["id"] == job) return j["state"];
    }
    return "(absent)";
  }
  // Waits until `job` is in `state` (by `fedda-admin jobs`).
  bool wait_state(const std::string& job, const std::string& state, std::chrono::seconds timeout = 240s) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      if (state_of(job) == state) return true;
      std::this_thread::sleep_for(500ms);
    }
    return false;
  }
  std::vector<int> round_numbers(const std::string& job) {
    std::vector<int> out;
    std::ifstream in(job_dir(job) / "rounds.jsonl");
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) out.push_back(json::parse(line)["round"].get<int>());
    }
    return out;
  }
  std::vector<json> audit() {
    std::vector<json> out;
    std::ifstream in(state() / "audit.jsonl");
    for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
    return out;
  }

  std::string endpoint_, admin_;
};

TEST_F(Service, OperatorsSubmitWatchAndDownloadWhileJobsRun) {
  // The teacher file carries a quality estimator (fitted at the labelled source): the evaluation
  // site reports the label-free quality of the model, as aggregates, beside its Dice.
  const auto calibrated = dir_ / "teacher-with-estimator.pt";
  auto estimator = models::calibrate_quality(teacher(), imaging::find_clinic_subjects(data_dir(), "utrecht").value(), {});
  ASSERT_TRUE(estimator) << estimator.error().message;
  ASSERT_TRUE(models::attach_estimator(teacher(), *estimator, calibrated));
  auto coordinator = serve();
  endpoints();
  site_config_extra_ = "metrics_listen: 127.0.0.1:0\n";  // each agent's Prometheus metrics, on a free port
  auto utrecht = start_agent("utrecht", endpoint_);
  auto amsterdam = start_agent("amsterdam", endpoint_);
  const auto first = kd_job("kd-first", {"utrecht", "amsterdam"}, 4, 16, 2);
  auto submitted = admin({"submit", first.string()});
  ASSERT_EQ(submitted.rc, 0) << submitted.text;
  EXPECT_NE(submitted.text.find("queued job kd-first"), std::string::npos) << submitted.text;
  ASSERT_TRUE(testing::wait_for_text(coordinator_log(), "job kd-first: round 1/4 with 2 sites", 120s))
      << testing::read_text(coordinator_log());

  // While it runs: an evaluation of a teacher file that travels with the job, and a student of
  // the running job's result.
  const auto evaluate = dir_ / "evaluate.yaml";
  std::ofstream(evaluate) << "id: evaluate-teacher\ntype: evaluate\nteacher: " << calibrated.string()
                          << "\nsource: utrecht\nsites: [amsterdam]\nevaluation_sites: [amsterdam]\n";
  const auto second = dir_ / "kd-second.yaml";
  std::ofstream(second) << "id: kd-second\ntype: kd\nteacher: job:kd-first\nsource: utrecht\nsites: [utrecht, amsterdam]\n"
                        << "evaluation_sites: [amsterdam]\nrounds: 2\nlocal_steps: 8\nbatch_size: 4\nmin_sites: 2\n";
  ASSERT_EQ(admin({"submit", evaluate.string()}).rc, 0);
  ASSERT_EQ(admin({"submit", second.string()}).rc, 0);
  const auto jobs = admin_json({"jobs"});
  ASSERT_EQ(jobs.size(), 3u) << jobs.dump();
  EXPECT_EQ(jobs[0]["id"], "kd-first");
  EXPECT_EQ(jobs[0]["state"], "running");
  EXPECT_EQ(jobs[0]["rounds"], 4);
  EXPECT_EQ(jobs[1]["id"], "evaluate-teacher");
  EXPECT_EQ(jobs[1]["state"], "queued");
  EXPECT_EQ(jobs[2]["id"], "kd-second");
  EXPECT_EQ(jobs[2]["state"], "queued");
  const auto human = admin({"jobs"});
  EXPECT_NE(human.text.find("JOB"), std::string::npos) << human.text;
  EXPECT_NE(human.text.find("kd-first"), std::string::npos) << human.text;

  // A job file with a mistake is refused by the coordinator, naming the key.
  const auto broken = dir_ / "broken.yaml";
  std::ofstream(broken) << "id: broken\ntype: kd\nteacher: job:kd-first\nsites: [utrecht, nowhere]\nrouns: 2\n";
  auto refused = admin({"submit", broken.string()});
  EXPECT_NE(refused.rc, 0);
  EXPECT_NE(refused.text.find("unknown key 'rouns'"), std::string::npos) << refused.text;
  std::ofstream(broken) << "id: broken\ntype: kd\nteacher: job:kd-first\nsites: [utrecht, nowhere]\n";
  refused = admin({"submit", broken.string()});
  EXPECT_NE(refused.rc, 0);
  EXPECT_NE(refused.text.find("sites: 'nowhere' is not a site of this consortium"), std::string::npos) << refused.text;

  // Watched live: `jobs --watch` and `status --follow` keep answering until the jobs end, then leave by themselves.
  const auto admin_argv = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {testing::bin("fedda-admin").string(), "--kit", (kit_ / "operators" / "alice").string(),
                                     "--coordinator", admin_};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  };
  Process watching(admin_argv({"jobs", "--watch", "--every", "0.3", "--json"}), dir_ / "watch.out");
  Process following(admin_argv({"status", "kd-second", "--follow", "--every", "0.3"}), dir_ / "follow.out");
  for (const auto* id : {"kd-first", "evaluate-teacher", "kd-second"}) ASSERT_TRUE(wait_state(id, "finished")) << id;
  EXPECT_EQ(watching.wait(30s), 0) << testing::read_text(dir_ / "watch.out");
  EXPECT_EQ(following.wait(30s), 0) << testing::read_text(dir_ / "follow.out");
  {
    std::vector<json> looks;
    std::ifstream in(dir_ / "watch.out");
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line[0] == '[') looks.push_back(json::parse(line));
    }
    ASSERT_GE(looks.size(), 2u) << testing::read_text(dir_ / "watch.out");  // it saw the queue change
    EXPECT_TRUE(std::any_of(looks.front().begin(), looks.front().end(), [](const json& j) { return j["state"] != "finished"; }))
        << looks.front().dump();  // its first look was while they ran
    for (const auto& j : looks.back()) EXPECT_EQ(j["state"], "finished") << looks.back().dump();
    const auto followed = testing::read_text(dir_ / "follow.out");
    EXPECT_NE(followed.find("(every 0.3 s; Ctrl-C leaves) ---"), std::string::npos) << followed;
    EXPECT_NE(followed.rfind("finished"), std::string::npos) << followed;
  }
  EXPECT_EQ(round_numbers("kd-second"), (std::vector<int>{1, 2}));
  const auto status = admin_json({"status", "kd-second"});
  ASSERT_EQ(status["rounds_done"].size(), 2u) << status.dump();
  EXPECT_EQ(status["rounds_done"][0]["sites"].size(), 2u);
  EXPECT_TRUE(status["summary"]["mean_dsc"].contains("amsterdam")) << status.dump();
  const auto status_text = admin({"status", "kd-second"});
  EXPECT_NE(status_text.text.find("ROUND"), std::string::npos) << status_text.text;
  EXPECT_NE(status_text.text.find("mean Dice at amsterdam"), std::string::npos) << status_text.text;

  // Download over the channel: the files are the job's, byte for byte.
  const auto out = dir_ / "downloaded";
  auto downloaded = admin({"download", "kd-second", "--out", out.string()});
  ASSERT_EQ(downloaded.rc, 0) << downloaded.text;
  for (const auto* name : {"model.pt", "results.csv", "rounds.jsonl", "summary.json"}) {
    EXPECT_EQ(files::read_all(out / name).value(), files::read_all(job_dir("kd-second") / name).value()) << name;
  }
  ASSERT_TRUE(models::read_model_weights(out / "model.pt"));
  EXPECT_GT(testing::count_lines(out / "results.csv"), 1u);
  // A download it cannot write fails naming the folder, as one JSON document under --json.
  const auto blocked = dir_ / "blocked";
  std::ofstream(blocked) << "a file where the folder should be\n";
  const auto unwritten = admin({"download", "kd-second", "--out", blocked.string(), "--json"});
  EXPECT_EQ(unwritten.rc, 1) << unwritten.text;
  const auto failure = json::parse(unwritten.text.substr(std::min(unwritten.text.find('{'), unwritten.text.size())), nullptr, false);
  EXPECT_EQ(failure.value("ok", true), false) << unwritten.text;
  EXPECT_NE(failure.value("error", "").find(blocked.string()), std::string::npos) << unwritten.text;

  // The evaluation ran the teacher the submitter sent: its Dice is the teacher's own.
  const auto teacher_scores = models::evaluate_model(teacher(), imaging::split_fold(
      imaging::find_clinic_subjects(data_dir(), "amsterdam").value(), 0).test).value();
  double sum = 0;
  for (const auto& s : teacher_scores) sum += s.metrics.dsc;
  const auto evaluated = admin_json({"status", "evaluate-teacher"});
  EXPECT_NEAR(evaluated["summary"]["mean_dsc"]["amsterdam"].get<double>(), sum / teacher_scores.size(), 1e-6);
  const auto quality = evaluated["summary"]["quality"]["amsterdam"];
  EXPECT_EQ(quality["scans"].get<std::size_t>(), teacher_scores.size()) << evaluated.dump();
  const double median = quality["estimated_dsc_median"].get<double>();
  EXPECT_TRUE(median >= 0 && median <= 1);
  // kd-second's teacher carries no estimator: signals and drift only, no estimated Dice.
  EXPECT_TRUE(status["summary"]["quality"]["amsterdam"].contains("drifted")) << status.dump();
  EXPECT_FALSE(status["summary"]["quality"]["amsterdam"].contains("estimated_dsc_median")) << status.dump();
  EXPECT_TRUE(fs::exists(dir_ / "cache-amsterdam" / "reports" / "evaluate-teacher" / "estimates.csv"));

  // Every command is in the coordinator's audit log, with who sent it.
  int submits = 0;
  for (const auto& line : audit()) {
    EXPECT_EQ(line["operator"], "alice");
    if (line["command"] == "submit") ++submits;
  }
  EXPECT_EQ(submits, 5);  // three accepted, two refused

  // The agent's own metrics (metrics_listen), as Prometheus' parser reads them: it trained
  // rounds of two kd jobs and answered an evaluation.
  const auto agent_status = nlohmann::json::parse(testing::read_text(dir_ / "cache-amsterdam" / "status.json"));
  const auto url = agent_status.value("metrics", "");
  ASSERT_EQ(url.rfind("http://127.0.0.1:", 0), 0u) << agent_status.dump();
  const auto metrics = testing::run_command("curl -sf " + url + " | tee " + (dir_ / "agent-metrics.txt").string() +
                                            " | promtool check metrics");
  EXPECT_EQ(metrics.exit_code, 0) << metrics.output;
  const auto text = testing::read_text(dir_ / "agent-metrics.txt");
  EXPECT_NE(text.find("fedda_agent_connected 1\n"), std::string::npos) << text;
  std::smatch updates;
  ASSERT_TRUE(std::regex_search(text, updates, std::regex("\nfedda_agent_updates_sent_total ([0-9]+)\n"))) << text;
  EXPECT_GE(std::stoi(updates[1]), 7);  // 4 + 2 training rounds and at least one evaluation

  // After an agent restarts, `sites` names the jobs it took part in by how they ended (it said
  // "offline" for each once the new session had reset them).
  amsterdam->signal(SIGTERM);
  ASSERT_EQ(amsterdam->wait(30s), 0);
  amsterdam = start_agent("amsterdam", endpoint_);
  json site;
  for (int i = 0; i < 300; ++i) {
    site = site_row("amsterdam");
    if (site.is_object() && site["online"].get<bool>()) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(site["online"].get<bool>()) << site.dump();
  for (const auto* job : {"kd-first", "evaluate-teacher", "kd-second"}) {
    EXPECT_EQ(site["jobs"][job]["state"], "finished") << site.dump();
  }
  coordinator->signal(SIGTERM);
  EXPECT_EQ(coordinator->wait(60s), 0) << testing::read_text(coordinator_log());
}

TEST_F(Service, KilledMidQueueItResumesTheRunningJobAndKeepsTheQueue) {
  auto coordinator = serve();
  endpoints();
  auto utrecht = start_agent("utrecht", endpoint_);
  auto amsterdam = start_agent("amsterdam", endpoint_);
  ASSERT_EQ(admin({"submit", kd_job("kd-long", {"utrecht", "amsterdam"}, 5, 24, 2).string()}).rc, 0);
  ASSERT_EQ(admin({"submit", kd_job("kd-next", {"utrecht", "amsterdam"}, 2, 8, 2).string()}).rc, 0);
  const auto until = std::chrono::steady_clock::now() + 180s;
  // Waits on the job's saved state, not on rounds.jsonl: a round's line is appended before the
  // state that counts it is saved, and a kill between the two is the crash resume must handle,
  // not the one this test sets up.
  const auto finished_round = [&] {
    const auto state = json::parse(testing::read_text(job_dir("kd-long") / "state.json"), nullptr, false);
    return state.is_object() ? state.value("finished_round", 0) : 0;
  };
  while (finished_round() < 2 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(20ms);
  coordinator->signal(SIGKILL);
  ASSERT_NE(coordinator->wait(10s), -2);
  const auto finished_before = finished_round();
  ASSERT_GE(finished_before, 2);
  ASSERT_LT(finished_before, 5) << "the job finished before the kill; make rounds longer";
  EXPECT_EQ(json::parse(testing::read_text(job_dir("kd-next") / "state.json"))["state"], "queued");

  auto restarted = serve(endpoint_, admin_);
  ASSERT_TRUE(wait_state("kd-long", "finished"));
  ASSERT_TRUE(wait_state("kd-next", "finished"));
  EXPECT_NE(testing::read_text(coordinator_log()).find("job kd-long: resuming after round " + std::to_string(finished_before)),
            std::string::npos);
  EXPECT_EQ(round_numbers("kd-long"), (std::vector<int>{1, 2, 3, 4, 5}));  // none lost, none repeated
  EXPECT_EQ(round_numbers("kd-next"), (std::vector<int>{1, 2}));
  restarted->signal(SIGTERM);
  EXPECT_EQ(restarted->wait(60s), 0);
}

// Regression (hostile-peer issue): operators could not be revoked. An operator revokes another
// (never itself); the revoked key is refused from its next command, across a restart, until it
// is admitted again.
TEST_F(Service, AnOperatorIsRevokedAcrossARestartUntilAdmittedAgain) {
  ASSERT_TRUE(kit::add_operator(kit_, "bob"));
  const auto bob = kit_ / "operators" / "bob";
  auto coordinator = serve();
  endpoints();
  ASSERT_EQ(admin({"jobs"}, bob).rc, 0);
  const auto self = admin({"revoke", "alice"});
  EXPECT_NE(self.rc, 0);
  EXPECT_NE(self.text.find("cannot revoke itself"), std::string::npos) << self.text;
  ASSERT_EQ(admin({"revoke", "bob"}).rc, 0);
  const auto refused = admin({"--timeout", "3", "jobs"}, bob);
  EXPECT_NE(refused.rc, 0) << refused.text;
  EXPECT_TRUE(testing::wait_for_text(coordinator_log(), "operator 'bob' is revoked", 10s)) << testing::read_text(coordinator_log());
  coordinator->signal(SIGTERM);
  ASSERT_EQ(coordinator->wait(60s), 0);
  auto restarted = serve(endpoint_, admin_);
  ASSERT_TRUE(testing::wait_for_text(coordinator_log(), "listening on", 30s));
  EXPECT_NE(admin({"--timeout", "3", "jobs"}, bob).rc, 0) << "a restart forgot the revocation";
  ASSERT_EQ(admin({"admit", "bob"}).rc, 0);
  EXPECT_EQ(admin({"jobs"}, bob).rc, 0);
  EXPECT_NE(testing::read_text(state() / "audit.jsonl").find("\"revoke\""), std::string::npos);
}

TEST_F(Service, AnAbortedJobStopsAfterItsRoundAndResumesWhereItStopped) {
  auto coordinator = serve();
  endpoints();
  auto utrecht = start_agent("utrecht", endpoint_);
  auto amsterdam = start_agent("amsterdam", endpoint_);
  ASSERT_EQ(admin({"submit", kd_job("kd-abort", {"utrecht", "amsterdam"}, 6, 24, 2).string()}).rc, 0);
  ASSERT_TRUE(testing::wait_for_text(coordinator_log(), "job kd-abort: round 2/6 with 2 sites", 180s));
  // Followed while it is aborted: `status --follow` ends with it, and says it did not finish (exit code 1).
  Process following({testing::bin("fedda-admin").string(), "--kit", (kit_ / "operators" / "alice").string(),
                     "--coordinator", admin_, "status", "kd-abort", "--follow", "--every", "0.3"},
                    dir_ / "follow-abort.out");
  auto aborted = admin({"abort", "kd-abort"});
  ASSERT_EQ(aborted.rc, 0) << aborted.text;
  EXPECT_NE(aborted.text.find("stops after the current round"), std::string::npos) << aborted.text;
  ASSERT_TRUE(wait_state("kd-abort", "aborted"));
  EXPECT_EQ(following.wait(30s), 1) << testing::read_text(dir_ / "follow-abort.out");
  EXPECT_NE(testing::read_text(dir_ / "follow-abort.out").find("aborted"), std::string::npos);
  const auto rounds = round_numbers("kd-abort");
  ASSERT_GE(rounds.size(), 2u);
  ASSERT_LT(rounds.size(), 6u);
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(round_numbers("kd-abort"), rounds) << "rounds went on after the abort";
  EXPECT_EQ(admin({"abort", "kd-abort"}).rc, 4);  // nothing left to abort: refused
  EXPECT_EQ(admin({"status", "no-such-job"}).rc, 3);  // not found
  const auto missing = admin({"status", "no-such-job", "--json"});  // a script reads the kind too
  EXPECT_EQ(missing.rc, 3);
  EXPECT_NE(missing.text.find("\"kind\": \"not_found\""), std::string::npos) << missing.text;
  EXPECT_NE(missing.text.find("\"ok\": false"), std::string::npos) << missing.text;
  auto resumed = admin({"resume", "kd-abort"});
  ASSERT_EQ(resumed.rc, 0) << resumed.text;
  ASSERT_TRUE(wait_state("kd-abort", "finished"));
  EXPECT_EQ(round_numbers("kd-abort"), (std::vector<int>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(admin({"resume", "kd-abort"}).rc, 4);  // finished: nothing to resume
  // The whole history stays in `status`, with who asked (regression: resume erased the abort).
  const auto status = admin({"status", "kd-abort"});
  for (const auto* step : {"submitted", "started", "aborted", "by alice", "resumed", "finished"}) {
    EXPECT_NE(status.text.find(step), std::string::npos) << step << "\n" << status.text;
  }
  EXPECT_LT(status.text.find("aborted"), status.text.find("resumed")) << status.text;
}

// A CurveZMQ client holding the key pair `stem`.curve.{public,secret} of `kit`.
std::unique_ptr<zmq::socket_t> curve_client(zmq::context_t& context, const std::string& endpoint,
                                            const std::string& server_public, const fs::path& kit, const std::string& stem) {
  const auto line = [](const fs::path& f) {
    auto t = testing::read_text(f);
    return t.substr(0, t.find('\n'));
  };
  return testing::curve_client(context, endpoint, server_public, line(kit / (stem + ".curve.public")),
                               line(kit / (stem + ".curve.secret")));
}

TEST_F(Service, SiteAndOperatorKeysAreAdmittedOnTheirOwnEndpointOnly) {
  auto coordinator = serve();
  endpoints();
  const auto coordinator_public = [&] {
    auto t = testing::read_text(kit_ / "coordinator" / "coordinator.curve.public");
    return t.substr(0, t.find('\n'));
  }();
  auto& context = testing::refused_handshake_context();
  protocol::Header h;
  h.type = protocol::MessageType::admin_request;
  h.sender = "utrecht";
  h.sequence = 1;
  protocol::AdminRequest jobs;
  jobs.command = "jobs";
  const auto request = protocol::encode(h, jobs);
  // A site's key on the admin endpoint: refused at the handshake, no answer.
  auto site_on_admin = curve_client(context, admin_, coordinator_public, kit_ / "sites" / "utrecht", "site");
  site_on_admin->send(zmq::buffer(request.header), zmq::send_flags::sndmore);
  site_on_admin->send(zmq::buffer(request.body), zmq::send_flags::none);
  EXPECT_TRUE(testing::wait_for_text(coordinator_log(), "site key of 'utrecht' on the admin endpoint", 10s))
      << testing::read_text(coordinator_log());
  zmq::pollitem_t items[] = {{site_on_admin->handle(), 0, ZMQ_POLLIN, 0}};
  zmq::poll(items, 1, 1000ms);
  EXPECT_FALSE(items[0].revents & ZMQ_POLLIN) << "the coordinator answered a site's key on the admin endpoint";
  // An operator's key on the sites' endpoint: refused too.
  auto operator_on_data = curve_client(context, endpoint_, coordinator_public, kit_ / "operators" / "alice", "operator");
  operator_on_data->send(zmq::buffer(request.header), zmq::send_flags::sndmore);
  operator_on_data->send(zmq::buffer(request.body), zmq::send_flags::none);
  EXPECT_TRUE(testing::wait_for_text(coordinator_log(), "operator key of 'alice' on the sites' endpoint", 10s));
  // A site on its own, admitted connection asking an admin command: refused by code.
  auto site_on_data = curve_client(context, endpoint_, coordinator_public, kit_ / "sites" / "utrecht", "site");
  site_on_data->send(zmq::buffer(request.header), zmq::send_flags::sndmore);
  site_on_data->send(zmq::buffer(request.body), zmq::send_flags::none);
  zmq::pollitem_t answer[] = {{site_on_data->handle(), 0, ZMQ_POLLIN, 0}};
  zmq::poll(answer, 1, 10000ms);
  ASSERT_TRUE(answer[0].revents & ZMQ_POLLIN);
  std::vector<zmq::message_t> parts;
  ASSERT_TRUE(zmq::recv_multipart(*site_on_data, std::back_inserter(parts)));
  ASSERT_EQ(parts.size(), 2u);
  auto reject = protocol::decode_body<protocol::Reject>(parts[1].to_string());
  ASSERT_TRUE(reject);
  EXPECT_EQ(reject->code, protocol::RejectCode::not_an_operator);

  // A key nobody provisioned, speaking to the coordinator's (public) key: refused by the ZAP
  // handler, no answer.
  const auto fresh = crypto::generate_curve_keypair().value();
  const auto stranger_dir = dir_ / "stranger";
  fs::create_directories(stranger_dir);
  std::ofstream(stranger_dir / "operator.curve.public") << fresh.public_z85 << "\n";
  std::ofstream(stranger_dir / "operator.curve.secret") << fresh.secret_z85 << "\n";
  auto stranger = curve_client(context, admin_, coordinator_public, stranger_dir, "operator");
  stranger->send(zmq::buffer(request.header), zmq::send_flags::sndmore);
  stranger->send(zmq::buffer(request.body), zmq::send_flags::none);
  EXPECT_TRUE(testing::wait_for_text(coordinator_log(), "CURVE key " + fresh.public_z85 + " is not an operator of this consortium", 10s))
      << testing::read_text(coordinator_log());
  zmq::pollitem_t none[] = {{stranger->handle(), 0, ZMQ_POLLIN, 0}};
  zmq::poll(none, 1, 1000ms);
  EXPECT_FALSE(none[0].revents & ZMQ_POLLIN);
  // Another consortium's operator kit (it names another coordinator's key): the handshake
  // fails, fedda-admin says there was no answer, and the coordinator logs the refused connection.
  ASSERT_TRUE(kit::provision({"other", "tcp://127.0.0.1:0", {"x"}, dir_ / "other", {"mallory"}, {}}));
  auto other = admin({"--timeout", "3", "jobs"}, dir_ / "other" / "operators" / "mallory");
  EXPECT_NE(other.rc, 0);
  EXPECT_NE(other.text.find("no answer from the coordinator"), std::string::npos) << other.text;
  EXPECT_TRUE(testing::wait_for_text(coordinator_log(), "admin connection", 10s)) << testing::read_text(coordinator_log());
  // A site kit given as an operator kit is refused before anything is sent.
  auto confused = admin({"jobs"}, kit_ / "sites" / "utrecht");
  EXPECT_NE(confused.rc, 0);
  EXPECT_NE(confused.text.find("not an operator kit"), std::string::npos) << confused.text;
  EXPECT_TRUE(audit().empty()) << "a refused peer's command reached the audit log";
}

// Operator roles, signed in each operator's manifest and checked at the coordinator: a viewer
// reads, a member submits and aborts or resumes only its own jobs, a lead does everything.
TEST_F(Service, AnOperatorsRoleDecidesWhatItMayDo) {
  ASSERT_TRUE(kit::add_operator(kit_, "bob", "member"));
  ASSERT_TRUE(kit::add_operator(kit_, "carol", "viewer"));
  auto unknown = kit::add_operator(kit_, "dave", "auditor");
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message.find("role 'auditor' is not lead, member or viewer"), std::string::npos);
  const auto roles = kit::load_coordinator_kit(kit_ / "coordinator").value().operator_roles;
  EXPECT_EQ(roles.at("alice"), "lead");  // provisioned without a role
  EXPECT_EQ(roles.at("bob"), "member");
  EXPECT_EQ(roles.at("carol"), "viewer");
  auto coordinator = serve();
  endpoints();
  const auto bob = kit_ / "operators" / "bob", carol = kit_ / "operators" / "carol";
  const auto alices = kd_job("kd-alice", {"utrecht", "amsterdam"}, 3, 2, 2);  // no agents: the jobs wait
  const auto bobs = kd_job("kd-bob", {"utrecht", "amsterdam"}, 3, 2, 2);

  EXPECT_EQ(admin({"jobs"}, carol).rc, 0);
  auto viewer = admin({"submit", alices.string()}, carol);
  EXPECT_NE(viewer.rc, 0);
  EXPECT_NE(viewer.text.find("operator 'carol' is a viewer (read only): submit needs the member or lead role"),
            std::string::npos) << viewer.text;
  ASSERT_EQ(admin({"submit", alices.string()}).rc, 0);
  ASSERT_EQ(admin({"submit", bobs.string()}, bob).rc, 0);
  auto others = admin({"abort", "kd-alice"}, bob);
  EXPECT_NE(others.rc, 0);
  EXPECT_NE(others.text.find("may abort only its own jobs; job 'kd-alice' was submitted by alice"), std::string::npos)
      << others.text;
  auto lead_only = admin({"revoke", "utrecht"}, bob);
  EXPECT_NE(lead_only.rc, 0);
  EXPECT_NE(lead_only.text.find("operator 'bob' is a member: revoke needs the lead role"), std::string::npos)
      << lead_only.text;
  EXPECT_EQ(admin({"abort", "kd-bob"}, bob).rc, 0) << "a member aborts its own job";
  EXPECT_EQ(admin({"abort", "kd-alice"}).rc, 0) << "a lead aborts anyone's";
  EXPECT_EQ(state_of("kd-bob"), "aborted");
  int refusals = 0;
  for (const auto& line : audit()) refusals += line["ok"] == false;
  EXPECT_EQ(refusals, 3);  // each refusal is audited with who asked
}

// An operator repeats a job with changes (clone: the job file as submitted, the changes laid
// over it, validated again) and takes ended jobs out of the queue (delete: the folder archived,
// the command audited); a running job, a job another distils and a mistyped key are refused.
TEST_F(Service, AJobIsClonedWithChangesAndAnEndedOneIsDeletedIntoTheArchive) {
  auto coordinator = serve();
  endpoints();
  auto utrecht = start_agent("utrecht", endpoint_);
  auto amsterdam = start_agent("amsterdam", endpoint_);
  ASSERT_EQ(admin({"submit", kd_job("kd-once", {"utrecht", "amsterdam"}, 1, 2, 2).string()}).rc, 0);
  ASSERT_TRUE(wait_state("kd-once", "finished"));

  auto cloned = admin({"clone", "kd-once", "--id", "kd-twice", "--set", "rounds=2", "--set", "dp.clip_norm=1",
                       "--set", "dp.noise_multiplier=2"});
  ASSERT_EQ(cloned.rc, 0) << cloned.text;
  EXPECT_NE(cloned.text.find("queued job kd-twice (a clone of kd-once)"), std::string::npos) << cloned.text;
  ASSERT_TRUE(wait_state("kd-twice", "finished"));
  const auto twice = admin_json({"status", "kd-twice"});
  EXPECT_EQ(twice["rounds"], 2) << twice.dump();
  EXPECT_EQ(twice["rounds_done"].size(), 2u) << twice.dump();
  EXPECT_TRUE(twice["rounds_done"][0]["sites"][0].contains("epsilon")) << twice.dump();  // the dp change took
  const auto yaml = testing::read_text(job_dir("kd-twice") / "job.yaml");
  EXPECT_NE(yaml.find("id: kd-twice"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("noise_multiplier: 2"), std::string::npos) << yaml;

  auto mistyped = admin({"clone", "kd-once", "--id", "kd-bad", "--set", "rouns=2"});
  EXPECT_NE(mistyped.rc, 0);
  EXPECT_NE(mistyped.text.find("unknown key 'rouns'"), std::string::npos) << mistyped.text;
  auto taken = admin({"clone", "kd-once", "--id", "kd-twice"});
  EXPECT_NE(taken.rc, 0);
  EXPECT_NE(taken.text.find("exists already"), std::string::npos) << taken.text;
  auto not_a_setting = admin({"clone", "kd-once", "--id", "kd-x", "--set", "rounds"});
  EXPECT_NE(not_a_setting.rc, 0);
  EXPECT_NE(not_a_setting.text.find("'rounds' is not key=value"), std::string::npos) << not_a_setting.text;

  // A student of kd-twice, queued behind a job that waits for a site nobody runs: kd-twice cannot go while it waits.
  const auto waiting = dir_ / "kd-student.yaml";
  std::ofstream(waiting) << "id: kd-student\ntype: kd\nteacher: job:kd-twice\nsource: utrecht\n"
                         << "sites: [utrecht, singapore]\nevaluation_sites: [singapore]\nrounds: 1\nlocal_steps: 2\nmin_sites: 2\n";
  ASSERT_EQ(admin({"submit", waiting.string()}).rc, 0);
  auto busy = admin({"delete", "kd-twice"});
  EXPECT_NE(busy.rc, 0);
  EXPECT_NE(busy.text.find("distils job 'kd-twice' as its teacher"), std::string::npos) << busy.text;
  auto running = admin({"delete", "kd-student"});
  EXPECT_NE(running.rc, 0);
  EXPECT_NE(running.text.find("only a finished, failed or aborted job can be deleted"), std::string::npos) << running.text;

  const auto deleted = admin_json({"delete", "kd-once"});
  ASSERT_TRUE(deleted.is_object() && deleted.contains("archived_in")) << deleted.dump();
  const auto archive = fs::path(deleted["archived_in"].get<std::string>());
  EXPECT_TRUE(fs::exists(archive / "model.pt")) << archive;
  EXPECT_FALSE(fs::exists(job_dir("kd-once")));
  for (const auto& j : admin_json({"jobs"})) EXPECT_NE(j["id"], "kd-once");
  bool audited = false;
  for (const auto& line : audit()) audited |= line["command"] == "delete" && line["target"] == "kd-once";
  EXPECT_TRUE(audited);
  // A restart does not bring it back.
  coordinator->signal(SIGTERM);
  ASSERT_EQ(coordinator->wait(60s), 0) << testing::read_text(coordinator_log());
  coordinator = serve(endpoint_, admin_);  // the same endpoints: the admin client waits for it
  const auto after = admin_json({"jobs"});
  ASSERT_TRUE(after.is_array()) << after.dump();
  for (const auto& j : after) EXPECT_NE(j["id"], "kd-once");
}

// Two agents started with one site's kit (on two machines, say): the coordinator names both
// connections, keeps the first and refuses the second, which stops with exit code 4 (the unit
// does not restart it). An agent killed and started again is not taken for a second one.
TEST_F(Service, ASecondAgentWithTheSameKitIsRefusedAndTheFirstKeepsTheSite) {
  auto coordinator = serve();
  endpoints();
  auto first = start_agent("singapore", endpoint_);
  ASSERT_TRUE(testing::wait_for_text(coordinator_log(), "site singapore joined", 30s)) << testing::read_text(coordinator_log());
  // The same kit and site, its own cache and log, as on another machine.
  auto config = testing::read_text(dir_ / "singapore.yaml");
  const auto cache = config.find("cache-singapore");
  ASSERT_NE(cache, std::string::npos);
  config.replace(cache, std::string("cache-singapore").size(), "cache-singapore-again");
  std::ofstream(dir_ / "singapore-again.yaml") << config;
  Process second({testing::bin("fedda-agent").string(), "run", "--config", (dir_ / "singapore-again.yaml").string()},
                 dir_ / "singapore-again.log");
  EXPECT_EQ(second.wait(30s), 4) << testing::read_text(dir_ / "singapore-again.log");
  EXPECT_NE(testing::read_text(dir_ / "singapore-again.log").find("another agent with this site's kit was connected first"),
            std::string::npos) << testing::read_text(dir_ / "singapore-again.log");
  const auto log = testing::read_text(coordinator_log());
  EXPECT_NE(log.find("site singapore: two connections with its key, from 127.0.0.1, connected at "), std::string::npos) << log;
  EXPECT_NE(log.find("keeping the first, refusing the second"), std::string::npos) << log;
  // The first agent keeps the site, and nothing flaps: one reconnection (the second's hello) and
  // the first's session back, no "does not know this session" loop.
  std::this_thread::sleep_for(2s);
  const auto site = [&] { return site_row("singapore"); };
  EXPECT_TRUE(site()["online"].get<bool>());
  EXPECT_TRUE(first->running());
  const auto first_log = testing::read_text(dir_ / "singapore.log");
  EXPECT_EQ(first_log.find("refused this agent"), std::string::npos) << first_log;
  const auto count = [](const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  };
  // The second's hello, and the first's when it came back: no more.
  EXPECT_LE(count(testing::read_text(coordinator_log()), "site singapore reconnected"), 2u);

  // A restart is not a second agent: killed without a goodbye and started again, it takes over.
  first->signal(SIGKILL);
  EXPECT_EQ(first->wait(10s), -1);
  auto restarted = start_agent("singapore", endpoint_);  // appends to singapore.log
  for (int i = 0; i < 300 && count(testing::read_text(dir_ / "singapore.log"), "joined the consortium") < 2; ++i) {
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(count(testing::read_text(dir_ / "singapore.log"), "joined the consortium"), 2u)
      << testing::read_text(dir_ / "singapore.log");
  std::this_thread::sleep_for(2s);
  EXPECT_TRUE(restarted->running()) << testing::read_text(dir_ / "singapore.log");
  EXPECT_TRUE(site()["online"].get<bool>());
  EXPECT_EQ(count(testing::read_text(coordinator_log()), "two connections with its key"), 1u);
  restarted->signal(SIGTERM);
  EXPECT_EQ(restarted->wait(30s), 0);
}

TEST_F(Service, ANewSiteIsAdmittedWithoutRestartAndARevokedOneIsCutOffAtOnce) {
  auto coordinator = serve();
  endpoints();
  // A site provisioned after the coordinator started: its agent is refused until admitted, and
  // while refused it still answers SIGTERM.
  auto added = Process({testing::bin("fedda-admin").string(), "add-site", "--consortium-dir", kit_.string(), "--site", "oslo"},
                       dir_ / "add-site.log");
  ASSERT_EQ(added.wait(30s), 0) << testing::read_text(dir_ / "add-site.log");
  auto early = start_agent("oslo", endpoint_, data_dir() / "singapore");
  ASSERT_TRUE(testing::wait_for_text(coordinator_log(), "is not provisioned in this consortium", 20s));
  ASSERT_TRUE(testing::wait_for_text(dir_ / "oslo.log", "refused this site's key", 20s)) << testing::read_text(dir_ / "oslo.log");
  early->signal(SIGTERM);
  EXPECT_EQ(early->wait(15s), 0) << "a refused agent did not stop on SIGTERM";

  auto admitted = admin({"admit", "oslo"});
  ASSERT_EQ(admitted.rc, 0) << admitted.text;
  auto oslo = start_agent("oslo", endpoint_, data_dir() / "singapore");
  ASSERT_TRUE(testing::wait_for_text(coordinator_log(), "site oslo joined", 30s)) << testing::read_text(coordinator_log());
  const auto online = [&](const std::string& site) { return site_row(site); };
  EXPECT_TRUE(online("oslo")["online"].get<bool>());
  EXPECT_EQ(online("oslo")["agent_version"], kVersion);

  auto revoked = admin({"revoke", "oslo"});
  ASSERT_EQ(revoked.rc, 0) << revoked.text;
  ASSERT_TRUE(testing::wait_for_text(coordinator_log(), "site oslo: revoked by alice; disconnected", 5s));
  const auto after = online("oslo");
  EXPECT_FALSE(after["online"].get<bool>());
  EXPECT_TRUE(after["revoked"].get<bool>());
  ASSERT_TRUE(testing::wait_for_text(dir_ / "oslo.log", "revoked this site's key", 10s)) << testing::read_text(dir_ / "oslo.log");
  // It keeps trying and is refused; it never joins again.
  ASSERT_TRUE(testing::wait_for_text(coordinator_log(), "site 'oslo' is revoked", 30s)) << testing::read_text(coordinator_log());
  const auto log = testing::read_text(coordinator_log());
  EXPECT_EQ(log.find("site oslo reconnected", log.find("revoked by alice")), std::string::npos) << log;

  // A restart keeps the revocation.
  coordinator->signal(SIGTERM);
  ASSERT_EQ(coordinator->wait(60s), 0);
  auto restarted = serve(endpoint_, admin_);
  ASSERT_TRUE(testing::wait_for_text(coordinator_log(), "listening on", 30s));
  EXPECT_TRUE(online("oslo")["revoked"].get<bool>());
  // Admitted again, it rejoins. The mark is taken before the admission: the agent may join
  // before the operator's command has returned.
  const auto mark = testing::read_text(coordinator_log()).size();
  ASSERT_EQ(admin({"admit", "oslo"}).rc, 0);
  const auto until = std::chrono::steady_clock::now() + 40s;
  while (testing::read_text(coordinator_log()).find("site oslo joined", mark) == std::string::npos &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_NE(testing::read_text(coordinator_log()).find("site oslo joined", mark), std::string::npos)
      << testing::read_text(coordinator_log()).substr(mark) << "\n--- oslo.log:\n" << testing::read_text(dir_ / "oslo.log");
}

}  // namespace
}  // namespace fedda
