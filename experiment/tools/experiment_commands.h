#pragma once
// fedda-sim's subcommands that run the paper's experiment (fedda::experiment), each registered
// on the CLI11 app; `rc` receives the exit code. The generator's live in simulation/tools.

#include <CLI/CLI.hpp>

namespace fedda::experiment::tools {

void add_centralized(CLI::App& app, int& rc);
void add_recipe(CLI::App& app, int& rc);
void add_consortium(CLI::App& app, int& rc);
void add_experiment(CLI::App& app, int& rc);

}  // namespace fedda::experiment::tools
