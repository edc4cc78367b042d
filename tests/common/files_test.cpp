#include "fedda/common/files.h"

#include <gtest/gtest.h>

#include "support/test_support.h"

namespace fedda::files {
namespace {

TEST(Files, WriteAtomicallyReplacesWholeFile) {
  testing::ScratchDir dir;
  ASSERT_TRUE(write_atomically(dir / "state.json", "first"));
  ASSERT_TRUE(write_atomically(dir / "state.json", "second, longer"));
  auto back = read_all(dir / "state.json");
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, "second, longer");
}

TEST(Files, FailedWriteLeavesOldFileAndNoTemporary) {
  testing::ScratchDir dir;
  ASSERT_TRUE(write_atomically(dir / "keep.txt", "old"));
  auto st = write_via_temporary(dir / "keep.txt", [](const std::filesystem::path& tmp) -> Status {
    std::ofstream(tmp) << "partial";
    return make_error("simulated failure");
  });
  EXPECT_FALSE(st);
  EXPECT_EQ(*read_all(dir / "keep.txt"), "old");
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    (void)e;
    ++n;
  }
  EXPECT_EQ(n, 1);
}

TEST(Files, CreatesMissingFolders) {
  testing::ScratchDir dir;
  ASSERT_TRUE(write_atomically(dir.path() / "a" / "b" / "c.txt", "x"));
  EXPECT_EQ(*read_all(dir.path() / "a" / "b" / "c.txt"), "x");
}

TEST(Files, ReadingMissingFileNamesIt) {
  auto r = read_all("/nonexistent/fedda/file.txt");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("/nonexistent/fedda/file.txt"), std::string::npos);
}

}  // namespace
}  // namespace fedda::files
