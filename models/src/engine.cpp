#include "fedda/models/engine.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <optional>

#include "data.h"
#include "fedda/common/log.h"
#include "fedda/imaging/nifti_io.h"
#include "losses.h"
#include "model_io.h"
#include "prefetch.h"
#include "torch_boundary.h"
#include "training.h"
#include "weight_average.h"

namespace fedda::models {
namespace fs = std::filesystem;
using imaging::SubjectFiles;

namespace {

// Where and in what a training run computes: its device and its precision (precision.h,
// chosen and logged once per run).
struct Run {
  torch::Device device{torch::kCPU};
  PrecisionChoice precision;
};

Result<Run> prepare(const TrainConfig& c) {
  auto device = parse_device(c.device);
  if (!device) return device.error();
  if (c.threads > 0) torch::set_num_threads(c.threads);
  torch::manual_seed(c.seed);
  if (c.epochs < 1 || c.steps_per_epoch < 1 || c.batch_size < 1) {
    return make_error("epochs, steps per epoch and batch size must be at least 1");
  }
  auto precision = choose_precision(c.precision, c.device);
  if (!precision) return precision.error();
  log::get("engine")->info("precision {} ({})", precision->name(), precision->reason);
  return Run{*device, *precision};
}

double learning_rate_at(const TrainConfig& c, int epoch) {
  if (c.recipe.schedule == "poly") {
    return c.learning_rate * std::pow(1.0 - static_cast<double>(epoch - 1) / c.epochs, c.recipe.poly_exponent);
  }
  const int decay = c.decay_epoch >= 0 ? c.decay_epoch : std::max(1, c.epochs * 3 / 8);
  return epoch > decay ? c.learning_rate * c.decay_factor : c.learning_rate;
}


// A training step in two parts: drawing what it learns from (on a background thread when the
// recipe prefetches), then learning from it on the training thread.
using Batches = std::vector<Batch>;
using SampleFn = std::function<Batches(std::mt19937_64& rng)>;
using LearnFn = std::function<double(const Batches& batches, int epoch)>;

struct Trainee {
  ModelSpec spec;
  PrecisionChoice precision;
  UNet net{nullptr};
  torch::Device device{torch::kCPU};
  torch::optim::Optimizer* optimizer = nullptr;
  Discriminator* discriminator = nullptr;
  torch::optim::Optimizer* discriminator_optimizer = nullptr;
  std::function<void()> before_save;  // e.g. AdaBN: the statistics the saved model carries
  std::function<void()> after_curve;  // undoes before_save when training goes on
};

// The learning curve's point after epoch e.epoch: the model as it would be saved now (averaged,
// AdaBN included); at the last epoch with averaging, the weights as trained too, for what
// averaging changed.
Status score_curve(const TrainConfig& c, Trainee& t, WeightAverage* average, EpochReport& e) {
  const auto score_as_saved = [&]() -> Result<double> {
    if (t.before_save) t.before_save();
    auto scores = score_subjects(t.net, t.spec, c.curve_subjects, t.device, true, c.test_time_mirroring);
    if (t.after_curve) t.after_curve();
    if (!scores) return scores.error();
    return mean_dice(*scores);
  };
  if (average && e.epoch == c.epochs) {
    auto as_trained = score_as_saved();
    if (!as_trained) return as_trained.error();
    e.curve_dsc_unaveraged = *as_trained;
  }
  if (average) average->swap(t.net);
  auto dsc = score_as_saved();
  if (average) average->swap(t.net);
  if (!dsc) return dsc.error();
  e.curve_dsc = *dsc;
  return Status::success();
}

Result<TrainReport> run_epochs(const TrainConfig& c, Trainee& t, const SampleFn& sample, const LearnFn& learn,
                               const fs::path& model_out, const ProgressFn& progress) {
  auto log = log::get("engine");
  if (auto st = validate(c.recipe, static_cast<int>(std::min(t.spec.grid.in_plane_size[0], t.spec.grid.in_plane_size[1])), t.spec.unet.depth); !st) {
    return make_error("recipe: " + st.error().message);
  }
  TrainReport report;
  const auto start = std::chrono::steady_clock::now();
  t.net->set_precision(t.precision);
  int first = 1;
  std::unique_ptr<WeightAverage> average;
  if (c.recipe.weight_average > 0) average = std::make_unique<WeightAverage>(t.net, c.recipe.weight_average);
  std::error_code ec;
  if (!c.checkpoint.empty() && fs::exists(c.checkpoint, ec)) {
    auto resumed = load_checkpoint(c.checkpoint, t.net, *t.optimizer, t.discriminator, t.discriminator_optimizer, average.get());
    if (!resumed) return resumed.error();
    first = resumed->finished_epochs + 1;
    report.resumed_from_epoch = resumed->finished_epochs;
    log->info("resuming from {} after epoch {}", c.checkpoint.string(), resumed->finished_epochs);
  }
  const int prefetch = static_cast<int>(c.recipe.prefetch);
  for (int epoch = first; epoch <= c.epochs; ++epoch) {
    const auto epoch_start = std::chrono::steady_clock::now();
    const double lr = learning_rate_at(c, epoch);
    set_learning_rate(*t.optimizer, lr);
    std::mt19937_64 rng(mix(c.seed, static_cast<std::uint64_t>(epoch)));
    torch::manual_seed(mix(c.seed ^ 0x5eed, static_cast<std::uint64_t>(epoch)));
    t.net->train();
    double loss = 0, data_seconds = 0;
    std::optional<Prefetcher<Batches>> ahead;
    if (prefetch > 0) ahead.emplace([&] { return sample(rng); }, c.steps_per_epoch, prefetch);
    for (int s = 0; s < c.steps_per_epoch; ++s) {
      Batches batches;
      if (ahead) {
        batches = ahead->next();
      } else {
        const auto drawn = std::chrono::steady_clock::now();
        batches = sample(rng);
        data_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - drawn).count();
      }
      const double l = learn(batches, epoch);
      if (!std::isfinite(l)) return make_error("training diverged (loss is " + std::to_string(l) + ") in epoch " + std::to_string(epoch));
      loss += l;
      if (average) average->update(t.net);
    }
    if (ahead) data_seconds = ahead->waited_seconds();
    EpochReport e;
    e.epoch = epoch;
    e.loss = loss / c.steps_per_epoch;
    e.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count();
    e.slices_per_second = c.steps_per_epoch * c.batch_size / std::max(e.seconds, 1e-9);
    e.learning_rate = lr;
    e.data_wait_share = data_seconds / std::max(e.seconds, 1e-9);
    if (c.curve_every > 0 && !c.curve_subjects.empty() && (epoch % c.curve_every == 0 || epoch == c.epochs)) {
      if (auto st = score_curve(c, t, average.get(), e); !st) return st.error();
    }
    report.epochs.push_back(e);
    if (progress) progress(e);
    if (!c.checkpoint.empty()) {
      if (auto st = save_checkpoint(c.checkpoint, t.spec, t.net, *t.optimizer, epoch, t.discriminator,
                                    t.discriminator_optimizer, average.get());
          !st) {
        return st.error();
      }
    }
  }
  if (average) average->swap(t.net);
  if (t.before_save) t.before_save();
  t.net->eval();
  if (auto st = save_model(model_out, t.spec, t.net); !st) return st.error();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  report.precision = t.precision.name();
  report.precision_reason = t.precision.reason;
  return report;
}

Result<ModelSpec> new_spec(const TrainConfig& c, const std::string& role) {
  ModelSpec spec;
  spec.unet = c.unet;
  spec.grid = c.grid;
  spec.role = role;
  if (auto st = validate(spec); !st) return make_error("model configuration: " + st.error().message);
  return spec;
}

// bn_statistics local (AdaBN): the saved model's batch-norm running statistics are recomputed
// on the target's scans (`scans` from `first_target` on) with the trained weights, so it
// normalises target features by the target's own statistics; training itself is unchanged.
Status use_target_statistics(const TrainConfig& c, Trainee& t, const std::vector<ScanSlices>& scans,
                             std::size_t first_target) {
  if (c.bn_statistics == protocol::BnStatistics::shared) return Status::success();
  if (first_target >= scans.size()) return make_error("bn_statistics local: no target scans");
  auto saved = std::make_shared<std::vector<torch::Tensor>>();
  t.before_save = [&t, &scans, first_target, saved] {
    saved->clear();
    for (const auto& b : t.net->buffers()) saved->push_back(b.clone());
    recompute_batch_norm(t.net, std::vector<ScanSlices>(scans.begin() + static_cast<long>(first_target), scans.end()),
                         t.device);
  };
  t.after_curve = [&t, saved] {
    torch::NoGradGuard no_grad;
    auto buffers = t.net->buffers();
    for (std::size_t i = 0; i < buffers.size() && i < saved->size(); ++i) buffers[i].copy_((*saved)[i]);
  };
  return Status::success();
}

}  // namespace

void recompute_batch_norm(UNet& net, const std::vector<ScanSlices>& scans, const torch::Device& device) {
  torch::NoGradGuard no_grad;
  std::vector<torch::nn::BatchNorm2dImpl*> norms;
  for (const auto& m : net->modules(false)) {
    if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) norms.push_back(bn);
  }
  if (norms.empty()) return;
  std::vector<c10::optional<double>> momentum;
  for (auto* bn : norms) {
    momentum.push_back(bn->options.momentum());
    bn->reset_running_stats();
    bn->options.momentum(c10::nullopt);  // a cumulative average over every batch below
  }
  net->train();
  for (const auto& scan : scans) {
    for (std::int64_t i = 0; i < scan.images.size(0); i += 16) {
      net->forward(scan.images.slice(0, i, std::min<std::int64_t>(scan.images.size(0), i + 16)).to(device));
    }
  }
  for (std::size_t i = 0; i < norms.size(); ++i) norms[i]->options.momentum(momentum[i]);
  net->eval();
}

namespace {

// [first, last] of the true entries of a 1-D bool tensor; {-1, -1} when none.
std::pair<std::int64_t, std::int64_t> true_span(const torch::Tensor& any) {
  const auto at = torch::nonzero(any).flatten();
  if (at.numel() == 0) return {-1, -1};
  return {at[0].item<std::int64_t>(), at[-1].item<std::int64_t>()};
}

// [begin, end) around [first, last] grown by `margin`, on multiples of `stride`, inside [0, size).
std::pair<std::int64_t, std::int64_t> aligned_span(std::int64_t first, std::int64_t last, std::int64_t size,
                                                   std::int64_t stride, std::int64_t margin) {
  if (size % stride != 0) return {0, size};
  const auto begin = std::max<std::int64_t>(0, (first - margin) / stride * stride);
  const auto end = std::min<std::int64_t>(size, (last + 1 + margin + stride - 1) / stride * stride);
  return {begin, end};
}

}  // namespace

BrainCrop brain_crop(const torch::Tensor& brain, std::int64_t stride, std::int64_t margin) {
  BrainCrop c;
  const auto with_brain = torch::nonzero(brain.flatten(1).any(1)).flatten().contiguous();
  c.slices.assign(with_brain.data_ptr<std::int64_t>(), with_brain.data_ptr<std::int64_t>() + with_brain.numel());
  if (c.slices.empty()) return c;
  const auto plane = brain.any(0);  // [H, W]
  const auto [ymin, ymax] = true_span(plane.any(1));
  const auto [xmin, xmax] = true_span(plane.any(0));
  std::tie(c.y0, c.y1) = aligned_span(ymin, ymax, brain.size(1), stride, margin);
  std::tie(c.x0, c.x1) = aligned_span(xmin, xmax, brain.size(2), stride, margin);
  return c;
}

double BrainCrop::pixel_share(const torch::Tensor& brain) const {
  return static_cast<double>(slices.size()) * (y1 - y0) * (x1 - x0) / static_cast<double>(brain.numel());
}

// Probability of WMH for every slice of a scan, on the model grid.
torch::Tensor predict(UNet& net, const torch::Tensor& images, const torch::Device& device, double temperature,
                      const torch::Tensor& brain, std::int64_t margin, bool mirror) {
  torch::InferenceMode guard;
  net->eval();
  const auto once = [&](const torch::Tensor& input) {
    std::vector<torch::Tensor> parts;
    const int64_t slices = input.size(0);
    for (int64_t i = 0; i < slices; i += 16) {
      const auto logits = net->forward(input.slice(0, i, std::min(slices, i + 16)).to(device));
      parts.push_back(tempered_softmax(logits, temperature).select(1, 1).to(torch::kCPU));
    }
    return torch::cat(parts).contiguous();
  };
  const auto run = [&](const torch::Tensor& input) {  // input [S, C, H, W]; p [S, H, W]
    return mirror ? ((once(input) + once(input.flip({3})).flip({2})) * 0.5).contiguous() : once(input);
  };
  if (!brain.defined()) return run(images);
  const auto crop = brain_crop(brain, std::int64_t{1} << net->spec().depth, margin);
  auto out = torch::zeros({images.size(0), images.size(2), images.size(3)});
  if (crop.slices.empty()) return out;
  const auto index = torch::tensor(crop.slices, torch::kInt64);
  const auto p = run(images.index_select(0, index).slice(2, crop.y0, crop.y1).slice(3, crop.x0, crop.x1).contiguous());
  out.slice(1, crop.y0, crop.y1).slice(2, crop.x0, crop.x1).index_copy_(0, index, p);
  return out;
}

static imaging::Image to_image(const torch::Tensor& probability, const imaging::Geometry& grid) {
  imaging::Image image(grid);
  std::memcpy(image.voxels.data(), probability.data_ptr<float>(), image.voxels.size() * sizeof(float));
  return image;
}

// Soft labels at temperature T, cached in half precision; slices the teacher calls lesion
// (p > 0.5 anywhere, the same at any T) become the scan's lesion slices for sampling.
void set_soft_labels(ScanSlices& scan, const torch::Tensor& p) {
  scan.soft = p.to(torch::kFloat16);
  scan.lesion_slices.clear();
  const auto has_lesion = (p.to(torch::kFloat32) > 0.5).flatten(1).any(1);
  for (int64_t z = 0; z < has_lesion.size(0); ++z) {
    if (has_lesion[z].item<bool>()) scan.lesion_slices.push_back(static_cast<int>(z));
  }
  scan.labels = torch::Tensor();
}

void attach_soft_labels(UNet& teacher, std::vector<ScanSlices>& scans, double temperature, const torch::Device& device) {
  const auto start = std::chrono::steady_clock::now();
  std::int64_t slices = 0;
  for (auto& scan : scans) {
    slices += scan.images.size(0);
    set_soft_labels(scan, predict(teacher, scan.images, device, temperature, scan.brain));
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  log::get("engine")->info("soft labels at T={} for {} slices of {} scans in {:.1f} s ({:.1f} slices/s), {:.1f} MB cached",
                           temperature, slices, scans.size(), seconds, slices / std::max(seconds, 1e-9),
                           slices * scans.front().images.size(2) * scans.front().images.size(3) * 2 / 1e6);
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& parameters,
                                                        const Recipe& recipe, double learning_rate) {
  if (recipe.optimizer == "sgd") {
    return std::make_unique<torch::optim::SGD>(parameters, torch::optim::SGDOptions(learning_rate)
                                                               .momentum(recipe.momentum)
                                                               .nesterov(recipe.momentum > 0)
                                                               .weight_decay(recipe.weight_decay));
  }
  return std::make_unique<torch::optim::Adam>(parameters, torch::optim::AdamOptions(learning_rate));
}

double gradient_clip(const Recipe& recipe) { return recipe.optimizer == "sgd" ? recipe.gradient_clip : 0.0; }

Recipe sampling_recipe(const Recipe& recipe, bool augment) { return augment ? recipe : without_augmentation(recipe); }

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

// One optimiser update on `loss`; returns its value.
double descend(torch::optim::Optimizer& optimizer, const torch::Tensor& loss, double clip) {
  optimizer.zero_grad();
  loss.backward();
  if (clip > 0) {
    std::vector<torch::Tensor> parameters;
    for (const auto& group : optimizer.param_groups()) {
      parameters.insert(parameters.end(), group.params().begin(), group.params().end());
    }
    torch::nn::utils::clip_grad_norm_(parameters, clip);
  }
  optimizer.step();
  return loss.item<double>();
}

Result<InferenceModel> load_for_inference(const fs::path& model, const std::string& device_name,
                                          const std::string& precision) {
  auto device = parse_device(device_name);
  if (!device) return device.error();
  auto chosen = choose_precision(precision, device_name);
  if (!chosen) return chosen.error();
  auto m = load_model(model, *device);
  if (!m) return m.error();
  m->net->set_precision(for_inference(*chosen, device_name));
  return InferenceModel{std::move(*m), *device};
}

Status check_device(const std::string& device) {
  auto d = parse_device(device);
  if (!d) return d.error();
  return Status::success();
}

static Result<ModelSpec> read_model_spec_unguarded(const fs::path& model) {
  auto m = load_model(model, torch::kCPU);
  if (!m) return m.error();
  return m->spec;
}

static Result<TrainReport> train_supervised_unguarded(const std::vector<SubjectFiles>& labelled, const TrainConfig& c,
                                     const fs::path& model_out, const std::string& role, const ProgressFn& progress) {
  auto run = prepare(c);
  if (!run) return run.error();
  const torch::Device device = run->device;
  if (labelled.empty()) return make_error("no labelled subjects to train on");
  Trainee t;
  if (!c.init_model.empty()) {
    auto m = load_model(c.init_model, device);
    if (!m) return m.error();
    t.spec = m->spec;
    t.net = m->net;
  } else {
    auto spec = new_spec(c, role);
    if (!spec) return spec.error();
    t.spec = *spec;
    t.net = UNet(spec->unet);
    t.net->to(device);
  }
  t.spec.role = role;
  t.device = device;
  t.precision = run->precision;
  auto scans = load_scans(labelled, t.spec.grid, true);
  if (!scans) return scans.error();
  const auto optimizer = make_optimizer(t.net->parameters(), c.recipe, c.learning_rate);
  t.optimizer = optimizer.get();
  const Recipe recipe = sampling_recipe(c.recipe, c.augment);
  const auto sample = [&](std::mt19937_64& rng) {
    return Batches{sample_batch(*scans, c.batch_size, c.lesion_slice_fraction, recipe, rng, device)};
  };
  const auto learn = [&](const Batches& b, int) {
    return descend(*optimizer, supervised_loss(t.net->forward(b[0].images), b[0].labels, c.dice_weight), gradient_clip(c.recipe));
  };
  return run_epochs(c, t, sample, learn, model_out, progress);
}

static Result<TrainReport> train_kd_unguarded(const fs::path& teacher_path, const std::vector<SubjectFiles>& source,
                             const std::vector<SubjectFiles>& target, const TrainConfig& c, const fs::path& model_out,
                             const ProgressFn& progress) {
  auto run = prepare(c);
  if (!run) return run.error();
  const torch::Device device = run->device;
  auto teacher = load_model(teacher_path, device);
  if (!teacher) return teacher.error();
  teacher->net->set_precision(for_inference(run->precision, device.str()));  // soft labels in the run's precision
  std::vector<SubjectFiles> all = source;
  all.insert(all.end(), target.begin(), target.end());
  if (all.empty()) return make_error("no subjects to distil on");
  auto scans = load_scans(all, teacher->spec.grid, false);
  if (!scans) return scans.error();
  attach_soft_labels(teacher->net, *scans, c.temperature, device);

  Trainee t;
  t.spec = teacher->spec;
  t.spec.role = "student";
  if (c.kd_init == protocol::StudentInit::teacher) {
    auto copy = load_model(teacher_path, device);
    if (!copy) return copy.error();
    t.net = copy->net;
  } else {
    t.net = UNet(t.spec.unet);
    t.net->to(device);
  }
  t.device = device;
  t.precision = run->precision;
  const auto optimizer = make_optimizer(t.net->parameters(), c.recipe, c.learning_rate);
  t.optimizer = optimizer.get();
  const KdObjective objective{c.kd_loss, c.kd_hard_weight, c.kd_confidence, c.dice_weight};
  const Recipe recipe = sampling_recipe(c.recipe, c.augment);
  const auto sample = [&](std::mt19937_64& rng) {
    return Batches{sample_batch(*scans, c.batch_size, c.lesion_slice_fraction, recipe, rng, device)};
  };
  const auto learn = [&](const Batches& b, int) {
    return descend(*optimizer, kd_loss(t.net->forward(b[0].images), b[0].soft, c.temperature, objective), gradient_clip(c.recipe));
  };
  if (auto st = use_target_statistics(c, t, *scans, source.size()); !st) return st.error();
  return run_epochs(c, t, sample, learn, model_out, progress);
}

static Result<TrainReport> train_ada_unguarded(const std::optional<fs::path>& initial, const std::vector<SubjectFiles>& source,
                              const std::vector<SubjectFiles>& target, const TrainConfig& c, const fs::path& model_out,
                              const ProgressFn& progress) {
  auto run = prepare(c);
  if (!run) return run.error();
  const torch::Device device = run->device;
  if (source.empty() || target.empty()) return make_error("ADA needs labelled source and unlabelled target subjects");
  Trainee t;
  if (initial) {
    auto m = load_model(*initial, device);
    if (!m) return m.error();
    t.spec = m->spec;
    t.net = m->net;
  } else {
    auto spec = new_spec(c, "ada");
    if (!spec) return spec.error();
    t.spec = *spec;
    t.net = UNet(spec->unet);
    t.net->to(device);
  }
  t.spec.role = "ada";
  t.device = device;
  t.precision = run->precision;
  auto source_scans = load_scans(source, t.spec.grid, true);
  if (!source_scans) return source_scans.error();
  auto target_scans = load_scans(target, t.spec.grid, false);
  if (!target_scans) return target_scans.error();

  Discriminator discriminator(t.spec.unet.classes);
  discriminator->to(device);
  const auto optimizer = make_optimizer(t.net->parameters(), c.recipe, c.learning_rate);
  torch::optim::Adam discriminator_optimizer(discriminator->parameters(), torch::optim::AdamOptions(c.learning_rate));
  t.optimizer = optimizer.get();
  t.discriminator = &discriminator;
  t.discriminator_optimizer = &discriminator_optimizer;
  const auto is_source = [&](int64_t n) { return torch::zeros({n}, torch::TensorOptions(torch::kInt64).device(device)); };
  const auto is_target = [&](int64_t n) { return torch::ones({n}, torch::TensorOptions(torch::kInt64).device(device)); };
  const Recipe recipe = sampling_recipe(c.recipe, c.augment);
  const auto sample = [&](std::mt19937_64& rng) {
    Batches b{sample_batch(*source_scans, c.batch_size, c.lesion_slice_fraction, recipe, rng, device)};
    b.push_back(sample_batch(*target_scans, c.batch_size, 0.0, recipe, rng, device));
    return b;
  };
  const auto learn = [&](const Batches& batches, int epoch) {
    const double weight =
        c.ada_weight * std::min(1.0, (epoch - 1) / static_cast<double>(std::max(1, c.ada_warmup_epochs)));
    const Batch& s = batches[0];
    const Batch& tg = batches[1];
    discriminator->train();
    const auto source_logits = t.net->forward(s.images);
    const auto target_logits = t.net->forward(tg.images);
    const auto source_out = torch::softmax(source_logits, 1);
    const auto target_out = torch::softmax(target_logits, 1);
    // Discriminator: tell source from target on the segmenter's output.
    descend(discriminator_optimizer,
            torch::nn::functional::cross_entropy(discriminator->forward(source_out.detach()), is_source(c.batch_size)) +
                torch::nn::functional::cross_entropy(discriminator->forward(target_out.detach()), is_target(c.batch_size)));
    // Segmenter: supervised on source, and make target outputs pass for source.
    auto loss = supervised_loss(source_logits, s.labels, c.dice_weight);
    if (weight > 0) {
      loss = loss + weight * torch::nn::functional::cross_entropy(discriminator->forward(target_out),
                                                                  is_source(c.batch_size));
    }
    return descend(*optimizer, loss, gradient_clip(c.recipe));
  };
  if (auto st = use_target_statistics(c, t, *target_scans, 0); !st) return st.error();
  return run_epochs(c, t, sample, learn, model_out, progress);
}

Result<std::vector<SubjectScore>> score_subjects(UNet& net, const ModelSpec& spec,
                                                 const std::vector<SubjectFiles>& subjects, const torch::Device& device,
                                                 bool dice_only, bool mirror) {
  std::vector<SubjectScore> scores;
  for (const auto& s : subjects) {
    if (!s.labels) return make_error(s.clinic + "/" + s.subject + ": no labels to evaluate against");
    auto scan = load_scan(s, spec.grid, true);  // with labels: the same memo entry as training and validation
    if (!scan) return scan.error();
    const auto p = predict(net, scan->images, device, 1.0, scan->brain, kBrainCropMargin, mirror);
    const auto prediction = imaging::restore_segmentation(to_image(p, scan->grid), scan->original);
    auto truth = imaging::read_label_map(*s.labels);
    if (!truth) return truth.error();
    if (dice_only) {
      auto dsc = imaging::dice_score(*truth, prediction);
      if (!dsc) return make_error(s.clinic + "/" + s.subject + ": " + dsc.error().message);
      imaging::CaseMetrics m{*dsc, NAN, NAN, NAN, NAN};
      scores.push_back({s.clinic, s.subject, m});
      continue;
    }
    auto metrics = imaging::evaluate_case(*truth, prediction);
    if (!metrics) return make_error(s.clinic + "/" + s.subject + ": " + metrics.error().message);
    scores.push_back({s.clinic, s.subject, *metrics});
  }
  return scores;
}

double mean_dice(const std::vector<SubjectScore>& scores, int* counted) {
  double sum = 0;
  int n = 0;
  for (const auto& s : scores) {
    if (std::isfinite(s.metrics.dsc)) {
      sum += s.metrics.dsc;
      ++n;
    }
  }
  if (counted) *counted = n;
  return n ? sum / n : NAN;
}

static Result<std::vector<SubjectScore>> evaluate_model_unguarded(const fs::path& model, const std::vector<SubjectFiles>& subjects,
                                                 const std::string& device_name, const std::string& precision,
                                                 bool mirror) {
  auto m = load_for_inference(model, device_name, precision);
  if (!m) return m.error();
  return score_subjects(m->model.net, m->model.spec, subjects, m->device, false, mirror);
}

static Status segment_scan_unguarded(const fs::path& model, const fs::path& flair, const fs::path& t1, const fs::path& out,
                    const std::string& device_name, const std::string& precision) {
  auto m = load_for_inference(model, device_name, precision);
  if (!m) return m.error();
  SubjectFiles files;
  files.clinic = "scan";
  files.subject = flair.filename().string();
  files.flair = flair;
  files.t1 = t1;
  auto scan = load_scan(files, m->model.spec.grid, false);
  if (!scan) return scan.error();
  const auto p = predict(m->model.net, scan->images, m->device, 1.0, scan->brain);
  return imaging::write_label_map(out, imaging::restore_segmentation(to_image(p, scan->grid), scan->original));
}


// ---- The engine's boundary -------------------------------------------------------------------
// LibTorch reports a failure by throwing (c10::Error: a shape, a device, memory); so do the
// standard library and JSON. Each entry point returns it as an internal Error naming what it was
// doing, never lets it reach its caller.

Result<TrainReport> train_supervised(const std::vector<SubjectFiles>& labelled, const TrainConfig& c,
                                     const fs::path& model_out, const std::string& role, const ProgressFn& progress) {
  return at_boundary("training", [&] { return train_supervised_unguarded(labelled, c, model_out, role, progress); });
}

Result<TrainReport> train_kd(const fs::path& teacher_path, const std::vector<SubjectFiles>& source,
                             const std::vector<SubjectFiles>& target, const TrainConfig& c, const fs::path& model_out,
                             const ProgressFn& progress) {
  return at_boundary("distilling", [&] { return train_kd_unguarded(teacher_path, source, target, c, model_out, progress); });
}

Result<TrainReport> train_ada(const std::optional<fs::path>& initial, const std::vector<SubjectFiles>& source,
                              const std::vector<SubjectFiles>& target, const TrainConfig& c, const fs::path& model_out,
                              const ProgressFn& progress) {
  return at_boundary("adversarial training", [&] { return train_ada_unguarded(initial, source, target, c, model_out, progress); });
}

Result<std::vector<SubjectScore>> evaluate_model(const fs::path& model, const std::vector<SubjectFiles>& subjects,
                                                 const std::string& device_name, const std::string& precision,
                                                 bool mirror) {
  return at_boundary("scoring", [&] { return evaluate_model_unguarded(model, subjects, device_name, precision, mirror); });
}

Status segment_scan(const fs::path& model, const fs::path& flair, const fs::path& t1, const fs::path& out,
                    const std::string& device_name, const std::string& precision) {
  return at_boundary("segmenting", [&] { return segment_scan_unguarded(model, flair, t1, out, device_name, precision); });
}

Result<ModelSpec> read_model_spec(const fs::path& model) {
  return at_boundary("reading the model", [&] { return read_model_spec_unguarded(model); });
}

}  // namespace fedda::models
