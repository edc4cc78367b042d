#include "fedda/imaging/preprocess.h"

#include <algorithm>
#include <cmath>

#include <itkBinaryFillholeImageFilter.h>
#include <itkLinearInterpolateImageFunction.h>
#include <itkNearestNeighborInterpolateImageFunction.h>
#include <itkOtsuThresholdImageFilter.h>
#include <itkResampleImageFilter.h>

#include "fedda/imaging/morphology.h"
#include "itk_bridge.h"

namespace fedda::imaging {
namespace {

std::array<unsigned, 3> radius_in_voxels(const Geometry& g, double radius_mm) {
  std::array<unsigned, 3> r{};
  for (unsigned d = 0; d < 3; ++d) r[d] = static_cast<unsigned>(std::lround(radius_mm / g.spacing[d]));
  return r;
}

LabelMap largest_component(const LabelMap& mask) {
  const Components components = connected_components(mask, false);
  std::vector<std::size_t> sizes(components.count + 1, 0);
  for (auto label : components.labels) ++sizes[label];
  sizes[0] = 0;
  const auto largest = static_cast<std::uint32_t>(std::max_element(sizes.begin(), sizes.end()) - sizes.begin());
  LabelMap out(mask.geometry);
  for (std::size_t i = 0; i < out.voxels.size(); ++i) out.voxels[i] = components.labels[i] == largest && largest;
  return out;
}

void fill_holes_per_slice(LabelMap& mask) {
  using Slice = itk::Image<std::uint8_t, 2>;
  const auto& size = mask.geometry.size;
  for (std::size_t z = 0; z < size[2]; ++z) {
    auto slice = Slice::New();
    Slice::RegionType region;
    region.SetSize(0, size[0]);
    region.SetSize(1, size[1]);
    slice->SetRegions(region);
    slice->Allocate();
    std::copy_n(&mask.at(0, 0, z), size[0] * size[1], slice->GetBufferPointer());
    auto fill = itk::BinaryFillholeImageFilter<Slice>::New();
    fill->SetInput(slice);
    fill->SetForegroundValue(1);
    fill->SetFullyConnected(false);
    fill->Update();
    std::copy_n(fill->GetOutput()->GetBufferPointer(), size[0] * size[1], &mask.at(0, 0, z));
  }
}

template <typename T, typename Interpolator>
Volume<T> resample(const Volume<T>& source, const Geometry& target, T outside) {
  using ItkT = detail::ItkImage<T>;
  auto filter = itk::ResampleImageFilter<ItkT, ItkT>::New();
  filter->SetInput(detail::to_itk(source));
  filter->SetInterpolator(Interpolator::New());
  filter->SetDefaultPixelValue(outside);
  auto reference = ItkT::New();
  detail::apply_geometry(target, *reference);
  filter->SetUseReferenceImage(true);
  filter->SetReferenceImage(reference);
  filter->Update();
  return detail::from_itk(*filter->GetOutput());
}

}  // namespace

Result<LabelMap> brain_mask(const Image& image, const BrainMaskOptions& options) {
  auto otsu = itk::OtsuThresholdImageFilter<detail::ItkImage<float>, detail::ItkImage<std::uint8_t>>::New();
  otsu->SetInput(detail::to_itk(image));
  otsu->Update();
  const float threshold = static_cast<float>(otsu->GetThreshold());
  LabelMap foreground(image.geometry);
  std::size_t count = 0;
  for (std::size_t i = 0; i < image.voxels.size(); ++i) {
    foreground.voxels[i] = image.voxels[i] > threshold;
    count += foreground.voxels[i];
  }
  if (count == 0) return make_error("brain mask: the image has no foreground (constant image?)");

  const auto radius = radius_in_voxels(image.geometry, options.detach_radius_mm);
  LabelMap core = erode(foreground, radius);
  if (std::none_of(core.voxels.begin(), core.voxels.end(), [](auto v) { return v != 0; })) {
    core = foreground;  // too thin to erode: keep the foreground's largest component
  }
  LabelMap mask = dilate(largest_component(core), radius);
  for (std::size_t i = 0; i < mask.voxels.size(); ++i) {
    mask.voxels[i] = mask.voxels[i] && foreground.voxels[i];
  }
  fill_holes_per_slice(mask);
  return mask;
}

Result<Image> zscore_in_mask(const Image& image, const LabelMap& mask) {
  double sum = 0, sum_sq = 0;
  std::size_t n = 0;
  for (std::size_t i = 0; i < image.voxels.size(); ++i) {
    if (!mask.voxels[i]) continue;
    sum += image.voxels[i];
    sum_sq += static_cast<double>(image.voxels[i]) * image.voxels[i];
    ++n;
  }
  if (n == 0) return make_error("z-score: the brain mask is empty");
  const double mean = sum / n;
  const double variance = std::max(0.0, sum_sq / n - mean * mean);
  const double sd = std::sqrt(variance);
  if (!(sd > 1e-12 * std::max(1.0, std::abs(mean)))) {
    return make_error("z-score: the image is constant inside the brain mask");
  }
  Image out(image.geometry);
  for (std::size_t i = 0; i < image.voxels.size(); ++i) {
    out.voxels[i] = static_cast<float>((image.voxels[i] - mean) / sd);
  }
  return out;
}

std::array<double, 3> mask_centre(const LabelMap& mask) {
  const auto& size = mask.geometry.size;
  std::array<std::size_t, 3> lo{size[0], size[1], size[2]}, hi{0, 0, 0};
  bool any = false;
  for (std::size_t z = 0; z < size[2]; ++z)
    for (std::size_t y = 0; y < size[1]; ++y)
      for (std::size_t x = 0; x < size[0]; ++x) {
        if (!mask.at(x, y, z)) continue;
        any = true;
        lo = {std::min(lo[0], x), std::min(lo[1], y), std::min(lo[2], z)};
        hi = {std::max(hi[0], x), std::max(hi[1], y), std::max(hi[2], z)};
      }
  if (!any) {
    return mask.geometry.to_physical((size[0] - 1) / 2.0, (size[1] - 1) / 2.0, (size[2] - 1) / 2.0);
  }
  return mask.geometry.to_physical((lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0, (lo[2] + hi[2]) / 2.0);
}

Geometry model_grid(const Geometry& scan, const std::array<double, 3>& centre, const GridSpec& spec) {
  const auto c = scan.to_index(centre);
  Geometry grid = scan;
  grid.size = {spec.in_plane_size[0], spec.in_plane_size[1], scan.size[2]};
  grid.spacing = {spec.in_plane_spacing[0], spec.in_plane_spacing[1], scan.spacing[2]};
  // The in-plane axes in one orientation whatever order the file stores rows and columns in
  // (dcm2niix, scanners and other tools differ): the first along +x of the scan's physical
  // space (LPS), the second along +y. The network then sees every site's slices the same way up.
  std::array<double, 3> a{scan.direction[0], scan.direction[3], scan.direction[6]};
  std::array<double, 3> b{scan.direction[1], scan.direction[4], scan.direction[7]};
  if (std::abs(a[1]) > std::abs(a[0]) && std::abs(b[0]) > std::abs(b[1])) std::swap(a, b);
  if (a[0] < 0) a = {-a[0], -a[1], -a[2]};
  if (b[1] < 0) b = {-b[0], -b[1], -b[2]};
  for (int r = 0; r < 3; ++r) {
    grid.direction[r * 3 + 0] = a[r];
    grid.direction[r * 3 + 1] = b[r];
  }
  // Centred in-plane on the brain; the slices coincide with the scan's (slice index 0 first).
  const auto centre_on_first_slice = scan.to_physical(c[0], c[1], 0.0);
  const double half[2] = {(static_cast<double>(grid.size[0]) - 1) / 2.0 * grid.spacing[0],
                          (static_cast<double>(grid.size[1]) - 1) / 2.0 * grid.spacing[1]};
  for (int r = 0; r < 3; ++r) grid.origin[r] = centre_on_first_slice[r] - a[r] * half[0] - b[r] * half[1];
  return grid;
}

Image resample_image(const Image& image, const Geometry& target, float outside) {
  return resample<float, itk::LinearInterpolateImageFunction<detail::ItkImage<float>, double>>(
      image, target, outside);
}

LabelMap resample_labels(const LabelMap& labels, const Geometry& target) {
  return resample<std::uint8_t,
                  itk::NearestNeighborInterpolateImageFunction<detail::ItkImage<std::uint8_t>, double>>(
      labels, target, 0);
}

Result<Preprocessed> preprocess(const Image& flair, const Image& t1, const GridSpec& spec) {
  if (auto diff = geometry_difference(flair.geometry, t1.geometry); !diff.empty()) {
    return make_error("FLAIR and T1 geometry disagree: " + diff);
  }
  auto mask = brain_mask(flair);
  if (!mask) return mask.error();
  auto flair_z = zscore_in_mask(flair, *mask);
  if (!flair_z) return make_error("FLAIR " + flair_z.error().message);
  auto t1_z = zscore_in_mask(t1, *mask);
  if (!t1_z) return make_error("T1 " + t1_z.error().message);

  Preprocessed out;
  out.original = flair.geometry;
  out.grid = model_grid(flair.geometry, mask_centre(*mask), spec);
  // Padding takes each channel's darkest value, as the air around a head would have.
  auto darkest = [](const Image& im) { return *std::min_element(im.voxels.begin(), im.voxels.end()); };
  out.flair = resample_image(*flair_z, out.grid, darkest(*flair_z));
  out.t1 = resample_image(*t1_z, out.grid, darkest(*t1_z));
  out.mask = resample_labels(*mask, out.grid);
  return out;
}

Image restore_probability(const Image& probability_on_grid, const Geometry& original) {
  return resample_image(probability_on_grid, original, 0.0f);
}

LabelMap restore_segmentation(const Image& probability_on_grid, const Geometry& original,
                              float threshold) {
  const Image p = restore_probability(probability_on_grid, original);
  LabelMap out(original);
  for (std::size_t i = 0; i < p.voxels.size(); ++i) out.voxels[i] = p.voxels[i] >= threshold;
  return out;
}

}  // namespace fedda::imaging
