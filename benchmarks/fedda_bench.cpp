// fedda-bench: the figures of docs/performance.md, measured in one run.
//   training  slices/s of one optimiser step (forward, cross-entropy + soft Dice, backward, Adam)
//             for the paper's reference U-Net (transposed up-sampling) and fedda's default
//             (nearest + 1x1), batch 8 of 2x128x128, float32, NCHW; the default in channels-last
//             memory, under bfloat16 autocast, and at --precision (what fedda picks: precision.h)
//   inference slices/s of the default U-Net in inference mode (soft labelling, segmentation),
//             and under a plain no-grad guard (the lever inference mode is)
//   segment   one scan end to end through fedda's own path (read, preprocess, infer, write)
//   crop      with --crop-data: per clinic of real preprocessed scans, the share of pixels the
//             network sees when inference is cropped to the brain (training.h, brain_crop) at
//             several margins, its speed against the whole grid, and what it changes inside the
//             brain (largest change of p(WMH), voxels whose label flips, Dice of the two)
// Reports figures; it sets no thresholds (targets are in docs/performance.md). Row names are
// stable: benchmarks/side_by_side.sh reads them.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include "fedda/imaging/dataset.h"
#include "fedda/models/engine.h"
#include "fedda/models/precision.h"
#include "fedda/common/version.h"
#include "losses.h"
#include "model_io.h"
#include "networks.h"
#include "training.h"

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

// The crop rows: for each clinic folder of `data`, inference on its scans with `model` over the
// whole grid and cropped to the brain at each margin. Returns the process status.
// `pad` > 0 widens every slice by that many pixels of air (each channel's corner value) on each
// side: the field of view of a scanner that images more than the head, where the crop is in-plane.
int crop_rows(const fs::path& model, const fs::path& data, const std::vector<std::int64_t>& margins,
              const std::string& precision, std::int64_t pad) {
  auto m = models::load_for_inference(model, "cpu", precision);
  if (!m) {
    std::fprintf(stderr, "%s\n", m.error().message.c_str());
    return 1;
  }
  std::vector<fs::path> clinics;
  for (const auto& e : fs::directory_iterator(data)) {
    if (e.is_directory()) clinics.push_back(e.path());
  }
  std::sort(clinics.begin(), clinics.end());
  std::printf("crop to the brain: %s on %s (grid %lldx%lld%s)\n", model.string().c_str(), data.string().c_str(),
              static_cast<long long>(m->model.spec.grid.in_plane_size[0]), static_cast<long long>(m->model.spec.grid.in_plane_size[1]),
              pad > 0 ? (", widened by " + std::to_string(pad) + " pixels of air on each side").c_str() : "");
  std::printf("%-12s %6s %6s %9s %9s %8s %12s %10s %8s\n", "clinic", "scans", "margin", "pixels", "slices/s", "speedup",
              "max |dp|", "flipped", "Dice");
  for (const auto& clinic : clinics) {
    auto subjects = imaging::find_clinic_subjects(data, clinic.filename().string());
    if (!subjects || subjects->empty()) continue;
    std::vector<models::ScanSlices> scans;
    for (const auto& s : *subjects) {
      auto scan = models::load_scan(s, m->model.spec.grid, false);
      if (!scan) {
        std::fprintf(stderr, "%s\n", scan.error().message.c_str());
        return 1;
      }
      if (pad > 0) {
        const auto& im = scan->images;
        auto wide = im.select(2, 0).select(2, 0).view({im.size(0), im.size(1), 1, 1})
                        .expand({im.size(0), im.size(1), im.size(2) + 2 * pad, im.size(3) + 2 * pad}).clone();
        wide.slice(2, pad, pad + im.size(2)).slice(3, pad, pad + im.size(3)).copy_(im);
        auto brain = torch::zeros({im.size(0), im.size(2) + 2 * pad, im.size(3) + 2 * pad}, torch::kBool);
        brain.slice(1, pad, pad + im.size(2)).slice(2, pad, pad + im.size(3)).copy_(scan->brain);
        scan->images = wide;
        scan->brain = brain;
      }
      scans.push_back(std::move(*scan));
    }
    std::int64_t slices = 0;
    for (const auto& s : scans) slices += s.images.size(0);
    auto start = Clock::now();
    std::vector<torch::Tensor> whole;
    for (const auto& s : scans) whole.push_back(models::predict(m->model.net, s.images, m->device));
    const double whole_rate = slices / seconds_since(start);
    std::printf("%-12s %6zu %6s %8.1f%% %9.1f %8s %12s %10s %8s\n", clinic.filename().string().c_str(), scans.size(),
                "whole", 100.0, whole_rate, "1.00x", "-", "-", "-");
    for (const auto margin : margins) {
      double pixels = 0, all = 0, max_change = 0, flipped = 0, brain = 0, both = 0, either = 0;
      start = Clock::now();
      std::vector<torch::Tensor> cropped;
      for (const auto& s : scans) cropped.push_back(models::predict(m->model.net, s.images, m->device, 1.0, s.brain, margin));
      const double rate = slices / seconds_since(start);
      for (std::size_t i = 0; i < scans.size(); ++i) {
        const auto& b = scans[i].brain;
        const auto crop = models::brain_crop(b, std::int64_t{1} << m->model.spec.unet.depth, margin);
        pixels += crop.pixel_share(b) * b.numel();
        all += b.numel();
        const auto a = whole[i].masked_select(b), c = cropped[i].masked_select(b);
        max_change = std::max(max_change, (a - c).abs().max().item<double>());
        const auto sa = a > 0.5, sc = c > 0.5;
        flipped += (sa != sc).sum().item<double>();
        brain += b.sum().item<double>();
        both += (sa & sc).sum().item<double>();
        either += sa.sum().item<double>() + sc.sum().item<double>();
      }
      std::printf("%-12s %6zu %6lld %8.1f%% %9.1f %7.2fx %12.2e %9.4f%% %8.4f\n", clinic.filename().string().c_str(),
                  scans.size(), static_cast<long long>(margin), 100.0 * pixels / all, rate, rate / whole_rate, max_change,
                  100.0 * flipped / brain, either > 0 ? 2 * both / either : 1.0);
      std::fflush(stdout);
    }
  }
  return 0;
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
  std::string crop_data;
  std::vector<std::int64_t> margins{0, 8, 16, 32};
  app.add_option("--crop-data", crop_data,
                 "crop: clinics (fedda-sim generate) to run --model on, whole grid against cropped to the brain; only "
                 "these rows are printed");
  std::int64_t pad = 0;
  app.add_option("--pad", pad,
                 "crop: widen every slice by this many pixels of air on each side (a wider field of view; a multiple of "
                 "half the U-Net's stride)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--margins", margins, "crop: margins around the brain to measure (pixels)")->capture_default_str()->delimiter(',');
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(threads);
  if (allocator == "reuse") models::reuse_freed_tensor_memory();

  if (!crop_data.empty()) {
    if (model.empty()) {
      std::fprintf(stderr, "--crop-data needs --model\n");
      return 1;
    }
    std::printf("cpu: %s\nthreads %d\n", models::cpu_description().c_str(), threads);
    return crop_rows(model, crop_data, margins, precision, pad);
  }
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
