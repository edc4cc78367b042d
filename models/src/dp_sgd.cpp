// DP-SGD with the patient as the unit: see dp_sgd.h.
#include "dp_sgd.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "fedda/common/crypto.h"

namespace fedda::models {

double dp_sample_rate(int subjects, int batch, int per_subject) {
  if (subjects < 1 || batch < 1 || per_subject < 1) return 1.0;
  const double expected = static_cast<double>(batch) / per_subject;
  return std::min(1.0, expected / subjects);
}

DpStepResult dp_step(torch::nn::Module& net, torch::optim::Optimizer& optimizer, const std::vector<ScanSlices>& scans,
                     const DpSgd& dp, const std::function<Batch(const ScanSlices&)>& micro_batch,
                     const std::function<torch::Tensor(const Batch&)>& loss, std::mt19937_64& rng,
                     torch::Generator& noise) {
  std::vector<torch::Tensor> params;
  for (const auto& p : net.parameters()) {
    if (p.requires_grad()) params.push_back(p);
  }
  std::vector<torch::Tensor> sum;
  for (const auto& p : params) sum.push_back(torch::zeros_like(p));
  DpStepResult result;
  std::bernoulli_distribution joins(dp.sample_rate);
  double loss_sum = 0;
  for (const auto& scan : scans) {
    if (!joins(rng)) continue;
    const Batch b = micro_batch(scan);
    optimizer.zero_grad();
    const auto l = loss(b);
    l.backward();
    loss_sum += l.item<double>();
    ++result.subjects;
    torch::NoGradGuard no_grad;
    double squared = 0;
    for (const auto& p : params) {
      if (p.grad().defined()) squared += p.grad().to(torch::kFloat64).pow(2).sum().item<double>();
    }
    const double norm = std::sqrt(squared);
    const double scale = norm > dp.clip_norm ? dp.clip_norm / norm : 1.0;
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (params[i].grad().defined()) sum[i].add_(params[i].grad(), scale);
    }
  }
  {
    torch::NoGradGuard no_grad;
    const double expected = dp.sample_rate * static_cast<double>(scans.size());
    for (std::size_t i = 0; i < params.size(); ++i) {
      auto n = torch::normal(0.0, dp.noise_multiplier * dp.clip_norm, sum[i].sizes(), noise,
                             torch::TensorOptions(torch::kFloat32));
      auto g = (sum[i] + n.to(sum[i].device(), sum[i].scalar_type())) / expected;
      if (params[i].grad().defined()) {
        params[i].mutable_grad().copy_(g);
      } else {
        params[i].mutable_grad() = g;
      }
    }
  }
  optimizer.step();
  result.loss = result.subjects > 0 ? loss_sum / result.subjects : 0;
  return result;
}

void freeze_batch_norm(torch::nn::Module& net) {
  for (const auto& m : net.modules(/*include_self=*/false)) {
    if (dynamic_cast<torch::nn::BatchNorm2dImpl*>(m.get())) m->eval();
  }
}

torch::Generator secret_noise_generator() {
  auto bytes = crypto::random_bytes(sizeof(std::uint64_t));
  if (!bytes) throw std::runtime_error("DP noise: no random bytes from OpenSSL: " + bytes.error().message);
  std::uint64_t seed = 0;
  std::memcpy(&seed, bytes->data(), sizeof seed);
  auto gen = at::detail::createCPUGenerator(seed);
  return gen;
}

}  // namespace fedda::models
