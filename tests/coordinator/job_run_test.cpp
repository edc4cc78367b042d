// A job's deadlines at the coordinator, in one process on a manual clock: a JobRun driven by a
// host that records what it sends, its sites' messages handed to it as the service hands them.
// The round deadline, the grace for a site still preparing, the start timeout and a late update
// are each reached by moving the clock, not by waiting.
#include "job_run.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "support/test_support.h"

namespace fedda::coordinator {
namespace {

using namespace std::chrono_literals;
using protocol::MessageType;

struct Sent {
  std::string site;
  MessageType type;
  int round = 0;
  std::shared_ptr<const std::string> body;
};

class ManualHost : public JobHost {
 public:
  explicit ManualHost(const std::filesystem::path& state) : store_(JobStore::open(state).value()) {}

  SiteRegistry& sites() override { return registry_; }
  JobStore& store() override { return *store_; }
  const kit::CoordinatorKit* kit() const override { return nullptr; }
  Clock::duration start_timeout() const override { return 600s; }
  Clock::time_point now() const override { return now_; }
  void send(const SiteInfo& site, MessageType type, const std::string&, int round, const Broadcast& body) override {
    sent.push_back({site.id, type, round, body.body});
  }
  void queue_upload(const std::string& site, const std::string&, int round) override { uploads.emplace_back(site, round); }
  log::Budget& log_budget() override { return budget_; }

  void advance(Clock::duration by) { now_ += by; }
  // What was sent to `site` of `type` for `round`, oldest first.
  std::vector<const Sent*> sent_to(const std::string& site, MessageType type, int round) const {
    std::vector<const Sent*> out;
    for (const auto& s : sent) {
      if (s.site == site && s.type == type && s.round == round) out.push_back(&s);
    }
    return out;
  }

  std::vector<Sent> sent;
  std::vector<std::pair<std::string, int>> uploads;

 private:
  SiteRegistry registry_;
  std::unique_ptr<JobStore> store_;
  log::Budget budget_;
  Clock::time_point now_ = Clock::time_point{} + 24h;  // far from the steady clock's own now
};

class JobRunDeadlines : public ::testing::Test {
 protected:
  // A teacher job of sites a and b (round_deadline_s 60), running, with `extra` lines.
  void submit(const std::string& extra) {
    auto definition = parse_job_file("id: j\ntype: teacher\nsource: a\nsites: [a, b]\nrounds: 2\nlocal_steps: 1\n"
                                     "evaluate: false\nround_deadline_s: 60\n"
                                     "model: {width: 4, depth: 2, grid_size: 32, grid_spacing: 6}\n" + extra,
                                     "j.yaml");
    ASSERT_TRUE(definition) << definition.error().message;
    auto added = host_.store().add(*definition, "test", "");
    ASSERT_TRUE(added) << added.error().message;
    record_ = *added;
    ASSERT_TRUE(host_.store().set_state(*record_, JobState::running));
    run_ = std::make_unique<JobRun>(*record_, host_);
  }
  SiteInfo& connect(const std::string& site) {
    return host_.sites().begin_session(site, "routing-" + site, 1, "test", "cpu", 1);
  }
  void say(SiteInfo& site, MessageType type, int round, const std::string& body) {
    protocol::Header h;
    h.type = type;
    h.sender = site.id;
    h.job_id = "j";
    h.round = round;
    run_->handle(site, h, body);
  }
  void ready(SiteInfo& site, std::int64_t samples) {
    protocol::JobReady r;
    r.samples = samples;
    r.subjects = 2;
    say(site, MessageType::job_ready, 0, protocol::encode(protocol::Header{}, r).body);
  }
  // The site's update for `round`: the model it was sent, unchanged, and the samples it declared.
  void answer(SiteInfo& site, int round, std::int64_t samples) {
    const auto tasks = host_.sent_to(site.id, MessageType::round_task, round);
    ASSERT_FALSE(tasks.empty()) << site.id << " was never asked for round " << round;
    auto task = protocol::decode_body<protocol::RoundTask>(*tasks.back()->body);
    ASSERT_TRUE(task) << task.error().message;
    say(site, MessageType::update_ready, round, protocol::encode_empty(protocol::Header{}).body);
    protocol::RoundUpdate u;
    u.model = task->model;
    u.samples = samples;
    u.steps = 1;
    u.loss = 0.5;
    say(site, MessageType::round_update, round, protocol::encode(protocol::Header{}, u).body);
  }
  // Sites a (100 samples) and b (50) connected and ready, round 1 opened, a's update in.
  void round_one_with_a_answered() {
    submit("min_sites: 1\n");
    a_ = &connect("a");
    b_ = &connect("b");
    ASSERT_TRUE(run_->start());
    ready(*a_, 100);
    ready(*b_, 50);
    run_->tick();
    answer(*a_, 1, 100);
  }
  static bool has(const std::vector<std::string>& items, const std::string& item) {
    return std::count(items.begin(), items.end(), item) > 0;
  }

  testing::ScratchDir dir_;
  ManualHost host_{dir_.path()};
  JobRecord* record_ = nullptr;
  std::unique_ptr<JobRun> run_;
  SiteInfo *a_ = nullptr, *b_ = nullptr;
};

TEST_F(JobRunDeadlines, ARoundClosesAtItsDeadlineWithTheSitesThatAnsweredAndNamesTheOthersLate) {
  round_one_with_a_answered();
  ASSERT_EQ(host_.sent_to("a", MessageType::round_task, 1).size(), 1u);
  ASSERT_EQ(host_.sent_to("b", MessageType::round_task, 1).size(), 1u);
  EXPECT_EQ(host_.uploads, (std::vector<std::pair<std::string, int>>{{"a", 1}}));

  host_.advance(59s);
  run_->tick();
  EXPECT_TRUE(record_->rounds.empty()) << "closed before its deadline";
  const auto open = run_->round_sites();
  ASSERT_TRUE(open);
  EXPECT_EQ(open->answered, std::vector<std::string>{"a"});
  EXPECT_EQ(open->waiting, std::vector<std::string>{"b"});
  EXPECT_EQ(run_->activity(), "round 1 of 2: 1 of 2 updates in");

  host_.advance(2s);
  run_->tick();
  ASSERT_EQ(record_->rounds.size(), 1u);
  const auto& round = record_->rounds[0];
  ASSERT_EQ(round.sites.size(), 1u);
  EXPECT_EQ(round.sites[0].site, "a");
  EXPECT_TRUE(has(round.missing, "b (late)")) << ::testing::PrintToString(round.missing);
  EXPECT_NEAR(round.cost.span_s, 61.0, 1.0) << "the round's span is on the host's clock";
  EXPECT_EQ(host_.sent_to("b", MessageType::round_task, 2).size(), 1u) << "round 2 opens at once, b asked again";
}

TEST_F(JobRunDeadlines, ALateUpdateIsDiscardedAndNotCountedInTheNextRound) {
  round_one_with_a_answered();
  host_.advance(61s);
  run_->tick();
  ASSERT_EQ(record_->rounds.size(), 1u);
  ASSERT_EQ(record_->finished_round, 1);

  // b's answer to round 1 comes during round 2: no upload credit, nothing counted.
  host_.uploads.clear();
  answer(*b_, 1, 50);
  EXPECT_TRUE(host_.uploads.empty());
  EXPECT_FALSE(run_->wants_upload("b", 1));
  auto open = run_->round_sites();
  ASSERT_TRUE(open);
  EXPECT_EQ(open->round, 2);
  EXPECT_TRUE(open->answered.empty()) << ::testing::PrintToString(open->answered);
  ASSERT_EQ(record_->rounds.size(), 1u);
  EXPECT_EQ(record_->rounds[0].sites.size(), 1u) << "the closed round took b's late update";

  // Round 2 counts b once it answers round 2 itself.
  answer(*a_, 2, 100);
  answer(*b_, 2, 50);
  run_->tick();
  ASSERT_EQ(record_->rounds.size(), 2u);
  EXPECT_EQ(record_->rounds[1].sites.size(), 2u);
  EXPECT_TRUE(record_->rounds[1].missing.empty()) << ::testing::PrintToString(record_->rounds[1].missing);
  EXPECT_TRUE(run_->done());
  EXPECT_EQ(record_->state, JobState::finished);
}

TEST_F(JobRunDeadlines, AMissingSiteIsWaitedForUntilTheStartTimeoutAndTheJobFailsNamingIt) {
  submit("min_sites: 2\n");
  auto& a = connect("a");  // b never connects
  ASSERT_TRUE(run_->start());
  ready(a, 100);
  run_->tick();
  EXPECT_EQ(run_->activity(), "waiting for sites (1 of min_sites 2 ready; b offline) before round 1");

  host_.advance(599s);
  run_->tick();
  EXPECT_FALSE(run_->done());
  EXPECT_EQ(record_->state, JobState::running);

  host_.advance(2s);
  run_->tick();
  EXPECT_TRUE(run_->done());
  EXPECT_EQ(record_->state, JobState::failed);
  EXPECT_EQ(record_->error, "only 1 of min_sites 2 ready after 600 s");
  EXPECT_TRUE(host_.sent_to("a", MessageType::round_task, 1).empty()) << "no round opened";
}

TEST_F(JobRunDeadlines, ASitePreparingIsWaitedForUpToTheRoundDeadlineThenLeftOut) {
  submit("min_sites: 1\n");
  auto& a = connect("a");
  connect("b");  // offered the job, never ready (computing soft labels, say)
  ASSERT_TRUE(run_->start());
  ready(a, 100);
  run_->tick();
  host_.advance(59s);
  run_->tick();
  EXPECT_TRUE(host_.sent_to("a", MessageType::round_task, 1).empty()) << "b was not given the grace";
  EXPECT_EQ(run_->activity(), "waiting for sites (1 of min_sites 1 ready; b preparing) before round 1");

  host_.advance(2s);
  run_->tick();
  EXPECT_EQ(host_.sent_to("a", MessageType::round_task, 1).size(), 1u);
  EXPECT_TRUE(host_.sent_to("b", MessageType::round_task, 1).empty());
  answer(a, 1, 100);
  run_->tick();
  ASSERT_EQ(record_->rounds.size(), 1u);
  EXPECT_TRUE(has(record_->rounds[0].missing, "b (preparing)")) << ::testing::PrintToString(record_->rounds[0].missing);
}

TEST_F(JobRunDeadlines, ASiteThatCannotRunTheJobIsNotWaitedForAndIsNamedWithItsFailureCode) {
  submit("min_sites: 1\n");
  auto& a = connect("a");
  auto& b = connect("b");
  ASSERT_TRUE(run_->start());
  ready(a, 100);
  protocol::JobFailed failed;
  failed.code = protocol::FailureCode::policy;
  failed.rule = "max_epsilon";
  failed.reason = "refused by this site's policy";
  say(b, MessageType::job_failed, 0, protocol::encode(protocol::Header{}, failed).body);
  run_->tick();  // no grace for b: it said it cannot run the job
  EXPECT_EQ(host_.sent_to("a", MessageType::round_task, 1).size(), 1u);
  EXPECT_TRUE(host_.sent_to("b", MessageType::round_task, 1).empty());
  answer(a, 1, 100);
  run_->tick();
  ASSERT_EQ(record_->rounds.size(), 1u);
  EXPECT_TRUE(has(record_->rounds[0].missing, "b (cannot run it (policy))"))
      << ::testing::PrintToString(record_->rounds[0].missing);
  EXPECT_EQ(host_.sites().in("b", "j").failure_code, protocol::FailureCode::policy);
  EXPECT_EQ(host_.sites().in("b", "j").failure_rule, "max_epsilon");
}

}  // namespace
}  // namespace fedda::coordinator
