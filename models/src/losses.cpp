#include "losses.h"

namespace fedda::models {

torch::Tensor ignoring_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels) {
  return torch::nn::functional::cross_entropy(
      logits, labels, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(kIgnoreLabel));
}

torch::Tensor soft_dice_loss(const torch::Tensor& logits, const torch::Tensor& labels) {
  const auto p = torch::softmax(logits, 1).select(1, 1);
  const auto counted = (labels != kIgnoreLabel).to(p.dtype());
  const auto truth = (labels == 1).to(p.dtype());
  const auto overlap = (p * truth * counted).sum();
  const auto total = (p * counted).sum() + (truth * counted).sum();
  return 1.0 - (2.0 * overlap + 1.0) / (total + 1.0);
}

torch::Tensor supervised_loss(const torch::Tensor& logits, const torch::Tensor& labels, double dice_weight) {
  auto loss = ignoring_cross_entropy(logits, labels);
  if (dice_weight > 0) loss = loss + dice_weight * soft_dice_loss(logits, labels);
  return loss;
}

torch::Tensor tempered_softmax(const torch::Tensor& logits, double temperature) {
  return torch::softmax(logits / temperature, 1);
}

torch::Tensor distillation_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_soft,
                                double temperature) {
  const auto log_student = torch::log_softmax(student_logits / temperature, 1);
  // KL(p || q) = sum p (log p - log q); xlogy keeps 0 * log 0 = 0.
  const auto kl = (torch::xlogy(teacher_soft, teacher_soft) - teacher_soft * log_student).sum(1);
  return kl.mean() * (temperature * temperature);
}

torch::Tensor paper_distillation_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_soft) {
  return -(teacher_soft * torch::log_softmax(student_logits, 1)).sum(1).mean();
}

torch::Tensor teacher_probability(const torch::Tensor& teacher_soft, double temperature) {
  const auto p = teacher_soft.select(1, 1).clamp(1e-6, 1 - 1e-6);
  return torch::sigmoid(temperature * torch::log(p / (1 - p)));
}

torch::Tensor confident_labels(const torch::Tensor& teacher_soft, double temperature, double confidence) {
  const auto p = teacher_probability(teacher_soft, temperature);
  auto labels = torch::full(p.sizes(), kIgnoreLabel, torch::TensorOptions(torch::kInt64).device(p.device()));
  labels.masked_fill_(p <= 1 - confidence, 0);
  labels.masked_fill_(p >= confidence, 1);
  return labels;
}

torch::Tensor kd_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_soft, double temperature,
                      const KdObjective& o) {
  auto loss = o.loss == protocol::KdLoss::paper ? paper_distillation_loss(student_logits, teacher_soft)
                                : distillation_loss(student_logits, teacher_soft, temperature);
  if (o.hard_weight > 0) {
    loss = loss + o.hard_weight * supervised_loss(student_logits, confident_labels(teacher_soft, temperature, o.confidence),
                                                  o.dice_weight);
  }
  return loss;
}

}  // namespace fedda::models
