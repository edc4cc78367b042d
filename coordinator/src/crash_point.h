#pragma once
// A test hook for crash consistency: with FEDDA_TEST_CRASH_AT=<point>:<round> in the
// environment the coordinator ends at once (_exit, no unwinding, nothing flushed beyond what was
// written) when it reaches that point of that round's save, so a test can restart it from exactly
// that state. Points: weights (round files written), rounds (rounds.jsonl written), state
// (state.json written), removed (the previous round's files removed). Without the variable it
// does nothing.

#include <cstdlib>
#include <string>
#include <unistd.h>

namespace fedda::coordinator {

inline void crash_point(const char* point, int round) {
  static const char* target = std::getenv("FEDDA_TEST_CRASH_AT");
  if (target && std::string(target) == std::string(point) + ":" + std::to_string(round)) ::_exit(86);
}

}  // namespace fedda::coordinator
