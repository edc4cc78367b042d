// DP-SGD with the patient as the unit: see dp_sgd.h.
#include "dp_sgd.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "fedda/common/crypto.h"

namespace fedda::models {

double dp_sample_rate(int subjects, int batch, int per_subject) {
  if (subjects < 1 || batch < 1 || per_subject < 1) return 1.0;
  const double expected = static_cast<double>(batch) / per_subject;
  return std::min(1.0, expected / subjects);
}

std::uint64_t SecretRandom::word() {
  if (next_ == words_.size()) {
    constexpr std::size_t kWords = 4096;
    auto bytes = crypto::random_bytes(kWords * sizeof(std::uint64_t));
    if (!bytes) throw std::runtime_error("DP: no random bytes from OpenSSL: " + bytes.error().message);
    words_.resize(kWords);
    std::memcpy(words_.data(), bytes->data(), bytes->size());
    next_ = 0;
  }
  return words_[next_++];
}

double SecretRandom::uniform() { return static_cast<double>((word() >> 11) + 1) * 0x1.0p-53; }

torch::Tensor SecretRandom::gaussian(torch::IntArrayRef sizes, double sd) {
  auto out = torch::empty(sizes, torch::kFloat32);
  const auto n = out.numel();
  auto* v = out.data_ptr<float>();
  constexpr double kTwoPi = 6.283185307179586;
  for (std::int64_t i = 0; i < n; i += 2) {
    const double r = sd * std::sqrt(-2.0 * std::log(uniform()));
    const double a = kTwoPi * uniform();
    v[i] = static_cast<float>(r * std::cos(a));
    if (i + 1 < n) v[i + 1] = static_cast<float>(r * std::sin(a));
  }
  return out;
}

DpStepResult dp_gradient(const std::vector<torch::Tensor>& params, const std::vector<ScanSlices>& scans,
                         const DpSgd& dp, const std::function<double(const ScanSlices&)>& backward,
                         SecretRandom& secret) {
  std::vector<torch::Tensor> sum;
  for (const auto& p : params) sum.push_back(torch::zeros_like(p));
  const auto zero_grads = [&] {
    for (const auto& p : params) {
      if (p.grad().defined()) p.mutable_grad().zero_();
    }
  };
  DpStepResult result;
  double loss_sum = 0;
  for (const auto& scan : scans) {
    if (!(secret.uniform() <= dp.sample_rate)) continue;  // Poisson sampling, unknown to anyone else
    zero_grads();
    loss_sum += backward(scan);
    ++result.subjects;
    torch::NoGradGuard no_grad;
    double squared = 0;
    for (const auto& p : params) {
      if (p.grad().defined()) squared += p.grad().to(torch::kFloat64).pow(2).sum().item<double>();
    }
    const double norm = std::sqrt(squared);
    const bool clip = norm > dp.clip_norm;
    result.norms.push_back(norm);
    result.clipped += clip ? 1 : 0;
    const double scale = clip ? dp.clip_norm / norm : 1.0;
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (params[i].grad().defined()) sum[i].add_(params[i].grad(), scale);
    }
  }
  torch::NoGradGuard no_grad;
  const double expected = dp.sample_rate * static_cast<double>(scans.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    auto n = secret.gaussian(sum[i].sizes(), dp.noise_multiplier * dp.clip_norm);
    auto g = (sum[i] + n.to(sum[i].device(), sum[i].scalar_type())) / expected;
    if (params[i].grad().defined()) {
      params[i].mutable_grad().copy_(g);
    } else {
      params[i].mutable_grad() = g;
    }
  }
  result.loss = result.subjects > 0 ? loss_sum / result.subjects : 0;
  return result;
}

DpStepResult dp_step(torch::nn::Module& net, torch::optim::Optimizer& optimizer, const std::vector<ScanSlices>& scans,
                     const DpSgd& dp, const std::function<Batch(const ScanSlices&)>& micro_batch,
                     const std::function<torch::Tensor(const Batch&)>& loss, SecretRandom& secret) {
  const auto params = trainable_parameters(net);
  const auto backward = [&](const ScanSlices& scan) {
    const auto l = loss(micro_batch(scan));
    l.backward();
    return l.item<double>();
  };
  const auto result = dp_gradient(params, scans, dp, backward, secret);
  optimizer.step();
  return result;
}

std::vector<torch::Tensor> trainable_parameters(torch::nn::Module& net) {
  std::vector<torch::Tensor> params;
  for (const auto& p : net.parameters()) {
    if (p.requires_grad()) params.push_back(p);
  }
  return params;
}

void freeze_batch_norm(torch::nn::Module& net) {
  for (const auto& m : net.modules(/*include_self=*/false)) {
    if (dynamic_cast<torch::nn::BatchNorm2dImpl*>(m.get())) m->eval();
  }
}


}  // namespace fedda::models
