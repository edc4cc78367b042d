// fedda-agent: the site agent, run by a hospital. `run` joins the consortium as a service,
// `check` validates a site before joining, `segment` segments one scan locally.
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "fedda/common/cli.h"
#include "fedda/common/log.h"
#include "fedda/common/version.h"
#include "fedda/models/engine.h"
#include "fedda/site_agent/agent.h"
#include "fedda/site_agent/site_config.h"

using namespace fedda;

namespace {
site_agent::Agent* running = nullptr;
void on_signal(int) {
  if (running) running->stop();
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fedda-agent: the fedda site agent, run by a hospital to segment and adapt models on local data.\n"
               "Only model weights, discriminator gradients and summary metrics ever leave the site."};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("fedda-agent ") + kVersion);
  std::string log_level = "info";
  cli::add_log_level(app, log_level);

  int rc = 0;
  std::string config_path;
  // Reads --config; on error logs it and sets the usage exit code.
  const auto load_config = [&]() -> std::optional<site_agent::SiteConfig> {
    auto config = site_agent::read_site_config(config_path);
    if (!config) {
      log::get("fedda-agent")->error("{}", config.error().message);
      rc = 2;
      return std::nullopt;
    }
    return std::move(*config);
  };
  auto* run = app.add_subcommand(
      "run",
      "Join the consortium as a long-running service: connect to the coordinator named in the site config, "
      "take part in its jobs, reconnect with backoff when it goes away. SIGTERM or SIGINT drains the running "
      "task and leaves cleanly. A subject that fails validation is skipped and reported by id.");
  run->add_option("--config", config_path, "site config (YAML); see configs/site.example.yaml")->required();
  run->callback([&]() {
    auto config = load_config();
    if (!config) return;
    site_agent::Agent agent(*config);
    running = &agent;
    std::signal(SIGTERM, on_signal);
    std::signal(SIGINT, on_signal);
    rc = agent.run();
    running = nullptr;
    if (rc == 3) {
      spdlog::shutdown();
      std::_Exit(3);
    }
  });

  auto* check = app.add_subcommand(
      "check",
      "Validate a site before joining: the config's settings, the device, the cache folder, and every scan "
      "(readable, 3-D, finite, FLAIR/T1/label geometry agreeing, labels in {0,1,2}). Lists each problem; "
      "exit code 0 when there is none, 1 otherwise.");
  check->add_option("--config", config_path, "site config (YAML)")->required();
  check->callback([&]() {
    auto config = load_config();
    if (!config) return;
    const auto report = site_agent::check_site(*config);
    std::cout << "site " << config->site_id << ": coordinator " << config->coordinator << ", data "
              << config->data.string() << ", device " << config->device << "\n"
              << report.usable << " of " << report.subjects << " subjects usable\n";
    for (const auto& p : report.problems) std::cout << "problem: " << p << "\n";
    rc = report.problems.empty() && report.usable > 0 ? 0 : 1;
  });

  std::string model, flair, t1, out, device = "cpu";
  auto* segment = app.add_subcommand(
      "segment",
      "Segment one scan locally: FLAIR and T1 of one subject (same geometry) in, a WMH label map out "
      "(0 background, 1 WMH) in the FLAIR's exact geometry. The model file carries its architecture and "
      "preprocessing grid.");
  segment->add_option("--model", model, "fedda model file (.pt)")->required();
  segment->add_option("--flair", flair, "FLAIR NIfTI")->required();
  segment->add_option("--t1", t1, "T1 NIfTI, same grid as the FLAIR")->required();
  segment->add_option("--out", out, "output segmentation (.nii or .nii.gz)")->required();
  segment->add_option("--device", device, "cpu or cuda")->capture_default_str();
  segment->callback([&]() {
    auto log = log::get("fedda-agent");
    if (auto st = models::segment_scan(model, flair, t1, out, device); !st) {
      log->error("{}", st.error().message);
      rc = 1;
      return;
    }
    log->info("wrote {}", out);
  });

  return cli::run(app, argc, argv, rc, "fedda-agent");
}
