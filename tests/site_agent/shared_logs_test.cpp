// What of the agent's recent log lines may leave under policy share_logs (shared_logs.h), and
// the lines the log keeps for it (recent_log.h).
#include "shared_logs.h"

#include <gtest/gtest.h>

#include "fedda/common/log.h"

namespace fedda::site_agent {
namespace {

log::RecentLine line(const std::string& level, const std::string& message) {
  return {"2026-12-04 18:00:00.000", level, "agent", message};
}

const std::vector<log::RecentLine> kLines = {
    line("info", "job kd-a: prepared 4 subjects from /srv/wmh/amsterdam"),
    line("warning", "job kd-a: skipped subject 104: FLAIR unreadable at /srv/wmh/amsterdam/104/pre/FLAIR.nii.gz"),
    line("error", "job kd-b: refused by policy job_types"),
    line("info", "joined the consortium"),
    line("error", "subject 104. was seen twice; subject 1040 is not 104"),
};
const std::vector<std::string> kSubjects = {"104", "2"};

protocol::LogsRequest ask(const std::string& job, int tail = 100) { return {"logs-1", job, tail}; }

TEST(SharedLogs, NoneSendsNothingAndSaysWhy) {
  const auto reply = shared_log_lines(ask(""), "none", kLines, kSubjects, "/srv/wmh");
  EXPECT_TRUE(reply.lines.empty());
  EXPECT_EQ(reply.request, "logs-1");
  EXPECT_EQ(reply.refused, "this site shares no log lines (its policy share_logs: none)");
}

TEST(SharedLogs, ErrorsSendsWarningsAndErrorsRedacted) {
  const auto reply = shared_log_lines(ask(""), "errors", kLines, kSubjects, "/srv/wmh");
  ASSERT_TRUE(reply.refused.empty()) << reply.refused;
  ASSERT_EQ(reply.lines.size(), 3u);
  EXPECT_EQ(reply.lines[0], "[2026-12-04 18:00:00.000] [warning] [agent] job kd-a: skipped subject <subject>: FLAIR "
                            "unreadable at <data><path>");
  EXPECT_EQ(reply.lines[1], "[2026-12-04 18:00:00.000] [error] [agent] job kd-b: refused by policy job_types");
  // Whole words only: 1040 is another number; a sentence's full stop stays.
  EXPECT_EQ(reply.lines[2], "[2026-12-04 18:00:00.000] [error] [agent] subject <subject>. was seen twice; subject 1040 is "
                            "not <subject>");
  for (const auto& l : reply.lines) EXPECT_EQ(l.find("/srv"), std::string::npos) << l;
}

TEST(SharedLogs, JobGivesTheAskedJobsLinesAtEveryLevelAndNothingElse) {
  const auto of_a = shared_log_lines(ask("kd-a"), "job", kLines, kSubjects, "/srv/wmh");
  ASSERT_EQ(of_a.lines.size(), 2u);
  EXPECT_NE(of_a.lines[0].find("[info] [agent] job kd-a: prepared 4 subjects from <data><path>"), std::string::npos)
      << of_a.lines[0];
  // Under errors a job filter still gives that job's problems only.
  const auto errors_of_a = shared_log_lines(ask("kd-a"), "errors", kLines, kSubjects, "/srv/wmh");
  ASSERT_EQ(errors_of_a.lines.size(), 1u);
  EXPECT_NE(errors_of_a.lines[0].find("[warning]"), std::string::npos);
  // A job id inside a longer word is not that job.
  EXPECT_TRUE(shared_log_lines(ask("kd"), "job", kLines, kSubjects, "").lines.empty());
}

TEST(SharedLogs, TailKeepsTheLatestLinesWithinOneToAThousand) {
  const auto last = shared_log_lines(ask("", 1), "errors", kLines, kSubjects, "");
  ASSERT_EQ(last.lines.size(), 1u);
  EXPECT_NE(last.lines[0].find("was seen twice"), std::string::npos);
  EXPECT_EQ(shared_log_lines(ask("", 0), "errors", kLines, kSubjects, "").lines.size(), 1u);  // at least one
  std::vector<log::RecentLine> many(1500, line("error", "again"));
  EXPECT_EQ(shared_log_lines(ask("", 100000), "errors", many, {}, "").lines.size(), 1000u);
}

TEST(RecentLog, KeepsTheLatestLinesOfEveryLoggerWithTheirLevel) {
  log::get("before-keeping")->info("not kept: logged before keeping began");
  log::keep_recent_lines(3);
  log::get("before-keeping")->warn("kept from a logger made before");
  log::get("after-keeping")->error("kept with a newline\nin it");
  log::get("after-keeping")->info("third");
  log::get("after-keeping")->info("fourth");
  const auto lines = log::recent_lines();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0].level, "error");
  EXPECT_EQ(lines[0].component, "after-keeping");
  EXPECT_EQ(lines[0].message, "kept with a newline\\nin it");  // printable, as the log writes it
  EXPECT_EQ(lines[2].message, "fourth");
  EXPECT_EQ(lines[2].text().substr(lines[2].text().find("] [")), "] [info] [after-keeping] fourth");
}

}  // namespace
}  // namespace fedda::site_agent
