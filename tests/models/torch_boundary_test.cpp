// LibTorch's exceptions stop at the models library's boundary: what it throws comes back as an
// internal Error naming what was being done, without LibTorch's C++ backtrace.
#include "torch_boundary.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <stdexcept>

namespace fedda::models {
namespace {

TEST(TorchBoundary, ALibTorchErrorComesBackAsAnInternalErrorNamingTheStep) {
  const Result<double> r = at_boundary("scoring", []() -> Result<double> {
    auto t = torch::zeros({2, 3});
    return t.view({7}).sum().item<double>();  // 6 elements cannot be viewed as 7: LibTorch throws
  });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::internal);
  EXPECT_EQ(r.error().message.rfind("scoring: ", 0), 0u) << r.error().message;
  EXPECT_NE(r.error().message.find("invalid for input of size 6"), std::string::npos) << r.error().message;
  EXPECT_EQ(r.error().message.find("Exception raised from"), std::string::npos) << "a backtrace: " << r.error().message;
}

TEST(TorchBoundary, OtherExceptionsAndResultsPassAsTheyAre) {
  const Status thrown = at_boundary("training", []() -> Status { throw std::runtime_error("out of disk"); });
  ASSERT_FALSE(thrown);
  EXPECT_EQ(thrown.error().message, "training: out of disk");
  EXPECT_EQ(thrown.error().kind, ErrorKind::internal);
  const Status refused = at_boundary("training", []() -> Status { return make_error("no labelled subjects"); });
  EXPECT_EQ(refused.error().message, "no labelled subjects");
  EXPECT_EQ(refused.error().kind, ErrorKind::invalid);
  EXPECT_EQ(*at_boundary("x", []() -> Result<int> { return 4; }), 4);
}

}  // namespace
}  // namespace fedda::models
