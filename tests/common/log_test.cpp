#include "fedda/common/log.h"

#include <gtest/gtest.h>

namespace fedda::log {
namespace {

TEST(Log, LevelAppliesToExistingAndNewLoggers) {
  auto before = get("test-before");
  ASSERT_TRUE(set_level("warn"));
  EXPECT_EQ(before->level(), spdlog::level::warn);
  EXPECT_EQ(get("test-after")->level(), spdlog::level::warn);
  ASSERT_TRUE(set_level("info"));
  EXPECT_EQ(before->level(), spdlog::level::info);
}

TEST(Log, UnknownLevelIsAnErrorNamingTheChoices) {
  auto st = set_level("loud");
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("loud"), std::string::npos);
  EXPECT_NE(st.error().message.find("debug"), std::string::npos);
  EXPECT_TRUE(set_level("off"));
  ASSERT_TRUE(set_level("info"));
}

TEST(Log, SameComponentSameLogger) { EXPECT_EQ(get("imaging").get(), get("imaging").get()); }

}  // namespace
}  // namespace fedda::log
