#include "fedda/models/federated.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <sstream>

#include "dp_sgd.h"
#include "fedda/common/crypto.h"
#include "fedda/common/privacy.h"
#include "fedda/common/files.h"
#include "fedda/common/log.h"
#include "fedda/imaging/nifti_io.h"
#include "losses.h"
#include "model_io.h"
#include "training.h"
#include "wire.h"

namespace fedda::models {
namespace fs = std::filesystem;
using protocol::JobType;

namespace {

std::string hex(std::uint64_t v) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(v));
  return text;
}

// Identifies soft labels: the teacher's weights, the temperature and the grid.
std::string soft_label_key(const TensorSet& teacher, const ModelSpec& spec, double temperature,
                           const PrecisionChoice& precision) {
  std::uint64_t key = mix(static_cast<std::uint64_t>(temperature * 1000), std::hash<std::string>{}(to_json(spec)));
  if (precision.bfloat16) key = mix(key, 0xbf16);  // soft labels computed in bfloat16 are their own
  key = mix(key, 0xb7a1'0000ULL + static_cast<std::uint64_t>(kBrainCropMargin));  // so are those of the brain crop
  for (const auto& t : teacher.tensors) key = mix(key, t.crc32);
  return hex(key);
}

// Cache files, sealed with AES-256-GCM when the site has a storage key (the file name is the
// associated data, so one cache file cannot stand in for another).
Status save_tensor(const fs::path& path, const torch::Tensor& tensor, const std::string& key) {
  std::ostringstream bytes;
  try {
    torch::save(tensor, bytes);
  } catch (const std::exception& e) {
    return make_error(path.string() + ": " + e.what());
  }
  return crypto::write_sealed(path, bytes.str(), key);
}

Result<torch::Tensor> load_tensor(const fs::path& path, const std::string& key) {
  auto bytes = crypto::read_sealed(path, key);
  if (!bytes) return bytes.error();
  try {
    std::istringstream in(*bytes);
    torch::Tensor t;
    torch::load(t, in);
    return t;
  } catch (const std::exception& e) {
    return make_error(path.string() + ": " + e.what());
  }
}

// What the clip did in one round under dp, for the site's own log, where a site administrator
// chooses the clip norm from it (README, "Differential privacy"). It never leaves the site in an
// update: the norms are computed from the patients' slices and carry no noise.
struct ClipTally {
  int steps = 0, clipped = 0;
  std::vector<double> norms;  // one per patient gradient the round took
  void add(const DpStepResult& r) {
    ++steps;
    clipped += r.clipped;
    norms.insert(norms.end(), r.norms.begin(), r.norms.end());
  }
  std::string summary(double clip_norm) {
    std::string text = std::to_string(norms.size()) + " patient gradients over " + std::to_string(steps) + " steps";
    if (norms.empty()) return text;
    const auto quantile = [&](double q) {
      auto at = norms.begin() + static_cast<std::ptrdiff_t>(q * static_cast<double>(norms.size() - 1));
      std::nth_element(norms.begin(), at, norms.end());
      return *at;
    };
    return text + fmt::format(", {:.0f}% clipped at clip norm {}; their norms before the clip: median {:.3g}, "
                              "10th-90th percentile {:.3g}-{:.3g}",
                              100.0 * clipped / static_cast<double>(norms.size()), clip_norm, quantile(0.5), quantile(0.1), quantile(0.9));
  }
};

}  // namespace

// ---- SiteTrainer ----------------------------------------------------------------------------

struct SiteTrainer::Impl {
  SiteJobOptions options;
  torch::Device device{torch::kCPU};
  PrecisionChoice precision;
  UNet net{nullptr};
  Discriminator discriminator{nullptr};
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::vector<ScanSlices> scans;
  std::vector<imaging::SubjectFiles> evaluation;
  std::vector<SkippedScan> skipped;
  std::int64_t samples = 0;
  std::vector<std::string> batch_norm;   // FedBN: the tensors kept here
  std::vector<torch::Tensor> local_norm;  // their values after this site's last round
  DpGuarantee dp;
  SecretRandom secret;  // dp: who joins a step and the noise, from OpenSSL, never from the job

  // The training scans (with labels where the job learns from them) and the evaluation scans
  // this site holds; each that cannot be used is skipped, named in `skipped` with why.
  void load_scans(spdlog::logger& log) {
    const auto& o = options;
    const auto id = [](const imaging::SubjectFiles& s) { return s.clinic + "/" + s.subject; };
    if (o.type != JobType::evaluate) {
      for (const auto& s : o.train) {
        if (o.labelled && !s.labels) {
          skipped.push_back({id(s), "no label file"});
          continue;
        }
        auto scan = load_scan(s, o.spec.grid, o.labelled);
        if (!scan) {
          log.warn("skipping {}: {}", id(s), scan.error().message);
          skipped.push_back({id(s), scan.error().message});
          continue;
        }
        samples += scan->images.size(0);
        scans.push_back(std::move(*scan));
      }
    }
    for (const auto& s : o.evaluation) {
      if (!s.labels) {
        skipped.push_back({id(s), "no label file to evaluate against"});
        continue;
      }
      if (auto scan = load_scan(s, o.spec.grid, true); !scan) {
        log.warn("skipping {} for evaluation: {}", id(s), scan.error().message);
        skipped.push_back({id(s), scan.error().message});
        continue;
      }
      evaluation.push_back(s);
    }
  }

  // kd: the teacher's soft labels of every training scan, read from the site's cache where the
  // same teacher, grid, temperature and precision made them, computed (and cached) otherwise.
  Status attach_teacher_soft_labels(const TensorSet& teacher, spdlog::logger& log) {
    const auto& o = options;
    UNet teacher_net(o.spec.unet);
    if (auto st = from_wire(*teacher_net, teacher); !st) return make_error("teacher: " + st.error().message);
    teacher_net->to(device);
    teacher_net->set_precision(for_inference(precision, device.str()));
    const auto key = soft_label_key(teacher, o.spec, o.temperature, precision);
    const auto cache_file = [&](const ScanSlices& scan) {
      std::string name = scan.id;
      std::replace(name.begin(), name.end(), '/', '_');
      return o.cache_dir / "soft-labels" / (key + "-" + name + ".pt");
    };
    std::vector<ScanSlices*> missing;
    for (auto& scan : scans) {
      if (!o.cache_dir.empty()) {
        const auto path = cache_file(scan);
        if (fs::exists(path)) {
          auto soft = load_tensor(path, o.storage_key);
          if (soft && soft->sizes() == torch::IntArrayRef({scan.images.size(0), scan.images.size(2), scan.images.size(3)})) {
            set_soft_labels(scan, *soft);
            continue;
          }
          log.warn("soft-label cache {}: {}; recomputing", path.filename().string(),
                   soft ? "wrong shape" : soft.error().message);
        }
      }
      missing.push_back(&scan);
    }
    if (!missing.empty()) {
      std::vector<ScanSlices> todo;
      for (auto* s : missing) todo.push_back(std::move(*s));
      attach_soft_labels(teacher_net, todo, o.temperature, device);
      for (std::size_t i = 0; i < missing.size(); ++i) {
        *missing[i] = std::move(todo[i]);
        if (!o.cache_dir.empty()) {
          std::error_code ec;
          fs::create_directories(o.cache_dir / "soft-labels", ec);
          if (auto st = save_tensor(cache_file(*missing[i]), missing[i]->soft, o.storage_key); !st) log.warn("soft-label cache: {}", st.error().message);
        }
      }
    } else {
      log.info("soft labels of {} scans read from the cache", scans.size());
    }
    return Status::success();
  }

  // The round's update after `steps` steps from the model the site was `sent`: its weights (under
  // FedBN with the batch-norm tensors it was sent: its own stay here), and for ada the mean of
  // the discriminator's gradients (`grad_sums` over the steps).
  Result<LocalUpdate> export_update(const TensorSet& sent, const std::vector<torch::Tensor>& grad_sums, int steps) {
    net->eval();
    keep_local_norm();
    LocalUpdate update;
    auto weights = to_wire(*net);
    if (!weights) return weights.error();
    update.model = std::move(*weights);
    if (options.local_batch_norm()) {
      for (std::size_t i = 0; i < update.model.tensors.size() && i < sent.tensors.size(); ++i) {
        if (std::count(batch_norm.begin(), batch_norm.end(), update.model.tensors[i].name)) {
          update.model.tensors[i] = sent.tensors[i];
        }
      }
    }
    if (options.type == JobType::ada) {
      std::size_t k = 0;
      for (const auto& p : discriminator->named_parameters()) {
        update.discriminator_grads.tensors.push_back(to_wire(p.key(), grad_sums[k++] / steps, DType::f32));
      }
    }
    update.samples = samples;
    update.steps = steps;
    return update;
  }

  // dp: what DP-SGD gives this site's patients: the noise (given, or the smallest that keeps the
  // planned steps within the target) and the planned epsilon.
  Status resolve_dp() {
    const auto& d = options.dp;
    if (!d.enabled()) return Status::success();
    if (options.type == JobType::evaluate) return make_error("dp: an evaluate job does not train");
    dp.on = true;
    dp.clip_norm = d.clip_norm;
    dp.delta = d.delta;
    dp.sample_rate = dp_sample_rate(static_cast<int>(scans.size()), options.batch_size, d.slices_per_subject);
    dp.noise_multiplier = d.noise_multiplier;
    if (d.target_epsilon > 0) {
      auto sigma = privacy::noise_for_epsilon(d.target_epsilon, dp.sample_rate, options.planned_steps, d.delta);
      if (!sigma) return make_error("dp: target_epsilon " + std::to_string(d.target_epsilon) + ": " + sigma.error().message);
      dp.noise_multiplier = *sigma;
    }
    auto planned = privacy::epsilon({dp.noise_multiplier, dp.sample_rate, options.planned_steps}, d.delta);
    if (!planned) return make_error("dp: " + planned.error().message);
    dp.planned_epsilon = planned->epsilon;
    return Status::success();
  }

  // Loads `model` into the network and, under FedBN, this site's own batch-norm tensors over it.
  Status load(const TensorSet& model) {
    if (auto st = from_wire(*net, model); !st) return make_error("model: " + st.error().message);
    if (options.local_batch_norm() && !local_norm.empty()) {
      torch::NoGradGuard no_grad;
      std::size_t k = 0;
      for (const auto& [name, tensor] : state_of(*net)) {
        if (std::count(batch_norm.begin(), batch_norm.end(), name)) tensor.copy_(local_norm[k++]);
      }
    }
    return Status::success();
  }
  void keep_local_norm() {
    if (!options.local_batch_norm()) return;
    local_norm.clear();
    for (const auto& [name, tensor] : state_of(*net)) {
      if (std::count(batch_norm.begin(), batch_norm.end(), name)) local_norm.push_back(tensor.detach().clone());
    }
  }

  // ---- one round's steps (train): the sum of the steps' losses, or why training stopped ----

  // The loss of a teacher or kd batch.
  torch::Tensor supervised_or_kd(const torch::Tensor& logits, const Batch& b) const {
    const auto& o = options;
    if (o.type == JobType::teacher) return supervised_loss(logits, b.labels, o.dice_weight);
    return kd_loss(logits, b.soft, o.temperature, KdObjective{o.kd_loss, o.kd_hard_weight, o.kd_confidence, o.dice_weight});
  }
  // An ADA batch: the discriminator's gradient on the segmenter's output for this site's domain,
  // left in its parameters' gradients (what the site sends, summed over the round), and the
  // segmenter's loss: supervised at the source, adversarial (weighted) at a target; undefined
  // where there is none (a target before the warm-up rounds end).
  torch::Tensor ada_batch(const Batch& b, double adversarial_weight) {
    const auto labels = torch::TensorOptions(torch::kInt64).device(device);
    const auto logits = net->forward(b.images);
    const auto output = torch::softmax(logits, 1);
    const auto n = b.images.size(0);
    discriminator->zero_grad();
    torch::nn::functional::cross_entropy(discriminator->forward(output.detach()), torch::full({n}, options.domain, labels))
        .backward();
    torch::Tensor loss;
    if (options.domain == 0) {
      loss = supervised_loss(logits, b.labels, options.dice_weight);
    } else if (adversarial_weight > 0) {
      loss = adversarial_weight *
             torch::nn::functional::cross_entropy(discriminator->forward(output), torch::zeros({n}, labels));
    }
    return loss;
  }
  void add_discriminator_grads(std::vector<torch::Tensor>& grad_sums) const {
    std::size_t k = 0;
    for (const auto& p : discriminator->parameters()) grad_sums[k++] += p.grad();
  }
  static Error diverged(int round) { return make_error("training diverged in round " + std::to_string(round)); }

  Result<double> plain_steps(int round, int steps, double lesion_fraction, const Recipe& recipe, std::mt19937_64& rng,
                             double adversarial_weight, std::vector<torch::Tensor>& grad_sums) {
    double loss_sum = 0;
    for (int s = 0; s < steps; ++s) {
      const Batch b = sample_batch(scans, options.batch_size, lesion_fraction, recipe, rng, device);
      torch::Tensor loss;
      if (options.type == JobType::ada) {
        loss = ada_batch(b, adversarial_weight);
        add_discriminator_grads(grad_sums);
      } else {
        loss = supervised_or_kd(net->forward(b.images), b);
      }
      if (!loss.defined()) continue;
      const double l = descend(*optimizer, loss, gradient_clip(options.recipe));
      if (!std::isfinite(l)) return diverged(round);
      loss_sum += l;
    }
    return loss_sum;
  }

  using MicroBatch = std::function<Batch(const ScanSlices&)>;
  Result<double> private_steps(int round, int steps, const DpSgd& dp, const MicroBatch& micro_batch, ClipTally& tally) {
    const auto loss_of = [&](const Batch& b) { return supervised_or_kd(net->forward(b.images), b); };
    double loss_sum = 0;
    for (int s = 0; s < steps; ++s) {
      const auto r = dp_step(*net, *optimizer, scans, dp, micro_batch, loss_of, secret);
      if (!std::isfinite(r.loss)) return diverged(round);
      tally.add(r);
      loss_sum += r.loss;
    }
    return loss_sum;
  }

  // Both what leaves an ADA site derive from its patients: the discriminator's gradients it sends
  // and the segmenter it steps. Per subject they are one vector, clipped together and noised
  // together: one Gaussian mechanism a step, counted as a kd or teacher step is.
  Result<double> private_ada_steps(int round, int steps, const DpSgd& dp, const MicroBatch& micro_batch,
                                   double adversarial_weight, std::vector<torch::Tensor>& grad_sums, ClipTally& tally) {
    // A target in its warm-up rounds steps no segmenter: its discriminator gradients alone are
    // clipped and noised (the segmenter's would be zero and their noise unused).
    const bool segmenter_steps = options.domain == 0 || adversarial_weight > 0;
    const auto disc = trainable_parameters(*discriminator);
    auto params = segmenter_steps ? trainable_parameters(*net) : std::vector<torch::Tensor>{};
    params.insert(params.end(), disc.begin(), disc.end());
    const auto backward = [&](const ScanSlices& scan) {
      const auto loss = ada_batch(micro_batch(scan), adversarial_weight);
      if (!loss.defined()) return 0.0;
      std::vector<torch::Tensor> kept;
      for (const auto& p : disc) kept.push_back(p.grad().clone());
      loss.backward();  // into the segmenter (and, through it, the discriminator: put back below)
      torch::NoGradGuard no_grad;
      for (std::size_t i = 0; i < disc.size(); ++i) disc[i].mutable_grad().copy_(kept[i]);
      return loss.item<double>();
    };
    double loss_sum = 0;
    for (int s = 0; s < steps; ++s) {
      const auto r = dp_gradient(params, scans, dp, backward, secret);
      if (!std::isfinite(r.loss)) return diverged(round);
      tally.add(r);
      add_discriminator_grads(grad_sums);
      if (segmenter_steps) optimizer->step();
      loss_sum += r.loss;
    }
    return loss_sum;
  }
};

SiteTrainer::SiteTrainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SiteTrainer::~SiteTrainer() = default;

const std::vector<SkippedScan>& SiteTrainer::skipped() const { return impl_->skipped; }
std::int64_t SiteTrainer::samples() const { return impl_->samples; }
const PrecisionChoice& SiteTrainer::precision() const { return impl_->precision; }
int SiteTrainer::training_subjects() const { return static_cast<int>(impl_->scans.size()); }
int SiteTrainer::evaluation_subjects() const { return static_cast<int>(impl_->evaluation.size()); }
const DpGuarantee& SiteTrainer::dp() const { return impl_->dp; }

namespace {
// Each learning setting as (the job's field, LearningSettings' field): one list, read both ways.
template <class Job, class Settings, class Assign>
void for_each_learning_setting(Job& j, Settings& s, Assign&& assign) {
  assign(j.batch_size, s.batch_size);
  assign(j.dice_weight, s.dice_weight);
  assign(j.lesion_slice_fraction, s.lesion_slice_fraction);
  assign(j.augment, s.augment);
  assign(j.temperature, s.temperature);
  assign(j.kd_loss, s.kd_loss);
  assign(j.kd_hard_weight, s.kd_hard_weight);
  assign(j.kd_confidence, s.kd_confidence);
  assign(j.bn_statistics, s.bn_statistics);
  assign(j.test_time_mirroring, s.test_time_mirroring);
}
}  // namespace

LearningSettings learning_settings(const protocol::JobSpec& job) {
  LearningSettings s;
  for_each_learning_setting(job, s, [](const auto& from, auto& to) { to = from; });
  return s;
}

void set_learning_settings(protocol::JobSpec& job, const LearningSettings& settings) {
  for_each_learning_setting(job, settings, [](auto& to, const auto& from) { to = from; });
}

Result<std::unique_ptr<SiteTrainer>> SiteTrainer::open(const SiteJobOptions& o, const TensorSet& teacher) {
  auto log = log::get("site-trainer");
  if (auto st = validate(o.spec); !st) return make_error("model spec: " + st.error().message);
  auto device = parse_device(o.device);
  if (!device) return device.error();
  if (o.threads > 0) torch::set_num_threads(o.threads);

  auto precision = choose_precision(o.precision, o.device);
  if (!precision) return precision.error();
  log->info("precision {} ({})", precision->name(), precision->reason);

  auto impl = std::make_unique<Impl>();
  impl->options = o;
  impl->device = *device;
  impl->precision = *precision;
  const bool training = o.type != JobType::evaluate;
  impl->load_scans(*log);
  if (training && !o.train.empty() && impl->scans.empty()) {
    return make_error("none of the " + std::to_string(o.train.size()) + " training scans could be used");
  }

  if (o.type == JobType::kd && !impl->scans.empty()) {
    if (auto st = impl->attach_teacher_soft_labels(teacher, *log); !st) return st.error();
  }

  impl->net = UNet(o.spec.unet);
  impl->net->to(impl->device);
  impl->net->set_precision(impl->precision);
  if (o.local_batch_norm()) impl->batch_norm = batch_norm_tensors(o.spec);
  if (auto st = validate(o.recipe, static_cast<int>(std::min(o.spec.grid.in_plane_size[0], o.spec.grid.in_plane_size[1])), o.spec.unet.depth); !st) {
    return make_error("recipe: " + st.error().message);
  }
  if (auto st = validate_federated(o.recipe); !st) return make_error("recipe: " + st.error().message);
  if (o.type == JobType::ada) {
    impl->discriminator = Discriminator(o.spec.unet.classes);
    impl->discriminator->to(impl->device);
  }
  if (training && !impl->scans.empty()) {
    if (auto st = impl->resolve_dp(); !st) return st.error();
    if (impl->dp.on) {
      log->info("differential privacy: patient-level DP-SGD, clip norm {}, noise multiplier {:.4f}, each of {} patients "
                "joins a step with probability {:.4f}; epsilon {:.3f} at delta {} after the planned {} steps",
                impl->dp.clip_norm, impl->dp.noise_multiplier, impl->scans.size(), impl->dp.sample_rate,
                impl->dp.planned_epsilon, impl->dp.delta, o.planned_steps);
    }
  }
  return std::unique_ptr<SiteTrainer>(new SiteTrainer(std::move(impl)));
}

Result<LocalUpdate> SiteTrainer::train(int round, const TensorSet& model, const TensorSet& discriminator, int steps,
                                       double learning_rate, double adversarial_weight) {
  auto& m = *impl_;
  const auto& o = m.options;
  if (o.type == JobType::evaluate) return make_error("an evaluate job does not train");
  if (m.scans.empty()) return make_error("this site holds no training scans for the job");
  if (steps < 1) return make_error("a round needs at least one step");
  const auto start = std::chrono::steady_clock::now();
  if (auto st = m.load(model); !st) return st.error();
  const bool ada = o.type == JobType::ada;
  if (ada) {
    if (auto st = from_wire(*m.discriminator, discriminator); !st) return make_error("discriminator: " + st.error().message);
  }
  if (!m.optimizer) m.optimizer = make_optimizer(m.net->parameters(), o.recipe, learning_rate);
  // Adam ignores the scale of a loss, so where the adversarial term is the whole loss (an
  // unlabelled ADA target) its weight scales the step instead; otherwise the target would move
  // as fast as a supervised site and, averaged in, undo the segmentation.
  const bool adversarial_only = o.type == JobType::ada && o.domain == 1;
  const double step_rate = adversarial_only ? learning_rate * adversarial_weight : learning_rate;
  set_learning_rate(*m.optimizer, step_rate);

  const Recipe recipe = sampling_recipe(o.recipe, o.augment);
  std::mt19937_64 rng(mix(o.seed, static_cast<std::uint64_t>(round)));
  torch::manual_seed(mix(o.seed ^ 0x5eed, static_cast<std::uint64_t>(round)));
  m.net->train();
  if (m.dp.on) freeze_batch_norm(*m.net);  // no statistics of this site's patients in the model
  std::vector<torch::Tensor> grad_sums;
  if (ada) {
    m.discriminator->train();
    for (const auto& p : m.discriminator->parameters()) grad_sums.push_back(torch::zeros_like(p));
  }
  const double lesion_fraction = ada && o.domain == 1 ? 0.0 : o.lesion_slice_fraction;
  Result<double> loss_sum = 0.0;
  if (!m.dp.on) {
    loss_sum = m.plain_steps(round, steps, lesion_fraction, recipe, rng, adversarial_weight, grad_sums);
  } else {
    const DpSgd dp{m.dp.clip_norm, m.dp.noise_multiplier, m.dp.sample_rate};
    const auto micro_batch = [&](const ScanSlices& scan) {
      return sample_batch(std::vector<ScanSlices>{scan}, o.dp.slices_per_subject, lesion_fraction, recipe, rng, m.device);
    };
    ClipTally tally;
    loss_sum = ada ? m.private_ada_steps(round, steps, dp, micro_batch, adversarial_weight, grad_sums, tally)
                   : m.private_steps(round, steps, dp, micro_batch, tally);
    log::get("site-trainer")->info("round {} under dp: {}", round, tally.summary(dp.clip_norm));
  }
  if (!loss_sum) return loss_sum.error();
  auto update = m.export_update(model, grad_sums, steps);
  if (!update) return update.error();
  update->loss = *loss_sum / steps;
  update->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return update;
}

Result<std::vector<SubjectScore>> SiteTrainer::evaluate(const TensorSet& model) {
  auto& m = *impl_;
  if (auto st = m.load(model); !st) return st.error();
  m.net->eval();
  return score_subjects(m.net, m.options.spec, m.evaluation, m.device, false, m.options.test_time_mirroring);
}

Result<TensorSet> SiteTrainer::as_evaluated(const TensorSet& model) {
  auto& m = *impl_;
  if (!m.options.local_batch_norm()) return model;
  if (auto st = m.load(model); !st) return st.error();
  return to_wire(*m.net);
}

}  // namespace fedda::models
