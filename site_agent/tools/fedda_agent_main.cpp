// fedda-agent: the site agent. Today: `segment`, local segmentation of one scan with a model.
#include <string>

#include <CLI/CLI.hpp>

#include "fedda/common/log.h"
#include "fedda/models/engine.h"

using namespace fedda;

int main(int argc, char** argv) {
  CLI::App app{"fedda-agent: the fedda site agent, run by a hospital to segment and adapt models on local data."};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")->capture_default_str();
  app.parse_complete_callback([&]() {
    if (auto st = log::set_level(log_level); !st) throw CLI::ValidationError("--log-level", st.error().message);
  });

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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    log::get("fedda-agent")->error("unexpected error: {}", e.what());
    return 1;
  }
  return rc;
}
