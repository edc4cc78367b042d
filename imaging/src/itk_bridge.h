#pragma once
// Private adapter between fedda::imaging volumes and ITK images. ITK stays behind this
// header: nothing public includes it.

#include <algorithm>
#include <string>

#include <itkImage.h>

#include "fedda/imaging/volume.h"

namespace fedda::imaging::detail {

template <typename T>
using ItkImage = itk::Image<T, 3>;

template <typename T>
Geometry geometry_of(const ItkImage<T>& image) {
  Geometry g;
  const auto region = image.GetLargestPossibleRegion();
  for (unsigned d = 0; d < 3; ++d) {
    g.size[d] = region.GetSize()[d];
    g.spacing[d] = image.GetSpacing()[d];
    g.origin[d] = image.GetOrigin()[d];
    for (unsigned c = 0; c < 3; ++c) g.direction[d * 3 + c] = image.GetDirection()[d][c];
  }
  return g;
}

template <typename T>
void apply_geometry(const Geometry& g, ItkImage<T>& image) {
  typename ItkImage<T>::RegionType region;
  typename ItkImage<T>::SpacingType spacing;
  typename ItkImage<T>::PointType origin;
  typename ItkImage<T>::DirectionType direction;
  for (unsigned d = 0; d < 3; ++d) {
    region.SetSize(d, g.size[d]);
    region.SetIndex(d, 0);
    spacing[d] = g.spacing[d];
    origin[d] = g.origin[d];
    for (unsigned c = 0; c < 3; ++c) direction[d][c] = g.direction[d * 3 + c];
  }
  image.SetRegions(region);
  image.SetSpacing(spacing);
  image.SetOrigin(origin);
  image.SetDirection(direction);
}

template <typename T>
typename ItkImage<T>::Pointer to_itk(const Volume<T>& volume) {
  auto image = ItkImage<T>::New();
  apply_geometry(volume.geometry, *image);
  image->Allocate();
  std::copy(volume.voxels.begin(), volume.voxels.end(), image->GetBufferPointer());
  return image;
}

template <typename T>
Volume<T> from_itk(const ItkImage<T>& image) {
  Volume<T> volume;
  volume.geometry = geometry_of(image);
  const T* buffer = image.GetBufferPointer();
  volume.voxels.assign(buffer, buffer + volume.geometry.voxel_count());
  return volume;
}

}  // namespace fedda::imaging::detail
