#include "server_optimizer.h"

#include <cmath>

#include "fedda/common/protocol.h"

namespace fedda::coordinator {

ServerOptimizer::ServerOptimizer(protocol::ServerOptimizer kind, double learning_rate)
    : kind_(kind), learning_rate_(learning_rate) {}

Result<TensorSet> ServerOptimizer::step(const TensorSet& global, const TensorSet& average) {
  if (!adaptive()) return average;
  if (auto st = check_same_layout(average, global); !st) return make_error("server optimizer: " + st.error().message);
  constexpr double beta1 = 0.9, beta2 = 0.99, tau = 1e-3;
  TensorSet next = average;
  for (std::size_t i = 0; i < global.tensors.size(); ++i) {
    const auto& g = global.tensors[i];
    if (g.dtype != DType::f32 || !protocol::is_parameter(g.name)) continue;
    const auto x = to_f32(g), avg = to_f32(average.tensors[i]);
    auto& m = m_[g.name];
    auto& v = v_[g.name];
    if (m.size() != x.size()) m.assign(x.size(), 0.0f);
    if (v.size() != x.size()) v.assign(x.size(), static_cast<float>(tau * tau));
    std::vector<float> out(x.size());
    for (std::size_t k = 0; k < x.size(); ++k) {
      const double delta = static_cast<double>(avg[k]) - x[k];
      m[k] = static_cast<float>(beta1 * m[k] + (1 - beta1) * delta);
      const double d2 = delta * delta;
      if (kind_ == protocol::ServerOptimizer::fedyogi) {
        v[k] = static_cast<float>(v[k] - (1 - beta2) * d2 * (v[k] > d2 ? 1.0 : (v[k] < d2 ? -1.0 : 0.0)));
      } else {
        v[k] = static_cast<float>(beta2 * v[k] + (1 - beta2) * d2);
      }
      out[k] = static_cast<float>(x[k] + learning_rate_ * m[k] / (std::sqrt(std::max(0.0f, v[k])) + tau));
    }
    next.tensors[i] = make_f32(g.name, g.shape, out);
  }
  return next;
}

TensorSet ServerOptimizer::state() const {
  TensorSet s;
  for (const auto& [name, values] : m_) {
    s.tensors.push_back(make_f32("m/" + name, {static_cast<std::int64_t>(values.size())}, values));
  }
  for (const auto& [name, values] : v_) {
    s.tensors.push_back(make_f32("v/" + name, {static_cast<std::int64_t>(values.size())}, values));
  }
  return s;
}

Status ServerOptimizer::restore(const TensorSet& state) {
  m_.clear();
  v_.clear();
  for (const auto& t : state.tensors) {
    if (t.name.size() < 3 || t.dtype != DType::f32) return make_error("server optimizer state: tensor '" + t.name + "'");
    (t.name[0] == 'm' ? m_ : v_)[t.name.substr(2)] = to_f32(t);
  }
  return Status::success();
}

}  // namespace fedda::coordinator
