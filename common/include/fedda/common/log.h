#pragma once
// Component loggers on top of spdlog.
//
// Every component logs through `fedda::log::get("component")`, which returns a shared,
// thread-safe spdlog logger writing one line per event to stderr as
// `[time] [level] [component] message`. `set_level` changes every logger at once, existing
// and future; it accepts spdlog's names: trace, debug, info, warn, error, critical, off.
//
// Under systemd, when stderr is the journal (JOURNAL_STREAM names it), lines carry no time of
// their own (journald stamps them) and start with their syslog priority instead:
// `<6>[component] message` (debug 7, info 6, warn 4, error 3, critical 2), which journald files
// under that priority (`journalctl -p warning` shows warnings and worse).
//
// Every message is written in its printable form (text::printable): a newline, an escape
// sequence or a byte that is not UTF-8 in a string from elsewhere appears as "\n" or "\xNN" and
// cannot forge a line.

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <spdlog/spdlog.h>

#include "fedda/common/result.h"

namespace fedda::log {

std::shared_ptr<spdlog::logger> get(const std::string& component);

// Whether stderr is the systemd journal's stream (JOURNAL_STREAM matches its device and inode).
bool stderr_is_journal();

// Sets the level of every logger; an unknown name is an error naming the choices.
Status set_level(const std::string& level);

// How many lines a peer may write to a log: at most `per_key` a minute for each key (a site, a
// peer's address) and `total` a minute in all, so a flood of messages or of fresh keys costs
// lines at a bounded rate. At most `max_keys` keys are remembered (the oldest minute's are
// forgotten first), so a flood of keys cannot grow memory. Thread-safe.
class Budget {
 public:
  using Clock = std::chrono::steady_clock;
  explicit Budget(int per_key = 20, int total = 200, std::size_t max_keys = 4096);
  // Empty when the line is to be held back; otherwise how many lines of `key` were held back
  // since the last one written (say so in the line when it is not 0).
  std::optional<int> take(const std::string& key, Clock::time_point now = Clock::now());
  std::size_t remembered();  // keys held now (at most max_keys)

 private:
  struct Window {
    Clock::time_point start;
    int written = 0, held = 0;
  };
  std::mutex mutex_;
  int per_key_, total_;
  std::size_t max_keys_;
  std::map<std::string, Window> keys_;
  Window all_;
};

}  // namespace fedda::log
