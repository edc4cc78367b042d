#include "fedda/imaging/morphology.h"

#include <itkBinaryDilateImageFilter.h>
#include <itkBinaryErodeImageFilter.h>
#include <itkConnectedComponentImageFilter.h>
#include <itkFlatStructuringElement.h>
#include <itkSignedMaurerDistanceMapImageFilter.h>

#include "itk_bridge.h"

namespace fedda::imaging {
namespace {

using Mask = detail::ItkImage<std::uint8_t>;
using Kernel = itk::FlatStructuringElement<3>;

Kernel ball(const std::array<unsigned, 3>& r) {
  Kernel::RadiusType radius;
  for (unsigned d = 0; d < 3; ++d) radius[d] = r[d];
  return Kernel::Ball(radius);
}

LabelMap binarised(const LabelMap& mask) {
  LabelMap out(mask.geometry);
  for (std::size_t i = 0; i < out.voxels.size(); ++i) out.voxels[i] = mask.voxels[i] != 0;
  return out;
}

}  // namespace

Components connected_components(const LabelMap& mask, bool full_connectivity) {
  auto filter = itk::ConnectedComponentImageFilter<Mask, detail::ItkImage<std::uint32_t>>::New();
  filter->SetInput(detail::to_itk(mask));
  filter->SetFullyConnected(full_connectivity);
  filter->SetBackgroundValue(0);
  filter->Update();
  Components out;
  out.count = static_cast<std::uint32_t>(filter->GetObjectCount());
  const auto* buffer = filter->GetOutput()->GetBufferPointer();
  out.labels.assign(buffer, buffer + mask.voxels.size());
  return out;
}

std::vector<float> distance_to_mask(const LabelMap& mask) {
  using Distances = detail::ItkImage<float>;
  auto filter = itk::SignedMaurerDistanceMapImageFilter<Mask, Distances>::New();
  filter->SetInput(detail::to_itk(binarised(mask)));
  filter->SetUseImageSpacing(true);
  filter->SetSquaredDistance(false);
  filter->SetInsideIsPositive(false);
  filter->SetBackgroundValue(0);
  filter->Update();
  const float* buffer = filter->GetOutput()->GetBufferPointer();
  std::vector<float> distances(buffer, buffer + mask.voxels.size());
  // Outside the mask the map is the exact distance to its nearest voxel centre (the nearest
  // foreground voxel is always on its border); the mask's own voxels are at distance 0.
  for (std::size_t i = 0; i < distances.size(); ++i) {
    if (mask.voxels[i]) distances[i] = 0.0f;
  }
  return distances;
}

LabelMap erode(const LabelMap& mask, const std::array<unsigned, 3>& radius) {
  auto filter = itk::BinaryErodeImageFilter<Mask, Mask, Kernel>::New();
  filter->SetInput(detail::to_itk(binarised(mask)));
  filter->SetKernel(ball(radius));
  filter->SetForegroundValue(1);
  filter->SetBackgroundValue(0);
  filter->SetBoundaryToForeground(true);
  filter->Update();
  return detail::from_itk(*filter->GetOutput());
}

LabelMap dilate(const LabelMap& mask, const std::array<unsigned, 3>& radius) {
  auto filter = itk::BinaryDilateImageFilter<Mask, Mask, Kernel>::New();
  filter->SetInput(detail::to_itk(binarised(mask)));
  filter->SetKernel(ball(radius));
  filter->SetForegroundValue(1);
  filter->SetBackgroundValue(0);
  filter->Update();
  return detail::from_itk(*filter->GetOutput());
}

}  // namespace fedda::imaging
