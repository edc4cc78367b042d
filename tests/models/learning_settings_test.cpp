// A job's learning settings and the trainer's: every field of LearningSettings is read from the
// JobSpec field of its name and written back to it, and the defaults of the two agree (a site
// trains a job as the centralized harness trains the job's twin).
#include <gtest/gtest.h>

#include "fedda/models/federated.h"

namespace fedda::models {
namespace {

using protocol::BnStatistics;
using protocol::KdLoss;

// Every field off its default.
LearningSettings unusual() {
  LearningSettings s;
  s.batch_size = 3;
  s.dice_weight = 0.25;
  s.lesion_slice_fraction = 0.75;
  s.augment = false;
  s.temperature = 4.5;
  s.kd_loss = KdLoss::paper;
  s.kd_hard_weight = 1.5;
  s.kd_confidence = 0.9;
  s.bn_statistics = BnStatistics::local;
  s.test_time_mirroring = true;
  return s;
}

TEST(LearningSettings, EachIsWrittenToTheJobFieldOfItsNameAndReadBack) {
  protocol::JobSpec job;
  set_learning_settings(job, unusual());
  EXPECT_EQ(job.batch_size, 3);
  EXPECT_EQ(job.dice_weight, 0.25);
  EXPECT_EQ(job.lesion_slice_fraction, 0.75);
  EXPECT_FALSE(job.augment);
  EXPECT_EQ(job.temperature, 4.5);
  EXPECT_EQ(job.kd_loss, KdLoss::paper);
  EXPECT_EQ(job.kd_hard_weight, 1.5);
  EXPECT_EQ(job.kd_confidence, 0.9);
  EXPECT_EQ(job.bn_statistics, BnStatistics::local);
  EXPECT_TRUE(job.test_time_mirroring);

  const auto read = learning_settings(job);
  const auto want = unusual();
  EXPECT_EQ(read.batch_size, want.batch_size);
  EXPECT_EQ(read.dice_weight, want.dice_weight);
  EXPECT_EQ(read.lesion_slice_fraction, want.lesion_slice_fraction);
  EXPECT_EQ(read.augment, want.augment);
  EXPECT_EQ(read.temperature, want.temperature);
  EXPECT_EQ(read.kd_loss, want.kd_loss);
  EXPECT_EQ(read.kd_hard_weight, want.kd_hard_weight);
  EXPECT_EQ(read.kd_confidence, want.kd_confidence);
  EXPECT_EQ(read.bn_statistics, want.bn_statistics);
  EXPECT_EQ(read.test_time_mirroring, want.test_time_mirroring);
  EXPECT_TRUE(read.local_batch_norm());
}

TEST(LearningSettings, AJobsDefaultsAreTheTrainersDefaults) {
  const auto read = learning_settings(protocol::JobSpec{});
  const TrainConfig trainer;
  EXPECT_EQ(read.batch_size, trainer.batch_size);
  EXPECT_EQ(read.dice_weight, trainer.dice_weight);
  EXPECT_EQ(read.lesion_slice_fraction, trainer.lesion_slice_fraction);
  EXPECT_EQ(read.augment, trainer.augment);
  EXPECT_EQ(read.temperature, trainer.temperature);
  EXPECT_EQ(read.kd_loss, trainer.kd_loss);
  EXPECT_EQ(read.kd_hard_weight, trainer.kd_hard_weight);
  EXPECT_EQ(read.kd_confidence, trainer.kd_confidence);
  EXPECT_EQ(read.bn_statistics, trainer.bn_statistics);
  EXPECT_EQ(read.test_time_mirroring, trainer.test_time_mirroring);
}

}  // namespace
}  // namespace fedda::models
