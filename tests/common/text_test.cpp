// Strings from elsewhere: UTF-8 held strictly, cut on character boundaries, and written to logs
// in a printable form; and the per-peer budget of log lines.
#include "fedda/common/text.h"

#include <gtest/gtest.h>

#include "fedda/common/log.h"

namespace fedda::text {
namespace {

TEST(Text, Utf8IsHeldToRfc3629) {
  EXPECT_TRUE(valid_utf8(""));
  EXPECT_TRUE(valid_utf8("utrecht"));
  EXPECT_TRUE(valid_utf8("\u00e9\u4e2d\U0001F600"));  // 2, 3 and 4 bytes
  EXPECT_FALSE(valid_utf8("float32\xff"));
  EXPECT_FALSE(valid_utf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(valid_utf8("\xe0\x80\xaf"));      // overlong, three bytes
  EXPECT_FALSE(valid_utf8("\xed\xa0\x80"));      // a surrogate
  EXPECT_FALSE(valid_utf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(valid_utf8("\xe4\xb8"));          // cut short
  EXPECT_FALSE(valid_utf8("\x80"));              // a lone continuation byte
}

TEST(Text, ControlCharactersAreFoundTabAside) {
  EXPECT_FALSE(has_control("a\tb \u00e9"));
  EXPECT_TRUE(has_control("a\nb"));
  EXPECT_TRUE(has_control("a\x1b[2J"));
  EXPECT_TRUE(has_control("a\x7f"));
  EXPECT_TRUE(has_control("a\u0085"));  // NEL, a C1 control
}

TEST(Text, APrefixNeverSplitsACharacter) {
  std::string s = "x";
  for (int i = 0; i < 400; ++i) s += "\u00e9\u4e2d";
  const auto cut = utf8_prefix(s, 1000);
  EXPECT_LE(cut.size(), 1000u);
  EXPECT_GE(cut.size(), 997u);
  EXPECT_TRUE(valid_utf8(cut));
  EXPECT_EQ(utf8_prefix("abc", 10), "abc");
  EXPECT_EQ(utf8_prefix("\u4e2d", 2), "");
}

TEST(Text, PrintableEscapesWhatCouldForgeALine) {
  EXPECT_EQ(printable("site utrecht: ok"), "site utrecht: ok");
  EXPECT_EQ(printable("a\nb\r\tc"), "a\\nb\\r\\tc");
  EXPECT_EQ(printable("cpu\xff\x1b[2J"), "cpu\\xff\\x1b[2J");
  EXPECT_EQ(printable("\u00e9\u0085"), "\u00e9\\xc2\\x85");
  EXPECT_TRUE(valid_utf8(printable("\xc0\xaf\xed\xa0\x80")));
}

TEST(LogBudget, BoundsLinesPerKeyAndInAllAndCountsWhatItHeldBack) {
  log::Budget budget(2, 5, 4);
  const auto t0 = log::Budget::Clock::now();
  EXPECT_EQ(budget.take("a", t0), 0);
  EXPECT_EQ(budget.take("a", t0), 0);
  EXPECT_FALSE(budget.take("a", t0));
  EXPECT_FALSE(budget.take("a", t0));
  EXPECT_EQ(budget.take("b", t0), 0);
  EXPECT_EQ(budget.take("b", t0), 0);
  EXPECT_EQ(budget.take("c", t0), 0);
  EXPECT_FALSE(budget.take("d", t0)) << "the total of 5 a minute is spent";
  // A minute later: "a" may write again and learns what was held back.
  const auto t1 = t0 + std::chrono::seconds(61);
  EXPECT_EQ(budget.take("a", t1), 2);
  // A flood of fresh keys within one minute is remembered up to max_keys only.
  for (int i = 0; i < 1000; ++i) budget.take("k" + std::to_string(i), t1);
  EXPECT_LE(budget.remembered(), 4u);
}

// The one way numbers are written into messages and files (four copies of it before).
TEST(Text, NumbersAreWrittenWithTheirSignificantDigitsInTheCLocale) {
  EXPECT_EQ(number(0.5), "0.5");
  EXPECT_EQ(number(1e-5), "1e-05");
  EXPECT_EQ(number(1234567.0), "1.23457e+06");
  EXPECT_EQ(number(1234567.0, 10), "1234567");
  EXPECT_EQ(number(0.1 + 0.2, 10), "0.3");
  EXPECT_EQ(number(-2.0), "-2");
}

}  // namespace
}  // namespace fedda::text
