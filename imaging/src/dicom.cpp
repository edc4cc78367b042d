#include "fedda/imaging/dicom.h"


#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <tuple>

#include <gdcmGlobal.h>
#include <gdcmDicts.h>
#include <gdcmImageHelper.h>
#include <gdcmImageWriter.h>
#include <gdcmScanner.h>
#include <gdcmTrace.h>
#include <itkOrientImageFilter.h>
#include <gdcmUIDGenerator.h>

#include "fedda/common/files.h"
#include "fedda/common/process.h"
#include "fedda/common/text.h"
#include "fedda/imaging/nifti_io.h"
#include "itk_bridge.h"
#include "layout_detail.h"

namespace fedda::imaging {
namespace fs = std::filesystem;

namespace {

std::string number(double v) { return text::number(v, 10); }

std::string trim(std::string s) {
  const auto not_space = [](unsigned char c) { return c != ' ' && c != '\0'; };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  return s;
}

std::vector<double> numbers(const std::string& text) {
  std::vector<double> out;
  std::stringstream parts(text);
  for (std::string p; std::getline(parts, p, '\\');) {
    try {
      out.push_back(std::stod(p));
    } catch (...) {
      return {};
    }
  }
  return out;
}

}  // namespace

std::string new_dicom_uid() { return gdcm::UIDGenerator().Generate(); }

Status write_dicom_series(const Image& image, const fs::path& dir, const DicomSeriesTags& tags) {
  const auto& g = image.geometry;
  if (image.voxels.empty()) return make_error("write_dicom_series: empty image");
  gdcm::Trace::WarningOff();  // GDCM's own chatter on stderr; errors come back as Status
  // Classic MR Image Storage, one single-frame file per slice, as most scanners export: values
  // stored as unsigned 16-bit (value - intercept) / slope.
  const auto [lo, hi] = std::minmax_element(image.voxels.begin(), image.voxels.end());
  const double intercept = *lo;
  const double slope = *hi > *lo ? (*hi - *lo) / 65535.0 : 1.0;
  gdcm::UIDGenerator uids;
  const std::string study = tags.study_uid.empty() ? uids.Generate() : tags.study_uid;
  const std::string series = uids.Generate();
  const std::string frame_of_reference = tags.frame_of_reference_uid.empty() ? uids.Generate() : tags.frame_of_reference_uid;
  // Columns of the direction matrix: the in-plane axes and the slice axis (LPS, as ITK's).
  const auto column = [&](int c) { return std::array<double, 3>{g.direction[c], g.direction[3 + c], g.direction[6 + c]}; };
  const auto row_dir = column(0), col_dir = column(1), slice_dir = column(2);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return make_error(dir.string() + ": " + ec.message());
  gdcm::ImageHelper::SetForceRescaleInterceptSlope(true);  // MR files carry them too (dcm2niix reads them)
  const std::size_t plane = g.size[0] * g.size[1];
  std::vector<std::uint16_t> pixels(plane);
  for (std::size_t k = 0; k < g.size[2]; ++k) {
    for (std::size_t i = 0; i < plane; ++i) {
      const double v = (image.voxels[k * plane + i] - intercept) / slope;
      pixels[i] = static_cast<std::uint16_t>(std::lround(std::clamp(v, 0.0, 65535.0)));
    }
    gdcm::ImageWriter writer;
    auto& im = writer.GetImage();
    im.SetNumberOfDimensions(2);
    im.SetDimension(0, static_cast<unsigned>(g.size[0]));
    im.SetDimension(1, static_cast<unsigned>(g.size[1]));
    im.SetSpacing(0, g.spacing[0]);
    im.SetSpacing(1, g.spacing[1]);
    im.SetSpacing(2, g.spacing[2]);
    double origin[3];
    for (int i = 0; i < 3; ++i) origin[i] = g.origin[i] + static_cast<double>(k) * g.spacing[2] * slice_dir[i];
    im.SetOrigin(origin);
    im.SetOrigin(2u, origin[2]);  // SetOrigin(double*) keeps only as many values as the image has dimensions
    const double cosines[6] = {row_dir[0], row_dir[1], row_dir[2], col_dir[0], col_dir[1], col_dir[2]};
    im.SetDirectionCosines(cosines);
    im.SetPixelFormat(gdcm::PixelFormat::UINT16);
    im.SetPhotometricInterpretation(gdcm::PhotometricInterpretation::MONOCHROME2);
    im.SetIntercept(intercept);
    im.SetSlope(slope);
    gdcm::DataElement pixel_data(gdcm::Tag(0x7fe0, 0x0010));
    pixel_data.SetByteValue(reinterpret_cast<const char*>(pixels.data()), static_cast<std::uint32_t>(plane * sizeof(std::uint16_t)));
    im.SetDataElement(pixel_data);

    auto& ds = writer.GetFile().GetDataSet();
    const auto set = [&](std::uint16_t group, std::uint16_t element, const std::string& value) {
      gdcm::DataElement de(gdcm::Tag(group, element));
      std::string v = value;
      const auto& dict = gdcm::Global::GetInstance().GetDicts().GetDictEntry(de.GetTag());
      // DICOM values have even length: UIDs are padded with a NUL, text with a space.
      if (v.size() % 2) v += dict.GetVR() == gdcm::VR::UI ? '\0' : ' ';
      de.SetByteValue(v.data(), static_cast<std::uint32_t>(v.size()));
      de.SetVR(dict.GetVR());
      ds.Replace(de);
    };
    set(0x0008, 0x0016, "1.2.840.10008.5.1.4.1.1.4");  // MR Image Storage
    set(0x0008, 0x0018, uids.Generate());
    set(0x0008, 0x0008, "ORIGINAL\\PRIMARY\\AXIAL");
    set(0x0008, 0x0060, "MR");
    for (std::uint16_t e : {0x0020, 0x0021, 0x0022, 0x0023}) set(0x0008, e, "20170101");
    for (std::uint16_t e : {0x0030, 0x0031, 0x0032, 0x0033}) set(0x0008, e, "120000");
    set(0x0008, 0x0070, tags.manufacturer);
    set(0x0008, 0x1090, tags.model);
    set(0x0008, 0x103e, tags.series_description);
    set(0x0008, 0x0050, tags.accession_number);
    set(0x0008, 0x0090, "");  // ReferringPhysicianName (type 2)
    set(0x0010, 0x0010, tags.patient_name.empty() ? tags.patient_id : tags.patient_name);
    set(0x0010, 0x0020, tags.patient_id);
    set(0x0010, 0x0030, "");  // PatientBirthDate, PatientSex (type 2: present, unknown)
    set(0x0010, 0x0040, "");
    set(0x0018, 0x0015, "BRAIN");  // BodyPartExamined
    set(0x0018, 0x0020, tags.scanning_sequence);
    set(0x0018, 0x0021, tags.sequence_variant);
    set(0x0018, 0x0022, "");  // ScanOptions
    set(0x0018, 0x0023, tags.acquisition_type);
    set(0x0018, 0x0080, number(tags.repetition_time_ms));
    set(0x0018, 0x0081, number(tags.echo_time_ms));
    if (tags.inversion_time_ms > 0) set(0x0018, 0x0082, number(tags.inversion_time_ms));
    set(0x0018, 0x0091, "1");  // EchoTrainLength
    set(0x0018, 0x5100, "HFS");  // PatientPosition
    set(0x0020, 0x0010, "1");    // StudyID
    set(0x0020, 0x1040, "");     // PositionReferenceIndicator (type 2)
    set(0x0018, 0x0050, number(g.spacing[2]));  // SliceThickness
    set(0x0018, 0x0088, number(g.spacing[2]));  // SpacingBetweenSlices
    set(0x0018, 0x0087, number(tags.field_strength_t));
    set(0x0020, 0x000d, study);
    set(0x0020, 0x000e, series);
    set(0x0020, 0x0052, frame_of_reference);
    set(0x0020, 0x0011, std::to_string(tags.series_number));
    set(0x0020, 0x0013, std::to_string(k + 1));
    set(0x0020, 0x1041, number(origin[0] * slice_dir[0] + origin[1] * slice_dir[1] + origin[2] * slice_dir[2]));
    char name[32];
    std::snprintf(name, sizeof(name), "IM%04zu.dcm", k + 1);
    const auto path = dir / name;
    writer.SetFileName(path.c_str());
    if (!writer.Write()) return make_error(path.string() + ": cannot write the DICOM file");
  }
  return Status::success();
}

Result<std::vector<DicomSeries>> scan_dicom(const fs::path& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return make_error(root.string() + ": DICOM folder not found");
  gdcm::Trace::WarningOff();
  std::vector<std::string> candidates;
  for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const auto name = it->path().filename().string();
    if (name.rfind('.', 0) == 0) continue;
    const auto ext = it->path().extension().string();
    if (ext == ".gz" || ext == ".nii" || ext == ".json" || ext == ".txt" || ext == ".tsv") continue;  // not DICOM
    candidates.push_back(it->path().string());
  }
  std::sort(candidates.begin(), candidates.end());
  const gdcm::Tag patient(0x0010, 0x0020), series_uid(0x0020, 0x000e), description(0x0008, 0x103e), series_number(0x0020, 0x0011),
      instance(0x0020, 0x0013), position(0x0020, 0x0032), orientation(0x0020, 0x0037);
  gdcm::Scanner scanner;
  for (const auto& t : {patient, series_uid, description, series_number, instance, position, orientation}) scanner.AddTag(t);
  if (!candidates.empty() && !scanner.Scan(candidates)) return make_error(root.string() + ": cannot scan the DICOM files");

  struct Slice {
    fs::path file;
    std::vector<double> position, orientation;
    int instance = 0;
  };
  std::map<std::string, DicomSeries> by_uid;
  std::map<std::string, std::vector<Slice>> slices;
  for (const auto& file : candidates) {
    if (!scanner.IsKey(file.c_str())) continue;  // not DICOM
    const auto value = [&](const gdcm::Tag& t) {
      const char* v = scanner.GetValue(file.c_str(), t);
      return v ? trim(v) : std::string();
    };
    const auto uid = value(series_uid);
    if (uid.empty()) continue;
    auto& s = by_uid[uid];
    s.uid = uid;
    s.patient_id = value(patient);
    s.description = value(description);
    try {
      s.number = std::stoi(value(series_number));
    } catch (...) {
    }
    Slice slice{file, numbers(value(position)), numbers(value(orientation)), 0};
    try {
      slice.instance = std::stoi(value(instance));
    } catch (...) {
    }
    slices[uid].push_back(std::move(slice));
  }
  std::vector<DicomSeries> out;
  for (auto& [uid, series] : by_uid) {
    auto& list = slices[uid];
    const auto& o = list.front().orientation;
    bool geometry_ok = o.size() == 6;
    for (const auto& s : list) geometry_ok = geometry_ok && s.position.size() == 3 && s.orientation == o;
    if (!geometry_ok) {
      series.problem = "slices without a position or with different orientations (not an axial stack of single-frame "
                       "images)";
    } else {
      const std::array<double, 3> normal{o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]};
      const auto along = [&](const Slice& s) { return s.position[0] * normal[0] + s.position[1] * normal[1] + s.position[2] * normal[2]; };
      std::sort(list.begin(), list.end(), [&](const Slice& a, const Slice& b) { return along(a) < along(b); });
      std::vector<double> gaps;
      for (std::size_t i = 1; i < list.size(); ++i) gaps.push_back(along(list[i]) - along(list[i - 1]));
      if (list.size() < 2) {
        series.problem = "one slice only";
      } else {
        auto sorted = gaps;
        std::sort(sorted.begin(), sorted.end());
        const double typical = sorted[sorted.size() / 2];
        for (std::size_t i = 0; i < gaps.size() && series.problem.empty(); ++i) {
          const auto between = " between instances " + std::to_string(list[i].instance) + " and " + std::to_string(list[i + 1].instance);
          if (gaps[i] < 1e-3) {
            series.problem = "two slices at the same position" + between;
          } else if (std::abs(gaps[i] - 2 * typical) < 0.1 * typical) {
            series.problem = "a slice is missing" + between + " (a gap of " + number(gaps[i]) + " mm where the spacing is " +
                             number(typical) + " mm)";
          } else if (std::abs(gaps[i] - typical) > 0.01 * typical + 1e-3) {
            series.problem = "the slice spacing varies (" + number(gaps[i]) + " mm" + between + ", " + number(typical) +
                             " mm elsewhere)";
          }
        }
      }
    }
    for (const auto& s : list) series.files.push_back(s.file);
    out.push_back(std::move(series));
  }
  std::sort(out.begin(), out.end(), [](const DicomSeries& a, const DicomSeries& b) {
    return std::tie(a.patient_id, a.number, a.uid) < std::tie(b.patient_id, b.number, b.uid);
  });
  return out;
}

namespace {

// Names, sizes and modification times of the series' files: what makes a conversion stale.
std::string series_stamp(const DicomSeries& series) {
  std::ostringstream s;
  s << "series " << series.uid << "\n";
  std::error_code ec;
  for (const auto& f : series.files) {
    const auto size = fs::file_size(f, ec);
    const auto time = fs::last_write_time(f, ec).time_since_epoch().count();
    s << f.string() << " " << size << " " << time << "\n";
  }
  return s.str();
}

}  // namespace

Status convert_dicom_series(const DicomSeries& series, const fs::path& nifti) {
  if (!series.problem.empty()) return make_error("series '" + series.description + "': " + series.problem);
  const auto stamp_file = fs::path(nifti.string() + ".stamp");
  const auto stamp = series_stamp(series);
  std::error_code ec;
  if (fs::exists(nifti, ec)) {
    auto old = files::read_all(stamp_file);
    if (old && *old == stamp) return Status::success();  // converted before, series unchanged
  }
  // dcm2niix converts whole folders: give it one holding links to this series' files only.
  const auto work = fs::path(nifti.string() + ".work");
  fs::remove_all(work, ec);
  fs::create_directories(work / "in", ec);
  fs::create_directories(work / "out", ec);
  if (ec) return make_error(work.string() + ": " + ec.message());
  int i = 0;
  for (const auto& f : series.files) {
    fs::create_symlink(fs::absolute(f), work / "in" / ("slice" + std::to_string(i++) + ".dcm"), ec);
    if (ec) return make_error(work.string() + ": " + ec.message());
  }
  const auto log = work / "dcm2niix.log";
  process::SpawnOptions how;
  how.append_log = false;
  how.search_path = true;
  auto started = process::spawn({"dcm2niix", "-z", "y", "-b", "n", "-f", "series", "-o", (work / "out").string(), (work / "in").string()},
                                log, how);
  const int rc = started ? process::wait_for(*started) : -1;
  std::vector<fs::path> produced;
  for (const auto& e : fs::directory_iterator(work / "out", ec)) {
    if (detail::has_nifti_extension(e.path())) produced.push_back(e.path());
  }
  if (rc != 0 || produced.size() != 1) {
    auto text = files::read_all(log);
    std::string tail = text ? *text : "";
    if (tail.size() > 400) tail = "..." + tail.substr(tail.size() - 400);
    fs::remove_all(work, ec);
    if (rc == -1) return make_error("dcm2niix could not run (is it installed? scripts/install-deps.sh installs it)");
    return make_error("dcm2niix on series '" + series.description + "' (" + series.uid + ") gave " +
                      std::to_string(produced.size()) + " images, exit " + std::to_string(rc) + ": " + tail);
  }
  // dcm2niix keeps the scanner's row order (its NIfTI often runs anterior to posterior where
  // other files run the other way); fedda slices volumes by voxel axes, so every converted scan
  // is turned to one orientation (ITK's RAI: identity direction in LPS) as the simulator writes.
  auto image = read_image(produced.front());
  if (!image) {
    fs::remove_all(work, ec);
    return make_error("dcm2niix output of series '" + series.description + "': " + image.error().message);
  }
  try {
    auto orient = itk::OrientImageFilter<detail::ItkImage<float>, detail::ItkImage<float>>::New();
    orient->UseImageDirectionOn();
    orient->SetDesiredCoordinateOrientation(itk::SpatialOrientation::ITK_COORDINATE_ORIENTATION_RAI);
    orient->SetInput(detail::to_itk(*image));
    orient->Update();
    *image = detail::from_itk(*orient->GetOutput());
  } catch (const std::exception& e) {
    fs::remove_all(work, ec);
    return make_error("series '" + series.description + "': cannot reorient: " + e.what());
  }
  fs::create_directories(nifti.parent_path(), ec);
  const auto temporary = work / "oriented.nii.gz";
  auto written = write_image(temporary, *image);
  if (written) {
    fs::rename(temporary, nifti, ec);
    if (ec) written = make_error(nifti.string() + ": " + ec.message());
  }
  fs::remove_all(work, ec);
  if (!written) return written;
  return files::write_atomically(stamp_file, stamp);
}

}  // namespace fedda::imaging
