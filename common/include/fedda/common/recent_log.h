#pragma once
// The latest lines every component logged, kept in memory for a service that may be asked for
// them (fedda-agent answers `fedda-admin logs SITE` from them, under its site's policy). Off until
// keep_recent_lines is called; then every logger, existing and future, also writes there.

#include <cstddef>
#include <string>
#include <vector>

namespace fedda::log {

struct RecentLine {
  std::string time;       // UTC, "2026-12-04 18:30:01.250"
  std::string level;      // spdlog's name: trace, debug, info, warning, error, critical
  std::string component;  // the logger's
  std::string message;    // in its printable form (log.h)
  // "[time] [level] [component] message", as the log writes it.
  std::string text() const;
};

// Keeps the latest `capacity` lines. Call it once, before the threads that log start (it adds
// a sink to the loggers that exist).
void keep_recent_lines(std::size_t capacity);
// The lines kept, oldest first; empty when keep_recent_lines was not called. Thread-safe.
std::vector<RecentLine> recent_lines();

}  // namespace fedda::log
