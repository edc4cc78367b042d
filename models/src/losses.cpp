#include "losses.h"

namespace fedda::models {

torch::Tensor supervised_loss(const torch::Tensor& logits, const torch::Tensor& labels) {
  return torch::nn::functional::cross_entropy(
      logits, labels, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(kIgnoreLabel));
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

}  // namespace fedda::models
