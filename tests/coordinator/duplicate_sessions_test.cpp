// Two agents with one site kit against a restart and a reconnect, as the coordinator judges
// hellos by the agents' instances (coordinator/src/duplicate_sessions.h).
#include <gtest/gtest.h>

#include "duplicate_sessions.h"

namespace fedda::coordinator {
namespace {

using Verdict = DuplicateSessions::Verdict;

TEST(DuplicateSessions, ARestartOrAReconnectTakesOverAndASecondAgentIsToldApart) {
  DuplicateSessions d;
  const DuplicateSessions::Session first{11, "10.0.0.1", 1000}, second{22, "10.0.0.2", 2000};
  EXPECT_EQ(d.hello("oslo", 11, nullptr), Verdict::take_over);   // first hello
  EXPECT_EQ(d.hello("oslo", 11, &first), Verdict::take_over);    // the same agent, a new connection
  // Another instance while the first's session lives: a restart, or a second agent.
  EXPECT_EQ(d.hello("oslo", 22, &first), Verdict::take_over);
  // The first says hello again while the second's session lives: two agents.
  DuplicateSessions::Session back;
  EXPECT_EQ(d.hello("oslo", 11, &second, &back), Verdict::second_agent);
  EXPECT_EQ(back.address, "10.0.0.1");
  EXPECT_EQ(back.connected_ms, 1000);
  d.refuse("oslo", 22);
  EXPECT_EQ(d.hello("oslo", 22, &first), Verdict::refused);  // and whenever it comes back
  EXPECT_EQ(d.hello("bergen", 22, nullptr), Verdict::take_over);  // refusal is per site
}

TEST(DuplicateSessions, ADeadAgentNeverTurnsARestartIntoADuplicate) {
  DuplicateSessions d;
  const DuplicateSessions::Session killed{11, "10.0.0.1", 1000}, restarted{33, "10.0.0.1", 5000};
  EXPECT_EQ(d.hello("oslo", 33, &killed), Verdict::take_over);
  // The restarted agent reconnects as often as it likes: never a second agent.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(d.hello("oslo", 33, &restarted), Verdict::take_over);
  // Once the site has no live session, what was replaced is forgotten.
  EXPECT_EQ(d.hello("oslo", 33, nullptr), Verdict::take_over);
  EXPECT_EQ(d.hello("oslo", 11, &restarted), Verdict::take_over);
}

TEST(DuplicateSessions, AgentsWithoutAnInstanceAreNeverJudged) {
  DuplicateSessions d;
  const DuplicateSessions::Session old_agent{0, "10.0.0.1", 1000}, new_agent{44, "10.0.0.2", 2000};
  EXPECT_EQ(d.hello("oslo", 0, &new_agent), Verdict::take_over);
  EXPECT_EQ(d.hello("oslo", 44, &old_agent), Verdict::take_over);
  EXPECT_EQ(d.hello("oslo", 0, &new_agent), Verdict::take_over);
}

TEST(DuplicateSessions, RefusalsAreBounded) {
  DuplicateSessions d;
  for (std::uint64_t i = 1; i <= DuplicateSessions::kMaxRemembered + 10; ++i) d.refuse("oslo", i);
  EXPECT_EQ(d.hello("oslo", 1, nullptr), Verdict::take_over);  // the oldest forgotten
  EXPECT_EQ(d.hello("oslo", DuplicateSessions::kMaxRemembered + 10, nullptr), Verdict::refused);
}

}  // namespace
}  // namespace fedda::coordinator
