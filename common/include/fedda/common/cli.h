#pragma once
// Command-line conventions shared by fedda's executables (CLI11, header-only).

#include <exception>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "fedda/common/log.h"

namespace fedda::cli {

// Adds the global --log-level option; it takes effect as soon as parsing completes, before any
// subcommand runs. An unknown level is a usage error that lists the choices.
inline void add_log_level(CLI::App& app, std::string& level) {
  app.add_option("--log-level", level, "trace, debug, info, warn, error, critical or off")->capture_default_str();
  app.parse_complete_callback([&level]() {
    if (auto st = log::set_level(level); !st) throw CLI::ValidationError("--log-level", st.error().message);
  });
}

// The subcommands chosen on the command line, outermost first ("experiment"; "" for none).
inline std::string chosen_command(CLI::App& app) {
  std::string out;
  for (CLI::App* sub = &app; !sub->get_subcommands().empty();) {
    sub = sub->get_subcommands().front();
    out += (out.empty() ? "" : " ") + sub->get_name();
  }
  return out;
}

// A first word that names no subcommand of `app`: "unknown command 'WORD' (a, b, c)"; empty when
// the first word left over is an option or there is none (CLI11 alone says only that a
// subcommand is required).
inline std::string unknown_command(CLI::App& app) {
  const auto left = app.remaining();
  if (left.empty() || left.front().empty() || left.front()[0] == '-') return {};
  std::string names;
  for (const auto* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    names += (names.empty() ? "" : ", ") + sub->get_name();
  }
  if (names.empty()) return {};
  return "unknown command '" + left.front() + "' (" + names + ")";
}

// The exit code of a usage error (an unknown option or command, a value out of its range, a
// required option missing), the same for every fedda executable and distinct from the codes the
// commands themselves return (1 a failure, 2-4 as each command's help says): sysexits' EX_USAGE.
inline constexpr int kUsageExitCode = 64;

// Parses `argv` and runs the chosen subcommand's callback. Returns 0 for --help and --version,
// kUsageExitCode for a usage error (a first word that is no command is named, with the commands), 1 for an
// exception nobody caught (a fault: an expected failure is an Error), logged as "COMPONENT
// COMMAND: internal error: WHAT", else `rc`, the code the callback set.
inline int run(CLI::App& app, int argc, char** argv, const int& rc, const std::string& component) {
  const auto internal = [&](const std::string& what) {
    const auto command = chosen_command(app);
    log::get(component)->error("{}{}: internal error: {}", component, command.empty() ? "" : " " + command, what);
    return 1;
  };
  // CLI11 prints the message; --help and --version arrive as ParseErrors whose code is 0 (Success).
  const auto usage = [&app](const CLI::ParseError& e) { return app.exit(e) == 0 ? 0 : kUsageExitCode; };
  try {
    app.parse(argc, argv);
  } catch (const CLI::RequiredError& e) {
    if (const auto unknown = chosen_command(app).empty() ? unknown_command(app) : std::string(); !unknown.empty()) {
      std::cerr << component << ": " << unknown << "\nRun with --help for more information.\n";
      return kUsageExitCode;
    }
    return usage(e);
  } catch (const CLI::ParseError& e) {
    return usage(e);
  } catch (const std::exception& e) {
    return internal(e.what());
  } catch (...) {
    return internal("an exception of unknown type");
  }
  return rc;
}

}  // namespace fedda::cli
