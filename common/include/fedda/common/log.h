#pragma once
// Component loggers on top of spdlog.
//
// Every component logs through `fedda::log::get("component")`, which returns a shared,
// thread-safe spdlog logger writing one line per event to stderr as
// `[time] [level] [component] message`. `set_level` changes every logger at once, existing
// and future; it accepts spdlog's names: trace, debug, info, warn, error, critical, off.

#include <memory>
#include <string>

#include <spdlog/spdlog.h>

#include "fedda/common/result.h"

namespace fedda::log {

std::shared_ptr<spdlog::logger> get(const std::string& component);

// Sets the level of every logger; an unknown name is an error naming the choices.
Status set_level(const std::string& level);

}  // namespace fedda::log
