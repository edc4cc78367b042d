#include "fedda/imaging/nifti_io.h"

#include "layout_detail.h"

#include <cmath>
#include <sstream>

#include <zlib.h>

#include <cstring>
#include <memory>

#include <itkImageFileReader.h>
#include <itkImageFileWriter.h>
#include <itkNiftiImageIO.h>

#include "fedda/common/files.h"
#include "itk_bridge.h"

namespace fedda::imaging {
namespace fs = std::filesystem;

namespace detail {

bool has_nifti_extension(const fs::path& path) {
  return strip_nifti_extension(path.filename().string()) != path.filename().string();
}

std::string strip_nifti_extension(const std::string& name) {
  for (const std::string ext : {".nii.gz", ".nii"}) {
    if (name.size() >= ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0) {
      return name.substr(0, name.size() - ext.size());
    }
  }
  return name;
}

}  // namespace detail

namespace {

std::string itk_message(const itk::ExceptionObject& e) {
  std::string what = e.GetDescription();
  while (!what.empty() && (what.back() == '\n' || what.back() == ' ')) what.pop_back();
  return what;
}


// ITK reads NIfTI through nifticlib, which silently turns non-finite floats into 0, pads a
// truncated voxel block and reports a 0-length axis as 1. These checks read the raw header and
// voxel bytes (plain or gzip) to catch what it hides.
struct RawHeader {
  std::int64_t dims[8] = {};
  int datatype = 0;
  int bytes_per_voxel = 0;
  std::int64_t vox_offset = 0;
  bool swapped = false;
};

template <typename T>
T read_scalar(const unsigned char* p, bool swap) {
  unsigned char b[sizeof(T)];
  std::memcpy(b, p, sizeof(T));
  if (swap) std::reverse(b, b + sizeof(T));
  T v;
  std::memcpy(&v, b, sizeof(T));
  return v;
}

int bytes_of_datatype(int datatype) {
  switch (datatype) {
    case 2: case 256: return 1;             // uint8, int8
    case 4: case 512: return 2;             // int16, uint16
    case 8: case 768: case 16: return 4;    // int32, uint32, float32
    case 64: case 1024: case 1280: return 8;  // float64, int64, uint64
    default: return 0;
  }
}

Status check_raw_voxels(const fs::path& path) {
  using GzFile = std::unique_ptr<gzFile_s, decltype(&gzclose)>;
  GzFile file(gzopen(path.c_str(), "rb"), &gzclose);
  if (!file) return make_error(path.string() + ": cannot open");
  unsigned char h[540] = {};
  const int got = gzread(file.get(), h, sizeof h);
  if (got < 348) return make_error(path.string() + ": truncated NIfTI header");
  RawHeader r;
  const auto sizeof_hdr = read_scalar<std::int32_t>(h, false);
  const bool nifti2 = sizeof_hdr == 540 || read_scalar<std::int32_t>(h, true) == 540;
  r.swapped = nifti2 ? sizeof_hdr != 540 : sizeof_hdr != 348;
  if (nifti2) {
    if (got < 540) return make_error(path.string() + ": truncated NIfTI-2 header");
    r.datatype = read_scalar<std::int16_t>(h + 12, r.swapped);
    for (int i = 0; i < 8; ++i) r.dims[i] = read_scalar<std::int64_t>(h + 16 + 8 * i, r.swapped);
    r.vox_offset = read_scalar<std::int64_t>(h + 168, r.swapped);
  } else {
    r.datatype = read_scalar<std::int16_t>(h + 70, r.swapped);
    for (int i = 0; i < 8; ++i) r.dims[i] = read_scalar<std::int16_t>(h + 40 + 2 * i, r.swapped);
    r.vox_offset = static_cast<std::int64_t>(read_scalar<float>(h + 108, r.swapped));
  }
  const std::int64_t ndim = r.dims[0];
  if (ndim < 1 || ndim > 7) return make_error(path.string() + ": invalid number of dimensions in header");
  std::int64_t count = 1;
  for (std::int64_t d = 1; d <= ndim; ++d) {
    if (r.dims[d] <= 0) {
      return make_error(path.string() + ": empty image (dimension " + std::to_string(d) + " is " +
                        std::to_string(r.dims[d]) + ")");
    }
    count *= r.dims[d];
  }
  r.bytes_per_voxel = bytes_of_datatype(r.datatype);
  if (r.bytes_per_voxel == 0) return Status::success();  // unusual types: ITK decides
  if (r.vox_offset < 348) return Status::success();  // separate .hdr/.img pair: ITK decides
  if (gzseek(file.get(), r.vox_offset, SEEK_SET) < 0) {
    return make_error(path.string() + ": truncated file (no voxel data after the header)");
  }
  const bool is_float = r.datatype == 16 || r.datatype == 64;
  std::vector<unsigned char> buffer(1 << 20);
  std::int64_t expected = count * r.bytes_per_voxel, seen = 0, non_finite = 0;
  while (seen < expected) {
    const auto want = static_cast<unsigned>(std::min<std::int64_t>(buffer.size(), expected - seen));
    const int n = gzread(file.get(), buffer.data(), want);
    if (n <= 0) break;
    if (is_float) {
      for (int i = 0; i + r.bytes_per_voxel <= n; i += r.bytes_per_voxel) {
        const double v = r.datatype == 16 ? read_scalar<float>(buffer.data() + i, r.swapped)
                                          : read_scalar<double>(buffer.data() + i, r.swapped);
        non_finite += !std::isfinite(v);
      }
    }
    seen += n;
  }
  if (seen < expected) {
    return make_error(path.string() + ": truncated file: the header promises " +
                      std::to_string(expected) + " bytes of voxel data, the file holds " +
                      std::to_string(seen));
  }
  if (non_finite > 0) {
    return make_error(path.string() + ": " + std::to_string(non_finite) +
                      " voxels are not finite (NaN or infinity)");
  }
  return Status::success();
}

// Opens the header and checks what can be checked before the voxels are read.
Result<itk::NiftiImageIO::Pointer> open_header(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return make_error(path.string() + ": no such file");
  if (!fs::is_regular_file(path, ec)) return make_error(path.string() + ": not a regular file");
  if (!detail::has_nifti_extension(path)) {
    return make_error(path.string() + ": not a NIfTI file name (expected .nii or .nii.gz)");
  }
  auto io = itk::NiftiImageIO::New();
  try {
    if (!io->CanReadFile(path.c_str())) {
      return make_error(path.string() + ": not a readable NIfTI file (bad or truncated header)");
    }
    io->SetFileName(path.string());
    io->ReadImageInformation();
  } catch (const itk::ExceptionObject& e) {
    return make_error(path.string() + ": cannot read NIfTI header: " + itk_message(e));
  }
  const unsigned dims = io->GetNumberOfDimensions();
  if (dims < 3) {
    return make_error(path.string() + ": not 3-D (the image has " + std::to_string(dims) +
                      " dimensions)");
  }
  for (unsigned d = 3; d < dims; ++d) {
    if (io->GetDimensions(d) > 1) {
      std::ostringstream s;
      s << path.string() << ": not 3-D (a " << dims << "-D image with " << io->GetDimensions(d)
        << " volumes along dimension " << d + 1 << "; split it into 3-D files first)";
      return make_error(s.str());
    }
  }
  if (io->GetNumberOfComponents() != 1) {
    return make_error(path.string() + ": has " + std::to_string(io->GetNumberOfComponents()) +
                      " components per voxel (vector or RGB image); expected a scalar image");
  }
  for (unsigned d = 0; d < 3; ++d) {
    if (io->GetDimensions(d) == 0) return make_error(path.string() + ": empty image (a dimension is 0)");
    if (!(io->GetSpacing(d) > 0) || !std::isfinite(io->GetSpacing(d))) {
      return make_error(path.string() + ": invalid voxel spacing along axis " + std::to_string(d));
    }
  }
  return io;
}

Result<Image> read_float(const fs::path& path) {
  auto header = open_header(path);
  if (!header) return header.error();
  if (auto raw = check_raw_voxels(path); !raw) return raw.error();
  using Reader = itk::ImageFileReader<detail::ItkImage<float>>;
  auto reader = Reader::New();
  reader->SetImageIO(*header);
  reader->SetFileName(path.string());
  try {
    reader->Update();
  } catch (const itk::ExceptionObject& e) {
    return make_error(path.string() + ": cannot read voxels (truncated or corrupt file?): " +
                      itk_message(e));
  }
  Image image = detail::from_itk(*reader->GetOutput());
  if (image.voxels.empty()) return make_error(path.string() + ": empty image");
  std::size_t non_finite = 0;
  for (float v : image.voxels) non_finite += !std::isfinite(v);
  if (non_finite > 0) {
    return make_error(path.string() + ": " + std::to_string(non_finite) +
                      " voxels are not finite (NaN or infinity)");
  }
  return image;
}

template <typename T>
Status write_volume(const fs::path& path, const Volume<T>& volume) {
  if (!detail::has_nifti_extension(path)) {
    return make_error(path.string() + ": output must be named .nii or .nii.gz");
  }
  if (volume.voxels.size() != volume.geometry.voxel_count() || volume.voxels.empty()) {
    return make_error(path.string() + ": refusing to write an empty or inconsistent volume");
  }
  return files::write_via_temporary(path, [&](const fs::path& tmp) -> Status {
    auto writer = itk::ImageFileWriter<detail::ItkImage<T>>::New();
    writer->SetImageIO(itk::NiftiImageIO::New());
    writer->SetFileName(tmp.string());
    writer->SetInput(detail::to_itk(volume));
    try {
      writer->Update();
    } catch (const itk::ExceptionObject& e) {
      return make_error(path.string() + ": cannot write: " + itk_message(e));
    }
    return Status::success();
  });
}

}  // namespace

Result<Image> read_image(const fs::path& path) { return read_float(path); }

Result<Geometry> read_geometry(const fs::path& path) {
  auto header = open_header(path);
  if (!header) return header.error();
  const auto& io = *header;
  Geometry g;
  for (unsigned d = 0; d < 3; ++d) {
    g.size[d] = io->GetDimensions(d);
    g.spacing[d] = io->GetSpacing(d);
    g.origin[d] = io->GetOrigin(d);
    const auto axis = io->GetDirection(d);
    for (unsigned r = 0; r < 3; ++r) g.direction[r * 3 + d] = axis[r];
  }
  return g;
}

Result<LabelMap> read_label_map(const fs::path& path) {
  auto image = read_float(path);
  if (!image) return image.error();
  LabelMap labels;
  labels.geometry = image->geometry;
  labels.voxels.resize(image->voxels.size());
  for (std::size_t i = 0; i < image->voxels.size(); ++i) {
    const float v = image->voxels[i];
    if (v != 0.0f && v != 1.0f && v != 2.0f) {
      std::ostringstream s;
      const auto& size = image->geometry.size;
      s << path.string() << ": label value " << v << " at voxel (" << i % size[0] << ", "
        << (i / size[0]) % size[1] << ", " << i / (size[0] * size[1])
        << ") is not one of 0 (background), 1 (WMH), 2 (other pathology)";
      return make_error(s.str());
    }
    labels.voxels[i] = static_cast<std::uint8_t>(v);
  }
  return labels;
}

Result<LabelMap> read_prediction(const fs::path& path) {
  auto image = read_float(path);
  if (!image) return image.error();
  LabelMap prediction;
  prediction.geometry = image->geometry;
  prediction.voxels.resize(image->voxels.size());
  for (std::size_t i = 0; i < image->voxels.size(); ++i) {
    prediction.voxels[i] = image->voxels[i] >= 0.5f ? kWmh : kBackground;
  }
  return prediction;
}

Status write_image(const fs::path& path, const Image& image) { return write_volume(path, image); }

Status write_label_map(const fs::path& path, const LabelMap& labels) {
  return write_volume(path, labels);
}

Result<Subject> read_subject(const fs::path& flair, const fs::path& t1,
                             const std::optional<fs::path>& labels) {
  Subject subject;
  auto f = read_image(flair);
  if (!f) return f.error();
  subject.flair = std::move(*f);
  auto t = read_image(t1);
  if (!t) return t.error();
  subject.t1 = std::move(*t);
  if (auto diff = geometry_difference(subject.flair.geometry, subject.t1.geometry); !diff.empty()) {
    return make_error(t1.string() + ": geometry disagrees with " + flair.string() + ": " + diff);
  }
  if (labels) {
    auto l = read_label_map(*labels);
    if (!l) return l.error();
    if (auto diff = geometry_difference(subject.flair.geometry, l->geometry); !diff.empty()) {
      return make_error(labels->string() + ": geometry disagrees with " + flair.string() + ": " + diff);
    }
    subject.labels = std::move(*l);
  }
  return subject;
}

}  // namespace fedda::imaging
