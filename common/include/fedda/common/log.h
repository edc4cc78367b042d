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

#include <memory>
#include <string>

#include <spdlog/spdlog.h>

#include "fedda/common/result.h"

namespace fedda::log {

std::shared_ptr<spdlog::logger> get(const std::string& component);

// Whether stderr is the systemd journal's stream (JOURNAL_STREAM matches its device and inode).
bool stderr_is_journal();

// Sets the level of every logger; an unknown name is an error naming the choices.
Status set_level(const std::string& level);

}  // namespace fedda::log
