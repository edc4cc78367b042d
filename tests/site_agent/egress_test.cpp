// The egress guard lets out exactly the job's tensors, nothing more, nothing reshaped.
#include "fedda/site_agent/egress.h"

#include <gtest/gtest.h>

#include <cmath>

#include "fedda/models/federated.h"
#include "fedda/models_core/model_spec.h"

namespace fedda::site_agent {
namespace {

protocol::JobSpec job_of(const std::string& type) {
  models::ModelSpec spec;
  spec.unet.width = 4;
  spec.unet.depth = 2;
  spec.grid.in_plane_size = {32, 32};
  protocol::JobSpec job;
  job.type = protocol::parse_job_type(type).value();
  job.model_spec_json = models::to_json(spec);
  return job;
}

protocol::RoundUpdate honest_update(const protocol::JobSpec& job) {
  protocol::RoundUpdate u;
  u.model = models::new_model_weights(models::model_spec_from_json(job.model_spec_json).value(), 7).value();
  u.samples = 10;
  return u;
}

TEST(EgressGuard, LetsTheJobsTensorsOut) {
  const auto job = job_of("kd");
  auto guard = EgressGuard::for_job(job);
  ASSERT_TRUE(guard) << guard.error().message;
  EXPECT_TRUE(guard->check(honest_update(job), false));
  protocol::RoundUpdate evaluation;
  evaluation.metrics.push_back({"s1", 0.5, 3, 10, 0.5, 0.5});
  EXPECT_TRUE(guard->check(evaluation, true));
}

// A quality report leaves only with an evaluation, and only as consistent aggregates.
TEST(EgressGuard, LetsAQualityReportOutOnlyAsAggregatesOfAnEvaluation) {
  const auto job = job_of("kd");
  auto guard = EgressGuard::for_job(job);
  ASSERT_TRUE(guard);
  protocol::RoundUpdate evaluation;
  evaluation.metrics.push_back({"s1", 0.5, 3, 10, 0.5, 0.5});
  evaluation.has_quality = true;
  evaluation.quality = {5, 1, 0, false, true, 0.6, 0.5, 0.7};
  EXPECT_TRUE(guard->check(evaluation, true));
  auto with_quality = honest_update(job);
  with_quality.has_quality = true;
  with_quality.quality = evaluation.quality;
  auto st = guard->check(with_quality, false);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("a training update carries a quality report"), std::string::npos);
  const auto refused = [&](protocol::QualitySummary q, const std::string& why) {
    auto u = evaluation;
    u.quality = q;
    auto r = guard->check(u, true);
    ASSERT_FALSE(r) << why;
    EXPECT_NE(r.error().message.find(why), std::string::npos) << r.error().message;
  };
  refused({5, 6, 0, false, true, 0.6, 0.5, 0.7}, "counts are inconsistent");
  refused({0, 0, 0, false, true, 0.6, 0.5, 0.7}, "counts are inconsistent");
  refused({5, 1, -1, false, true, 0.6, 0.5, 0.7}, "counts are inconsistent");
  refused({5, 1, 0, false, true, 1.5, 0.5, 0.7}, "not Dice values");
  refused({5, 1, 0, false, true, NAN, 0.5, 0.7}, "not Dice values");
  refused({5, 1, 0, false, true, 0.4, 0.5, 0.7}, "quartiles are out of order");
}

TEST(EgressGuard, RefusesAnExtraTensor) {
  const auto job = job_of("kd");
  auto guard = EgressGuard::for_job(job).value();
  auto u = honest_update(job);
  u.model.tensors.push_back(make_f32("flair_slice", {2, 2}, {1, 2, 3, 4}));
  auto st = guard.check(u, false);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("tensors where"), std::string::npos) << st.error().message;
}

TEST(EgressGuard, RefusesATensorOfTheWrongShape) {
  const auto job = job_of("kd");
  auto guard = EgressGuard::for_job(job).value();
  auto u = honest_update(job);
  auto& t = u.model.tensors.front();
  const auto elements = t.elements();
  t.shape = {elements};  // same bytes, flattened
  seal(u.model);
  auto st = guard.check(u, false);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("has shape"), std::string::npos) << st.error().message;
}

TEST(EgressGuard, RefusesWhatDoesNotBelongToTheRound) {
  const auto job = job_of("kd");
  auto guard = EgressGuard::for_job(job).value();
  auto u = honest_update(job);
  u.metrics.push_back({"s1", 0.5, 3, 10, 0.5, 0.5});
  EXPECT_FALSE(guard.check(u, false));  // per-subject metrics in a training update
  auto v = honest_update(job);
  v.discriminator_grads.tensors.push_back(make_f32("x", {1}, {1}));
  EXPECT_FALSE(guard.check(v, false));  // gradients outside ADA
  EXPECT_FALSE(guard.check(honest_update(job), true));  // weights in an evaluation answer

  const auto ada = job_of("ada");
  auto ada_guard = EgressGuard::for_job(ada).value();
  EXPECT_FALSE(ada_guard.check(honest_update(ada), false));  // ADA update without its gradients
}

}  // namespace
}  // namespace fedda::site_agent
