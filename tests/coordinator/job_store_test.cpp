// The coordinator's job queue on disk: what was submitted survives a restart in its order and
// state, and a submission that clashes with the queue is refused by name.
#include "job_store.h"

#include <gtest/gtest.h>

#include "fedda/common/files.h"
#include "support/test_support.h"

namespace fedda::coordinator {
namespace {

namespace fs = std::filesystem;

JobDefinition kd_job(const std::string& id, const std::string& teacher) {
  auto d = parse_job_file("id: " + id + "\ntype: kd\nteacher: " + teacher + "\nsource: utrecht\nsites: [utrecht, amsterdam]\n"
                          "rounds: 4\nmin_sites: 2\n", "job.yaml");
  EXPECT_TRUE(d) << d.error().message;
  return *d;
}

TEST(JobStore, QueuedAndRunningJobsSurviveAReopenInTheirOrder) {
  testing::ScratchDir dir;
  {
    auto store = JobStore::open(dir.path()).value();
    auto* teacher = store->add(parse_job_file("id: t\ntype: teacher\nsource: utrecht\nsites: [utrecht]\n", "t.yaml").value(),
                               "alice", "id: t\n").value();
    ASSERT_TRUE(store->add(kd_job("kd", "job:t"), "bob", "").ok());
    ASSERT_TRUE(store->set_state(*teacher, JobState::running));
    RoundRecord r;
    r.round = 1;
    r.seconds = 2.5;
    r.sites.push_back({"utrecht", 100, 8, 0.25, 2.0, 1000, 0.1, "float32", -1.0, 0.0});
    r.missing = {"amsterdam (late)"};
    teacher->rounds.push_back(r);
    // Rounds that were evaluated carry each evaluation site's test Dice (evaluate_every).
    for (int k = 2; k <= 12; ++k) {
      RoundRecord e = r;
      e.round = k;
      e.test_dsc = {{"amsterdam", 0.05 * k}, {"utrecht", 0.0}};
      teacher->rounds.push_back(e);
    }
    teacher->finished_round = 12;
    ASSERT_TRUE(store->save(*teacher));
  }
  auto store = JobStore::open(dir.path()).value();
  const auto jobs = store->ordered();
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[0]->id(), "t");
  EXPECT_EQ(jobs[0]->state, JobState::running);
  EXPECT_EQ(jobs[0]->submitted_by, "alice");
  EXPECT_EQ(jobs[0]->finished_round, 12);
  ASSERT_EQ(jobs[0]->rounds.size(), 12u);
  EXPECT_EQ(jobs[0]->rounds[0].missing, std::vector<std::string>{"amsterdam (late)"});
  EXPECT_EQ(jobs[0]->rounds[0].sites[0].bytes_up, 1000);
  EXPECT_TRUE(jobs[0]->rounds[0].test_dsc.empty());
  for (int k = 2; k <= 12; ++k) {
    const auto& dsc = jobs[0]->rounds[k - 1].test_dsc;
    ASSERT_EQ(dsc.size(), 2u) << "round " << k;
    EXPECT_DOUBLE_EQ(dsc.at("amsterdam"), 0.05 * k);
    EXPECT_DOUBLE_EQ(dsc.at("utrecht"), 0.0);
  }
  EXPECT_EQ(jobs[1]->id(), "kd");
  EXPECT_EQ(jobs[1]->state, JobState::queued);
  EXPECT_EQ(jobs[1]->definition.teacher, "job:t");
  EXPECT_EQ(store->teacher_path(*jobs[1]), dir.path() / "jobs" / "t" / "model.pt");
  EXPECT_TRUE(fs::exists(dir / "jobs" / "t" / "rounds.jsonl"));
  EXPECT_EQ(files::read_all(dir / "jobs" / "t" / "job.yaml").value(), "id: t\n");
  // A job added after the reopen goes to the end of the queue.
  ASSERT_TRUE(store->add(kd_job("kd-2", "job:t"), "bob", "").ok());
  EXPECT_GT(store->find("kd-2")->order, store->find("kd")->order);
}

// Regression (first-month issue): after `resume`, `status` no longer showed that the job had
// been aborted. Each step is kept, with who asked, across a reopen.
TEST(JobStore, KeepsAJobsHistoryWithWhoAskedAcrossAReopen) {
  testing::ScratchDir dir;
  {
    auto store = JobStore::open(dir.path()).value();
    auto* job = store->add(kd_job("kd", "/models/t.pt"), "alice", "").value();
    ASSERT_TRUE(store->set_state(*job, JobState::running));
    ASSERT_TRUE(store->set_state(*job, JobState::running));  // the coordinator restarted
    ASSERT_TRUE(store->set_state(*job, JobState::aborted, "aborted by bob", "bob"));
    ASSERT_TRUE(store->set_state(*job, JobState::queued, {}, "carol"));
  }
  auto store = JobStore::open(dir.path()).value();
  const auto& h = store->find("kd")->history;
  ASSERT_EQ(h.size(), 5u);
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"submitted", "alice"}, {"started", ""}, {"continued after a restart", ""}, {"aborted", "bob"}, {"resumed", "carol"}};
  for (std::size_t i = 0; i < h.size(); ++i) {
    EXPECT_EQ(h[i].what, expected[i].first) << i;
    EXPECT_EQ(h[i].by, expected[i].second) << i;
    EXPECT_GT(h[i].ms, 0);
  }
}

TEST(JobStore, RefusesAnIdInUseAndATeacherJobItDoesNotKnow) {
  testing::ScratchDir dir;
  auto store = JobStore::open(dir.path()).value();
  ASSERT_TRUE(store->add(kd_job("kd", "/models/t.pt"), "bob", "").ok());
  auto again = store->add(kd_job("kd", "/models/t.pt"), "bob", "");
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message.find("job 'kd' exists already (queued)"), std::string::npos) << again.error().message;
  auto orphan = store->add(kd_job("kd-3", "job:nowhere"), "bob", "");
  ASSERT_FALSE(orphan);
  EXPECT_NE(orphan.error().message.find("teacher: no job 'nowhere'"), std::string::npos) << orphan.error().message;
}

TEST(JobStore, KeepsATeacherModelSentWithManyJobsOnce) {
  testing::ScratchDir dir;
  auto store = JobStore::open(dir.path()).value();
  const std::string model(4096, '\x2a');
  auto* a = store->add(kd_job("a", "teacher.pt"), "bob", "", model).value();
  auto* b = store->add(kd_job("b", "teacher.pt"), "bob", "", model).value();
  EXPECT_EQ(store->teacher_path(*a), store->teacher_path(*b));
  EXPECT_EQ(files::read_all(store->teacher_path(*a)).value(), model);
  int files_kept = 0;
  for (const auto& e : fs::directory_iterator(dir / "teachers")) files_kept += e.is_regular_file();
  EXPECT_EQ(files_kept, 1);
}

TEST(JobStore, AnUnreadableRecordIsNamedNotSkipped) {
  testing::ScratchDir dir;
  {
    auto store = JobStore::open(dir.path()).value();
    ASSERT_TRUE(store->add(kd_job("kd", "/t.pt"), "bob", "").ok());
  }
  ASSERT_TRUE(files::write_atomically(dir / "jobs" / "kd" / "state.json", "{\"job\": "));
  auto store = JobStore::open(dir.path());
  ASSERT_FALSE(store);
  EXPECT_NE(store.error().message.find("jobs/kd/state.json"), std::string::npos) << store.error().message;
}

}  // namespace
}  // namespace fedda::coordinator
