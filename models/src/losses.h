#pragma once
// Losses of the seed paper (private; LibTorch inside).

#include <string>

#include <torch/torch.h>

#include "fedda/common/settings.h"

namespace fedda::models {

// Label value excluded from the supervised loss: "other pathology" of the WMH challenge.
inline constexpr int64_t kIgnoreLabel = 2;

// Cross-entropy over voxels, ignoring label 2. logits [N, C, H, W], labels [N, H, W] int64.
torch::Tensor ignoring_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels);

// 1 - soft Dice of the WMH class over the whole batch, ignoring label 2.
torch::Tensor soft_dice_loss(const torch::Tensor& logits, const torch::Tensor& labels);

// Cross-entropy + dice_weight * soft Dice: WMH are about 1% of brain voxels, and cross-entropy
// alone learns to predict none of them for a long time.
torch::Tensor supervised_loss(const torch::Tensor& logits, const torch::Tensor& labels, double dice_weight);

// Hinton's distillation loss: T^2 * KL(softmax(teacher / T) || softmax(student / T)),
// averaged over voxels. `teacher_soft` holds the teacher's tempered posteriors [N, C, H, W].
// Zero when the student's tempered posteriors equal the teacher's; its gradient with respect
// to the student logits is T * (softmax(student / T) - teacher_soft) / voxels.
torch::Tensor distillation_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_soft,
                                double temperature);

// Equation 3 of the paper taken as written: the cross-entropy between the teacher's tempered
// posteriors and the student's posteriors at T = 1, averaged over voxels.
torch::Tensor paper_distillation_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_soft);

// The teacher's own p(WMH) (at T = 1) from its tempered posteriors [N, 2, H, W]: the logit
// difference is T * logit(p_T).
torch::Tensor teacher_probability(const torch::Tensor& teacher_soft, double temperature);

// The teacher's confident voxels as hard labels: 1 where its p(WMH) >= confidence, 0 where it is
// <= 1 - confidence, the ignored label (2) in between. confidence 0.5: every voxel, its argmax.
torch::Tensor confident_labels(const torch::Tensor& teacher_soft, double temperature, double confidence);

// What a student learns from, in full: the distillation term (`loss`: "hinton" or "paper") plus
// `hard_weight` times the supervised loss (cross-entropy + dice_weight * soft Dice) on the
// teacher's confident voxels as hard labels. With hard_weight 0 it is the distillation term alone.
struct KdObjective {
  protocol::KdLoss loss = protocol::KdLoss::hinton;
  double hard_weight = 0;
  double confidence = 0.5;
  double dice_weight = 1.0;
};
torch::Tensor kd_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_soft, double temperature,
                      const KdObjective& objective);

// Tempered posteriors softmax(logits / T) over the class dimension.
torch::Tensor tempered_softmax(const torch::Tensor& logits, double temperature);

}  // namespace fedda::models
