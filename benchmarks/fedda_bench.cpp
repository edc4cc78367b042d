// fedda-bench: the figures of docs/performance.md, measured in one run.
//   training  slices/s of one optimiser step (forward, cross-entropy + soft Dice, backward, Adam)
//             for the paper's reference U-Net (transposed up-sampling) and fedda's default
//             (nearest + 1x1), batch 8 of 2x128x128, float32, NCHW; the default in channels-last
//             memory, under bfloat16 autocast, and at --precision (what fedda picks: precision.h)
//   inference slices/s of the default U-Net in inference mode (soft labelling, segmentation),
//             and under a plain no-grad guard (the lever inference mode is)
//   segment   one scan end to end through fedda's own path (read, preprocess, infer, write)
// Reports figures; it sets no thresholds (targets are in docs/performance.md). Row names are
// stable: benchmarks/side_by_side.sh reads them.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include "fedda/models/engine.h"
#include "fedda/models/precision.h"
#include "fedda/common/version.h"
#include "losses.h"
#include "model_io.h"
#include "networks.h"

namespace fs = std::filesystem;
using namespace fedda;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Slices per second of `steps` timed training steps after `warmup` untimed ones.
double training_rate(const models::UNetSpec& spec, int batch, int size, int warmup, int steps,
                     const models::PrecisionChoice& precision) {
  torch::manual_seed(1);
  models::UNet net(spec);
  net->train();
  net->set_precision(precision);  // bfloat16 autocast and/or channels-last, as training sets them
  auto images = torch::randn({batch, spec.in_channels, size, size});
  torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(1e-3));
  const auto labels = (torch::rand({batch, size, size}) < 0.02).to(torch::kInt64);
  Clock::time_point start;
  for (int i = 0; i < warmup + steps; ++i) {
    if (i == warmup) start = Clock::now();
    adam.zero_grad();
    auto loss = models::supervised_loss(net->forward(images), labels, 1.0);
    loss.backward();
    adam.step();
  }
  return batch * steps / seconds_since(start);
}

double inference_rate(const models::UNetSpec& spec, int batch, int size, int warmup, int steps, bool inference_mode,
                      const models::PrecisionChoice& precision = {}) {
  torch::manual_seed(1);
  models::UNet net(spec);
  net->eval();
  net->set_precision(precision);
  std::optional<torch::InferenceMode> inference;
  std::optional<torch::NoGradGuard> no_grad;
  if (inference_mode) {
    inference.emplace();
  } else {
    no_grad.emplace();
  }
  const auto images = torch::randn({batch, spec.in_channels, size, size});
  Clock::time_point start;
  for (int i = 0; i < warmup + steps; ++i) {
    if (i == warmup) start = Clock::now();
    auto p = torch::softmax(net->forward(images), 1);
  }
  return batch * steps / seconds_since(start);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fedda-bench: training-step, inference and end-to-end segmentation speed (docs/performance.md)"};
  app.set_version_flag("--version", std::string("fedda-bench ") + kVersion);
  int threads = 2, batch = 8, size = 128, warmup = 3, steps = 20;
  std::string model, flair, t1, out = (fs::temp_directory_path() / "fedda-bench-seg.nii.gz").string();
  app.add_option("--threads", threads, "LibTorch intra-op threads")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--batch", batch, "slices per step")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--size", size, "slice size (pixels, divisible by 16)")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "untimed steps first")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--steps", steps, "timed steps")->capture_default_str()->check(CLI::PositiveNumber);
  std::string only, allocator = "reuse";
  app.add_option("--allocator", allocator, "reuse: fedda's setting (models::reuse_freed_tensor_memory); glibc: the C library's defaults")
      ->capture_default_str()
      ->check(CLI::IsMember({"reuse", "glibc"}));
  std::string precision = "auto";
  app.add_option("--precision", precision,
                 "auto, float32 or bfloat16: the precision of the 'fedda at --precision' rows (auto: what fedda picks "
                 "on this processor)")
      ->capture_default_str()->check(CLI::IsMember(models::precision_names()));
  app.add_option("--only", only, "run only the rows whose name contains this text (e.g. 'fedda default')");
  app.add_option("--model", model, "segment: a model file (with --flair and --t1)");
  app.add_option("--flair", flair, "segment: FLAIR scan");
  app.add_option("--t1", t1, "segment: T1 scan");
  app.add_option("--out", out, "segment: where the segmentation goes")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(threads);
  if (allocator == "reuse") models::reuse_freed_tensor_memory();

  models::UNetSpec reference;  // the paper's standard U-Net
  reference.upsample = "transposed";
  models::UNetSpec fedda_default;  // nearest + 1x1
  auto chosen = models::choose_precision(precision, "cpu");
  if (!chosen) {
    std::fprintf(stderr, "%s\n", chosen.error().message.c_str());
    return 1;
  }
  auto bf16 = models::choose_precision("bfloat16", "cpu").value();
  models::PrecisionChoice f32;
  models::PrecisionChoice f32_nhwc;
  f32_nhwc.channels_last = true;
  std::printf("cpu: %s\n", models::cpu_description().c_str());
  std::printf("--precision %s: %s%s (%s)\n", precision.c_str(), chosen->name().c_str(),
              chosen->channels_last ? " channels-last" : "", chosen->reason.c_str());
  std::printf("threads %d, allocator %s, batch %d of %dx%dx%d, %d timed steps after %d\n", threads, allocator.c_str(), batch,
              reference.in_channels, size, size, steps, warmup);
  const auto row = [&](const std::string& name, const std::function<double()>& measure) {
    if (name.find(only) == std::string::npos) return;
    std::printf("%-48s %10.1f\n", name.c_str(), measure());
    std::fflush(stdout);
  };
  std::printf("%-48s %10s\n", "measurement", "slices/s");
  row("training step, reference U-Net (transposed)", [&] { return training_rate(reference, batch, size, warmup, steps, f32); });
  row("training step, fedda default (nearest+1x1)", [&] { return training_rate(fedda_default, batch, size, warmup, steps, f32); });
  row("training step, fedda default, channels-last", [&] { return training_rate(fedda_default, batch, size, warmup, steps, f32_nhwc); });
  row("training step, fedda default, bfloat16 autocast", [&] { return training_rate(fedda_default, batch, size, warmup, steps, bf16); });
  row("training step, fedda at --precision (" + chosen->name() + ")",
      [&] { return training_rate(fedda_default, batch, size, warmup, steps, *chosen); });
  row("inference, fedda default (inference mode)", [&] { return inference_rate(fedda_default, batch, size, warmup, steps, true); });
  row("inference, fedda default (no-grad guard)", [&] { return inference_rate(fedda_default, batch, size, warmup, steps, false); });
  row("inference, fedda default, bfloat16 autocast", [&] { return inference_rate(fedda_default, batch, size, warmup, steps, true, bf16); });
  row("inference, fedda at --precision (" + chosen->name() + ")",
      [&] { return inference_rate(fedda_default, batch, size, warmup, steps, true, *chosen); });
  if (!model.empty()) {
    if (flair.empty() || t1.empty()) {
      std::fprintf(stderr, "--model needs --flair and --t1\n");
      return 1;
    }
    const auto start = Clock::now();
    if (auto st = models::segment_scan(model, flair, t1, out, "cpu", precision); !st) {
      std::fprintf(stderr, "%s\n", st.error().message.c_str());
      return 1;
    }
    std::printf("%-48s %9.2f s\n", "segment one scan end to end", seconds_since(start));
  }
  return 0;
}
