// fedda-agent: the site agent. Today: `segment`, local segmentation of one scan with a model.
#include <string>

#include <CLI/CLI.hpp>

#include "fedda/common/cli.h"
#include "fedda/common/log.h"
#include "fedda/models/engine.h"

using namespace fedda;

int main(int argc, char** argv) {
  CLI::App app{"fedda-agent: the fedda site agent, run by a hospital to segment and adapt models on local data."};
  app.require_subcommand(1);
  std::string log_level = "info";
  cli::add_log_level(app, log_level);

  int rc = 0;
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
