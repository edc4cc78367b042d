#pragma once
// Subcommands of fedda-agent, each registered on the CLI11 app by its add_<command>; `rc`
// receives the exit code (0 done, 1 failed, 2 usage). `segment` is in segment_command.h.

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "fedda/site_agent/site_config.h"

namespace fedda::site_agent::tools {

// The site config at `path`; on error logs it, sets `rc` to 2 and gives nothing.
std::optional<SiteConfig> load_config(const std::string& path, int& rc);

// The site's service and its administrator's commands (site_commands.cpp).
void add_run(CLI::App& app, int& rc);
void add_check(CLI::App& app, int& rc);
void add_pending(CLI::App& app, int& rc);
void add_decisions(CLI::App& app, int& rc);  // approve, refuse
void add_subjects(CLI::App& app, int& rc);
void add_status(CLI::App& app, int& rc);

// Label-free quality (quality_commands.cpp).
void add_monitor(CLI::App& app, int& rc);
void add_calibrate(CLI::App& app, int& rc);

}  // namespace fedda::site_agent::tools
