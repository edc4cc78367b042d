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
//   real      with --slices-data and --slices-clinic, the training and inference rows run on a
//             simulated clinic's real preprocessed slices (training batches from its slices with
//             brain, inference over every slice) instead of random tensors, and two rows more run
//             fedda's predict (at --precision) over the clinic's scans: on the whole grid, and
//             cropped to the brain;
//             --slices-out writes the same slices for benchmarks/reference_unet.py --slices
// Reports figures; it sets no thresholds (targets are in docs/performance.md). Row names are
// stable: benchmarks/side_by_side.sh reads them.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "fedda/imaging/dataset.h"
#include "fedda/models/engine.h"
#include "fedda/models_core/precision.h"
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

// What the rows compute on: batches of random tensors (one batch, as a PyTorch benchmark would)
// or of a clinic's real slices (RealSlices), cycled through.
struct Inputs {
  std::vector<torch::Tensor> train_images, train_labels;  // [B, 2, S, S] float32, [B, S, S] int64
  std::vector<torch::Tensor> infer_images;                // [B, 2, S, S]
};

Inputs random_inputs(int batch, int size) {
  torch::manual_seed(1);
  Inputs in;
  in.train_images = in.infer_images = {torch::randn({batch, 2, size, size})};
  in.train_labels = {(torch::rand({batch, size, size}) < 0.02).to(torch::kInt64)};
  return in;
}

// The clinics of `data` that hold subjects, sorted (imaging::find_subjects); nothing, with the
// reason on stderr, when there are none.
std::vector<std::string> clinic_names(const fs::path& data) {
  std::vector<std::string> names;
  auto subjects = imaging::find_subjects(data);
  if (!subjects) {
    std::fprintf(stderr, "%s\n", subjects.error().message.c_str());
    return names;
  }
  for (const auto& s : *subjects) {
    if (names.empty() || names.back() != s.clinic) names.push_back(s.clinic);
  }
  return names;
}

// A clinic's scans as fedda preprocesses them, on a size x size grid over fedda-sim's 192 mm
// field of view; every slice, in scan order.
struct RealSlices {
  torch::Tensor images, labels, brain;  // [N, 2, S, S] float32; [N, S, S] int64 (1 = WMH, else 0); [N, S, S] bool
  std::vector<std::int64_t> brain_slices;                     // training draws from these, as the engine does
  std::vector<std::pair<std::int64_t, std::int64_t>> scans;  // first slice and count of each scan
};

std::optional<RealSlices> load_real_slices(const fs::path& data, const std::string& clinic, int size) {
  auto subjects = imaging::find_clinic_subjects(data, clinic);
  if (!subjects || subjects->empty()) {
    std::fprintf(stderr, "--slices-data: no labelled subjects of clinic '%s' in %s%s\n", clinic.c_str(),
                 data.string().c_str(), subjects ? "" : (": " + subjects.error().message).c_str());
    return std::nullopt;
  }
  const double spacing = 192.0 / size;
  const GridSpec grid{{static_cast<std::size_t>(size), static_cast<std::size_t>(size)}, {spacing, spacing}};
  std::vector<torch::Tensor> images, labels, brain;
  RealSlices r;
  std::int64_t first = 0;
  for (const auto& s : *subjects) {
    auto scan = models::load_scan(s, grid, true);
    if (!scan) {
      std::fprintf(stderr, "%s\n", scan.error().message.c_str());
      return std::nullopt;
    }
    images.push_back(scan->images);
    labels.push_back((scan->labels == 1).to(torch::kInt64));
    brain.push_back(scan->brain);
    for (const int z : scan->brain_slices) r.brain_slices.push_back(first + z);
    r.scans.emplace_back(first, scan->images.size(0));
    first += scan->images.size(0);
  }
  if (r.brain_slices.empty()) {
    std::fprintf(stderr, "--slices-data: clinic '%s' in %s has no slice with brain to train on\n", clinic.c_str(),
                 data.string().c_str());
    return std::nullopt;
  }
  r.images = torch::cat(images).contiguous();
  r.labels = torch::cat(labels).contiguous();
  r.brain = torch::cat(brain).contiguous();
  return r;
}

// FILE: the images, the labels and the brain mask as raw little-endian float32, one after the
// other; FILE.json: their shape, the slices with brain and the scans (reference_unet.py reads both).
bool write_real_slices(const RealSlices& r, const fs::path& file) {
  std::ofstream out(file, std::ios::binary);
  for (const auto& t : {r.images, r.labels.to(torch::kFloat32), r.brain.to(torch::kFloat32)}) {
    const auto c = t.contiguous();
    out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.numel() * sizeof(float)));
  }
  nlohmann::json meta = {{"slices", r.images.size(0)}, {"size", r.images.size(2)}, {"brain_slices", r.brain_slices},
                         {"scans", r.scans}};
  std::ofstream json_out(file.string() + ".json");
  json_out << meta.dump() << "\n";
  out.flush();
  json_out.flush();
  if (!out || !json_out) std::fprintf(stderr, "%s: cannot write the slices or their .json\n", file.string().c_str());
  return out && json_out;
}

// Up to 64 batches: training ones of slices with brain, inference ones of every slice, in order.
Inputs real_inputs(const RealSlices& r, int batch) {
  Inputs in;
  const auto take = [&](const std::vector<std::int64_t>& pool, std::vector<torch::Tensor>* images,
                        std::vector<torch::Tensor>* labels) {
    const auto n = static_cast<std::int64_t>(pool.size());
    for (std::int64_t b = 0; b < std::min<std::int64_t>(64, std::max<std::int64_t>(1, n / batch)); ++b) {
      std::vector<std::int64_t> idx;
      for (int j = 0; j < batch; ++j) idx.push_back(pool[(b * batch + j) % n]);
      const auto i = torch::tensor(idx, torch::kInt64);
      images->push_back(r.images.index_select(0, i));
      if (labels) labels->push_back(r.labels.index_select(0, i));
    }
  };
  take(r.brain_slices, &in.train_images, &in.train_labels);
  std::vector<std::int64_t> every(static_cast<std::size_t>(r.images.size(0)));
  for (std::size_t i = 0; i < every.size(); ++i) every[i] = static_cast<std::int64_t>(i);
  take(every, &in.infer_images, nullptr);
  return in;
}

// Slices per second of `steps` timed training steps after `warmup` untimed ones.
double training_rate(const models::UNetSpec& spec, const Inputs& in, int warmup, int steps,
                     const models::PrecisionChoice& precision) {
  torch::manual_seed(1);
  models::UNet net(spec);
  net->train();
  net->set_precision(precision);  // bfloat16 autocast and/or channels-last, as training sets them
  torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(1e-3));
  const auto batch = in.train_images[0].size(0);
  Clock::time_point start;
  for (int i = 0; i < warmup + steps; ++i) {
    if (i == warmup) start = Clock::now();
    const auto k = static_cast<std::size_t>(i) % in.train_images.size();
    adam.zero_grad();
    auto loss = models::supervised_loss(net->forward(in.train_images[k]), in.train_labels[k], 1.0);
    loss.backward();
    adam.step();
  }
  return batch * steps / seconds_since(start);
}

double inference_rate(const models::UNetSpec& spec, const Inputs& in, int warmup, int steps, bool inference_mode,
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
  const auto batch = in.infer_images[0].size(0);
  Clock::time_point start;
  for (int i = 0; i < warmup + steps; ++i) {
    if (i == warmup) start = Clock::now();
    auto p = torch::softmax(net->forward(in.infer_images[static_cast<std::size_t>(i) % in.infer_images.size()]), 1);
  }
  return batch * steps / seconds_since(start);
}

// fedda's predict over every scan of `r` (at least `slices` slices, whole passes), on the whole
// grid or cropped to the brain (kBrainCropMargin); slices per second, skipped ones counted.
double predict_rate(const models::UNetSpec& spec, const RealSlices& r, std::int64_t slices, bool crop,
                    const models::PrecisionChoice& precision) {
  torch::manual_seed(1);
  models::UNet net(spec);
  net->eval();
  net->set_precision(precision);  // as load_for_inference sets it
  const torch::Device cpu(torch::kCPU);
  const auto pass = [&] {
    for (const auto& [first, count] : r.scans) {
      const auto images = r.images.narrow(0, first, count);
      if (crop) {
        models::predict(net, images, cpu, 1.0, r.brain.narrow(0, first, count));
      } else {
        models::predict(net, images, cpu);
      }
    }
  };
  pass();  // warm-up
  const auto passes = std::max<std::int64_t>(1, (slices + r.images.size(0) - 1) / r.images.size(0));
  const auto start = Clock::now();
  for (std::int64_t i = 0; i < passes; ++i) pass();
  return static_cast<double>(passes * r.images.size(0)) / seconds_since(start);
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
  const auto clinics = clinic_names(data);
  if (clinics.empty()) return 1;
  std::printf("crop to the brain: %s on %s (grid %lldx%lld%s)\n", model.string().c_str(), data.string().c_str(),
              static_cast<long long>(m->model.spec.grid.in_plane_size[0]), static_cast<long long>(m->model.spec.grid.in_plane_size[1]),
              pad > 0 ? (", widened by " + std::to_string(pad) + " pixels of air on each side").c_str() : "");
  std::printf("%-12s %6s %6s %9s %9s %8s %12s %10s %8s\n", "clinic", "scans", "margin", "pixels", "slices/s", "speedup",
              "max |dp|", "flipped", "Dice");
  for (const auto& clinic : clinics) {
    auto subjects = imaging::find_clinic_subjects(data, clinic);
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
    std::printf("%-12s %6zu %6s %8.1f%% %9.1f %8s %12s %10s %8s\n", clinic.c_str(), scans.size(),
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
      std::printf("%-12s %6zu %6lld %8.1f%% %9.1f %7.2fx %12.2e %9.4f%% %8.4f\n", clinic.c_str(),
                  scans.size(), static_cast<long long>(margin), 100.0 * pixels / all, rate, rate / whole_rate, max_change,
                  100.0 * flipped / brain, either > 0 ? 2 * both / either : 1.0);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

// fedda-bench's options (see --help).
struct BenchOptions {
  int threads = 2, batch = 8, size = 128, warmup = 3, steps = 20;
  std::string model, flair, t1, out = (fs::temp_directory_path() / "fedda-bench-seg.nii.gz").string();
  std::string only, allocator = "reuse", precision = "auto";
  std::string crop_data;
  std::vector<std::int64_t> margins{0, 8, 16, 32};
  std::int64_t pad = 0;
  std::string slices_data, slices_clinic, slices_out;
};

void add_options(CLI::App& app, BenchOptions& o) {
  app.add_option("--threads", o.threads, "LibTorch intra-op threads")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--batch", o.batch, "slices per step")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--size", o.size, "slice size (pixels, divisible by 16)")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--warmup", o.warmup, "untimed steps first")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--steps", o.steps, "timed steps")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--allocator", o.allocator, "reuse: fedda's setting (models::reuse_freed_tensor_memory); glibc: the C library's defaults")
      ->capture_default_str()
      ->check(CLI::IsMember({"reuse", "glibc"}));
  app.add_option("--precision", o.precision,
                 "auto, float32 or bfloat16: the precision of the 'fedda at --precision' rows (auto: what fedda picks "
                 "on this processor)")
      ->capture_default_str()->check(CLI::IsMember(models::precision_names()));
  app.add_option("--only", o.only, "run only the rows whose name contains this text (e.g. 'fedda default')");
  app.add_option("--model", o.model, "segment: a model file (with --flair and --t1)");
  app.add_option("--flair", o.flair, "segment: FLAIR scan");
  app.add_option("--t1", o.t1, "segment: T1 scan");
  app.add_option("--out", o.out, "segment: where the segmentation goes")->capture_default_str();
  app.add_option("--crop-data", o.crop_data,
                 "crop: clinics (fedda-sim generate) to run --model on, whole grid against cropped to the brain; only "
                 "these rows are printed");
  app.add_option("--pad", o.pad,
                 "crop: widen every slice by this many pixels of air on each side (a wider field of view; a multiple of "
                 "half the U-Net's stride)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--margins", o.margins, "crop: margins around the brain to measure (pixels)")->capture_default_str()->delimiter(',');
  auto* data_option = app.add_option("--slices-data", o.slices_data,
                                     "real slices: clinics (fedda-sim generate) whose --slices-clinic feeds the training "
                                     "and inference rows instead of random tensors, on a --size grid over 192 mm; adds "
                                     "fedda's predict rows, whole grid and cropped to the brain");
  app.add_option("--slices-clinic", o.slices_clinic, "real slices: the clinic (default: the first in --slices-data)")
      ->needs(data_option);
  app.add_option("--slices-out", o.slices_out,
                 "real slices: also write them to this file (+ .json) for benchmarks/reference_unet.py --slices")
      ->needs(data_option);
}

// --slices-data's slices into `real` (and --slices-out written); false, the reason printed, when
// they cannot be read or written. Without --slices-data `real` stays empty.
bool read_real_slices(BenchOptions& o, std::optional<RealSlices>& real) {
  if (o.slices_data.empty()) return true;
  if (o.slices_clinic.empty()) {
    const auto names = clinic_names(o.slices_data);
    if (names.empty()) return false;
    o.slices_clinic = names.front();
  }
  if (o.size % 16) {
    std::fprintf(stderr, "--size %d: real slices need a size divisible by 16\n", o.size);
    return false;
  }
  real = load_real_slices(o.slices_data, o.slices_clinic, o.size);
  if (!real) return false;
  return o.slices_out.empty() || write_real_slices(*real, o.slices_out);
}

// The speed rows: training steps and inference in each precision and layout, and fedda's
// predict where real slices are given.
void speed_rows(const BenchOptions& o, const models::PrecisionChoice& chosen, const std::optional<RealSlices>& real) {
  models::UNetSpec reference;  // the paper's standard U-Net
  reference.upsample = "transposed";
  models::UNetSpec fedda_default;  // nearest + 1x1
  auto bf16 = models::choose_precision("bfloat16", "cpu").value();
  models::PrecisionChoice f32;
  models::PrecisionChoice f32_nhwc;
  f32_nhwc.channels_last = true;
  const int warmup = o.warmup, steps = o.steps;
  const Inputs inputs = real ? real_inputs(*real, o.batch) : random_inputs(o.batch, o.size);
  std::printf("threads %d, allocator %s, batch %d of %dx%dx%d, %d timed steps after %d\n", o.threads, o.allocator.c_str(),
              o.batch, reference.in_channels, o.size, o.size, steps, warmup);
  if (real) {
    std::printf("inputs: real slices of %s in %s: %lld slices of %zu scans, %zu with brain (training draws from those)\n",
                o.slices_clinic.c_str(), o.slices_data.c_str(), static_cast<long long>(real->images.size(0)),
                real->scans.size(), real->brain_slices.size());
  } else {
    std::printf("inputs: random tensors\n");
  }
  const auto row = [&](const std::string& name, const std::function<double()>& measure) {
    if (name.find(o.only) == std::string::npos) return;
    std::printf("%-48s %10.1f\n", name.c_str(), measure());
    std::fflush(stdout);
  };
  std::printf("%-48s %10s\n", "measurement", "slices/s");
  row("training step, reference U-Net (transposed)", [&] { return training_rate(reference, inputs, warmup, steps, f32); });
  row("training step, fedda default (nearest+1x1)", [&] { return training_rate(fedda_default, inputs, warmup, steps, f32); });
  row("training step, fedda default, channels-last", [&] { return training_rate(fedda_default, inputs, warmup, steps, f32_nhwc); });
  row("training step, fedda default, bfloat16 autocast", [&] { return training_rate(fedda_default, inputs, warmup, steps, bf16); });
  row("training step, fedda at --precision (" + chosen.name() + ")",
      [&] { return training_rate(fedda_default, inputs, warmup, steps, chosen); });
  row("inference, fedda default (inference mode)", [&] { return inference_rate(fedda_default, inputs, warmup, steps, true); });
  row("inference, fedda default, channels-last", [&] { return inference_rate(fedda_default, inputs, warmup, steps, true, f32_nhwc); });
  row("inference, fedda default (no-grad guard)", [&] { return inference_rate(fedda_default, inputs, warmup, steps, false); });
  row("inference, fedda default, bfloat16 autocast", [&] { return inference_rate(fedda_default, inputs, warmup, steps, true, bf16); });
  const auto inferring = models::for_inference(chosen, "cpu");  // the layout of fedda's inference-only networks
  row("inference, fedda at --precision (" + chosen.name() + ")",
      [&] { return inference_rate(fedda_default, inputs, warmup, steps, true, inferring); });
  if (real) {
    const std::int64_t slices = static_cast<std::int64_t>(o.batch) * steps;
    row("inference, fedda predict at --precision, whole grid",
        [&] { return predict_rate(fedda_default, *real, slices, false, inferring); });
    row("inference, fedda predict at --precision, cropped to the brain",
        [&] { return predict_rate(fedda_default, *real, slices, true, inferring); });
  }
}

int main(int argc, char** argv) {
  CLI::App app{"fedda-bench: training-step, inference and end-to-end segmentation speed (docs/performance.md)"};
  app.set_version_flag("--version", std::string("fedda-bench ") + kVersion);
  BenchOptions o;
  add_options(app, o);
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(o.threads);
  if (o.allocator == "reuse") models::reuse_freed_tensor_memory();

  if (!o.crop_data.empty()) {
    if (o.model.empty()) {
      std::fprintf(stderr, "--crop-data needs --model\n");
      return 1;
    }
    std::printf("cpu: %s\nthreads %d\n", models::cpu_description().c_str(), o.threads);
    return crop_rows(o.model, o.crop_data, o.margins, o.precision, o.pad);
  }
  auto chosen = models::choose_precision(o.precision, "cpu");
  if (!chosen) {
    std::fprintf(stderr, "%s\n", chosen.error().message.c_str());
    return 1;
  }
  std::printf("cpu: %s\n", models::cpu_description().c_str());
  std::printf("--precision %s: %s%s (%s)\n", o.precision.c_str(), chosen->name().c_str(),
              chosen->channels_last ? " channels-last" : "", chosen->reason.c_str());
  std::optional<RealSlices> real;
  if (!read_real_slices(o, real)) return 1;
  speed_rows(o, *chosen, real);
  if (!o.model.empty()) {
    if (o.flair.empty() || o.t1.empty()) {
      std::fprintf(stderr, "--model needs --flair and --t1\n");
      return 1;
    }
    const auto start = Clock::now();
    if (auto st = models::segment_scan(o.model, o.flair, o.t1, o.out, "cpu", o.precision); !st) {
      std::fprintf(stderr, "%s\n", st.error().message.c_str());
      return 1;
    }
    std::printf("%-48s %9.2f s\n", "segment one scan end to end", seconds_since(start));
  }
  return 0;
}
