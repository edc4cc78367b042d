#include "fedda/imaging/nifti_io.h"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "support/test_support.h"

namespace fedda::imaging {
namespace {

using testing::RawNifti;
using testing::ScratchDir;

Image ramp(const Geometry& g) {
  Image im(g);
  for (std::size_t i = 0; i < im.voxels.size(); ++i) im.voxels[i] = 0.25f * static_cast<float>(i % 97) - 3.0f;
  return im;
}

void expect_error_mentions(const Error& e, const std::string& a, const std::string& b) {
  EXPECT_NE(e.message.find(a), std::string::npos) << e.message;
  EXPECT_NE(e.message.find(b), std::string::npos) << e.message;
}

TEST(NiftiIo, ImageRoundTripKeepsVoxelsAndObliqueAnisotropicGeometry) {
  ScratchDir dir;
  const Image original = ramp(testing::oblique_geometry(17, 13, 5));
  for (const char* name : {"a.nii", "a.nii.gz"}) {
    ASSERT_TRUE(write_image(dir / name, original));
    auto back = read_image(dir / name);
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_TRUE(same_geometry(original.geometry, back->geometry))
        << geometry_difference(original.geometry, back->geometry);
    EXPECT_EQ(back->voxels, original.voxels);
  }
}

TEST(NiftiIo, LabelRoundTripIsExact) {
  ScratchDir dir;
  LabelMap labels(testing::oblique_geometry(9, 8, 4));
  for (std::size_t i = 0; i < labels.voxels.size(); ++i) labels.voxels[i] = i % 3;
  ASSERT_TRUE(write_label_map(dir / "wmh.nii.gz", labels));
  auto back = read_label_map(dir / "wmh.nii.gz");
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->voxels, labels.voxels);
  EXPECT_TRUE(same_geometry(labels.geometry, back->geometry));
}

TEST(NiftiIo, WriteLeavesNoTemporaryFiles) {
  ScratchDir dir;
  ASSERT_TRUE(write_image(dir / "x.nii.gz", ramp(testing::make_geometry(4, 4, 4))));
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1);
}

TEST(NiftiIo, AppliesIntensityScalingOfIntegerData) {
  ScratchDir dir;
  RawNifti n;
  n.dim = {3, 2, 2, 2, 1, 1, 1, 1};
  n.datatype = 4;  // INT16
  n.bitpix = 16;
  n.scl_slope = 0.5f;
  n.scl_inter = 10.0f;
  n.data = testing::raw_bytes(std::vector<std::int16_t>{0, 1, 2, 3, 4, 5, 6, -8});
  testing::write_raw_nifti(dir / "scaled.nii", n);
  auto image = read_image(dir / "scaled.nii");
  ASSERT_TRUE(image) << image.error().message;
  EXPECT_FLOAT_EQ(image->voxels[0], 10.0f);
  EXPECT_FLOAT_EQ(image->voxels[3], 11.5f);
  EXPECT_FLOAT_EQ(image->voxels[7], 6.0f);
}

TEST(NiftiIo, RefusesFourDimensionalSeries) {
  ScratchDir dir;
  RawNifti n;
  n.dim = {4, 2, 2, 2, 3, 1, 1, 1};
  n.data = testing::raw_bytes(std::vector<float>(24, 1.0f));
  testing::write_raw_nifti(dir / "series.nii", n);
  auto image = read_image(dir / "series.nii");
  ASSERT_FALSE(image);
  expect_error_mentions(image.error(), "series.nii", "not 3-D");
}

TEST(NiftiIo, AcceptsFourDimensionalHeaderWithOneVolume) {
  ScratchDir dir;
  RawNifti n;
  n.dim = {4, 2, 2, 2, 1, 1, 1, 1};
  n.data = testing::raw_bytes(std::vector<float>(8, 2.0f));
  testing::write_raw_nifti(dir / "one.nii", n);
  auto image = read_image(dir / "one.nii");
  ASSERT_TRUE(image) << image.error().message;
  EXPECT_EQ(image->geometry.size[2], 2u);
}

TEST(NiftiIo, RefusesTwoDimensionalImage) {
  ScratchDir dir;
  RawNifti n;
  n.dim = {2, 4, 4, 1, 1, 1, 1, 1};
  n.data = testing::raw_bytes(std::vector<float>(16, 1.0f));
  testing::write_raw_nifti(dir / "flat.nii", n);
  auto image = read_image(dir / "flat.nii");
  ASSERT_FALSE(image);
  expect_error_mentions(image.error(), "flat.nii", "not 3-D");
}

TEST(NiftiIo, RefusesTruncatedFile) {
  ScratchDir dir;
  RawNifti n;
  n.dim = {3, 8, 8, 8, 1, 1, 1, 1};
  n.data = testing::raw_bytes(std::vector<float>(512, 1.0f));
  testing::write_raw_nifti(dir / "cut.nii", n, 1000);
  auto image = read_image(dir / "cut.nii");
  ASSERT_FALSE(image) << image->geometry.describe();
  EXPECT_NE(image.error().message.find("cut.nii"), std::string::npos) << image.error().message;
}

TEST(NiftiIo, RefusesNonFiniteVoxels) {
  ScratchDir dir;
  RawNifti n;
  n.dim = {3, 2, 2, 1, 1, 1, 1, 1};
  n.data = testing::raw_bytes(
      std::vector<float>{1.0f, std::numeric_limits<float>::quiet_NaN(), 2.0f,
                         std::numeric_limits<float>::infinity()});
  testing::write_raw_nifti(dir / "nan.nii", n);
  auto image = read_image(dir / "nan.nii");
  ASSERT_FALSE(image) << image->geometry.describe() << " " << image->voxels[1];
  expect_error_mentions(image.error(), "nan.nii", "2 voxels are not finite");
}

TEST(NiftiIo, RefusesEmptyImage) {
  ScratchDir dir;
  RawNifti n;
  n.dim = {3, 4, 0, 4, 1, 1, 1, 1};
  testing::write_raw_nifti(dir / "empty.nii", n);
  auto image = read_image(dir / "empty.nii");
  ASSERT_FALSE(image) << image->geometry.describe();
  EXPECT_NE(image.error().message.find("empty.nii"), std::string::npos) << image.error().message;
}

TEST(NiftiIo, RefusesMissingAndNonNiftiFiles) {
  ScratchDir dir;
  auto missing = read_image(dir / "nope.nii.gz");
  ASSERT_FALSE(missing);
  expect_error_mentions(missing.error(), "nope.nii.gz", "no such file");

  std::ofstream(dir / "junk.nii") << "this is not an image";
  auto junk = read_image(dir / "junk.nii");
  ASSERT_FALSE(junk);
  EXPECT_NE(junk.error().message.find("junk.nii"), std::string::npos);

  std::ofstream(dir / "scan.png") << "x";
  auto png = read_image(dir / "scan.png");
  ASSERT_FALSE(png);
  EXPECT_NE(png.error().message.find("not a NIfTI"), std::string::npos);
}

TEST(NiftiIo, RefusesLabelValuesOutsideTheChallengeSet) {
  ScratchDir dir;
  LabelMap bad(testing::make_geometry(3, 3, 3));
  bad.at(1, 2, 0) = 3;
  ASSERT_TRUE(write_label_map(dir / "bad.nii.gz", bad));
  auto labels = read_label_map(dir / "bad.nii.gz");
  ASSERT_FALSE(labels);
  expect_error_mentions(labels.error(), "bad.nii.gz", "label value 3 at voxel (1, 2, 0)");

  Image fractional(testing::make_geometry(3, 3, 3));
  fractional.voxels[5] = 0.5f;
  ASSERT_TRUE(write_image(dir / "frac.nii.gz", fractional));
  EXPECT_FALSE(read_label_map(dir / "frac.nii.gz"));
}

TEST(NiftiIo, PredictionThresholdsAtOneHalf) {
  ScratchDir dir;
  Image probabilities(testing::make_geometry(4, 1, 1));
  probabilities.voxels = {0.2f, 0.5f, 0.9f, 3.0f};
  ASSERT_TRUE(write_image(dir / "p.nii.gz", probabilities));
  auto p = read_prediction(dir / "p.nii.gz");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->voxels, (std::vector<std::uint8_t>{0, 1, 1, 1}));
}

TEST(NiftiIo, SubjectWithDisagreeingGeometryIsRefused) {
  ScratchDir dir;
  const Image flair = ramp(testing::make_geometry(6, 6, 3, {1, 1, 3}));
  Image t1 = ramp(testing::make_geometry(6, 6, 3, {1, 1, 2.5}));
  ASSERT_TRUE(write_image(dir / "FLAIR.nii.gz", flair));
  ASSERT_TRUE(write_image(dir / "T1.nii.gz", t1));
  auto subject = read_subject(dir / "FLAIR.nii.gz", dir / "T1.nii.gz", std::nullopt);
  ASSERT_FALSE(subject);
  expect_error_mentions(subject.error(), "T1.nii.gz", "spacing");

  LabelMap labels(testing::make_geometry(6, 5, 3, {1, 1, 3}));
  ASSERT_TRUE(write_image(dir / "T1.nii.gz", ramp(flair.geometry)));
  ASSERT_TRUE(write_label_map(dir / "wmh.nii.gz", labels));
  subject = read_subject(dir / "FLAIR.nii.gz", dir / "T1.nii.gz", dir / "wmh.nii.gz");
  ASSERT_FALSE(subject);
  expect_error_mentions(subject.error(), "wmh.nii.gz", "size");
}

TEST(NiftiIo, WriteRefusesBadNameAndKeepsExistingFile) {
  ScratchDir dir;
  EXPECT_FALSE(write_image(dir / "out.img", ramp(testing::make_geometry(2, 2, 2))));
  ASSERT_TRUE(write_image(dir / "keep.nii.gz", ramp(testing::make_geometry(2, 2, 2))));
  Image inconsistent(testing::make_geometry(2, 2, 2));
  inconsistent.voxels.resize(3);
  EXPECT_FALSE(write_image(dir / "keep.nii.gz", inconsistent));
  auto kept = read_image(dir / "keep.nii.gz");
  ASSERT_TRUE(kept);
  EXPECT_EQ(kept->voxels.size(), 8u);
}

}  // namespace
}  // namespace fedda::imaging
