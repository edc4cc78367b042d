#include "fedda/imaging/png.h"

#include <algorithm>

#include <itkImage.h>
#include <itkImageFileWriter.h>
#include <itkPNGImageIO.h>
#include <itkRGBPixel.h>

#include "fedda/common/files.h"

namespace fedda::imaging {

Status write_png(const std::filesystem::path& path, const RgbPicture& picture) {
  using Pixel = itk::RGBPixel<std::uint8_t>;
  using Picture = itk::Image<Pixel, 2>;
  if (picture.width == 0 || picture.height == 0) return make_error(path.string() + ": empty picture");
  auto image = Picture::New();
  Picture::RegionType region;
  region.SetSize(0, picture.width);
  region.SetSize(1, picture.height);
  image->SetRegions(region);
  image->Allocate();
  auto* out = image->GetBufferPointer();
  for (std::size_t i = 0; i < picture.width * picture.height; ++i) {
    out[i].Set(picture.rgb[3 * i], picture.rgb[3 * i + 1], picture.rgb[3 * i + 2]);
  }
  return files::write_via_temporary(path, [&](const std::filesystem::path& tmp) -> Status {
    auto writer = itk::ImageFileWriter<Picture>::New();
    writer->SetImageIO(itk::PNGImageIO::New());
    writer->SetFileName(tmp.string());
    writer->SetInput(image);
    try {
      writer->Update();
    } catch (const itk::ExceptionObject& e) {
      return make_error(path.string() + ": cannot write PNG: " + e.GetDescription());
    }
    return Status::success();
  });
}

}  // namespace fedda::imaging
