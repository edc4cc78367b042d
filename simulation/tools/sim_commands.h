#pragma once
// Subcommands of fedda-sim, each registered on the CLI11 app; `rc` receives the exit code.

#include <CLI/CLI.hpp>

namespace fedda::simulation::tools {

void add_generate(CLI::App& app, int& rc);
void add_preview(CLI::App& app, int& rc);
void add_threshold_baseline(CLI::App& app, int& rc);

}  // namespace fedda::simulation::tools
