#pragma once
// Helpers shared by fedda's tests: scratch folders, hand-built geometries and a raw NIfTI-1
// writer that can produce what ITK's writer will not (4-D series, odd datatypes, scaling,
// truncated files).

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "fedda/imaging/volume.h"

namespace fedda::testing {

// A fresh folder under the system temp dir, removed with the object.
class ScratchDir {
 public:
  ScratchDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("fedda-test-" + std::to_string(rd()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  // FEDDA_KEEP_TEST_DIRS=1 keeps the folder for a look after the test.
  ~ScratchDir() {
    if (const char* keep = std::getenv("FEDDA_KEEP_TEST_DIRS"); keep && *keep) {
      std::fprintf(stderr, "kept %s\n", path_.c_str());
      return;
    }
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline imaging::Geometry make_geometry(std::size_t nx, std::size_t ny, std::size_t nz,
                                       std::array<double, 3> spacing = {1, 1, 1},
                                       std::array<double, 3> origin = {0, 0, 0}) {
  imaging::Geometry g;
  g.size = {nx, ny, nz};
  g.spacing = spacing;
  g.origin = origin;
  return g;
}

// An oblique, anisotropic geometry: rotated 20 degrees about z and 10 about x.
inline imaging::Geometry oblique_geometry(std::size_t nx, std::size_t ny, std::size_t nz) {
  imaging::Geometry g = make_geometry(nx, ny, nz, {0.96, 0.95, 3.0}, {-101.5, 87.25, -40.0});
  const double a = 20.0 * 3.14159265358979 / 180.0, b = 10.0 * 3.14159265358979 / 180.0;
  // Rz(a) * Rx(b), row-major.
  const double rz[9] = {std::cos(a), -std::sin(a), 0, std::sin(a), std::cos(a), 0, 0, 0, 1};
  const double rx[9] = {1, 0, 0, 0, std::cos(b), -std::sin(b), 0, std::sin(b), std::cos(b)};
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) {
      double v = 0;
      for (int k = 0; k < 3; ++k) v += rz[r * 3 + k] * rx[k * 3 + c];
      g.direction[r * 3 + c] = v;
    }
  return g;
}

struct RawNifti {
  std::vector<std::int16_t> dim{3, 1, 1, 1, 1, 1, 1, 1};
  std::int16_t datatype = 16;  // NIFTI_TYPE_FLOAT32
  std::int16_t bitpix = 32;
  float pixdim[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  float scl_slope = 0;
  float scl_inter = 0;
  std::vector<char> data;  // raw little-endian voxel bytes
};

// Writes a single-file NIfTI-1 (.nii) with an identity sform.
inline void write_raw_nifti(const std::filesystem::path& path, const RawNifti& n,
                            std::size_t truncate_data_to = static_cast<std::size_t>(-1)) {
  char header[352] = {};
  auto put = [&](int offset, const void* src, std::size_t bytes) {
    std::memcpy(header + offset, src, bytes);
  };
  const std::int32_t sizeof_hdr = 348;
  put(0, &sizeof_hdr, 4);
  for (int i = 0; i < 8; ++i) put(40 + 2 * i, &n.dim[i], 2);
  put(70, &n.datatype, 2);
  put(72, &n.bitpix, 2);
  put(76, n.pixdim, 32);
  const float vox_offset = 352;
  put(108, &vox_offset, 4);
  put(112, &n.scl_slope, 4);
  put(116, &n.scl_inter, 4);
  const std::int16_t sform_code = 1;
  put(254, &sform_code, 2);
  const float srow[12] = {n.pixdim[1], 0, 0, 0, 0, n.pixdim[2], 0, 0, 0, 0, n.pixdim[3], 0};
  put(280, srow, 48);
  put(344, "n+1\0", 4);
  std::ofstream out(path, std::ios::binary);
  out.write(header, 352);
  const std::size_t bytes = std::min(truncate_data_to, n.data.size());
  out.write(n.data.data(), static_cast<std::streamsize>(bytes));
}

template <typename T>
std::vector<char> raw_bytes(const std::vector<T>& values) {
  std::vector<char> out(values.size() * sizeof(T));
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// Path of a built executable (FEDDA_BIN_DIR is set by ctest).
inline std::filesystem::path bin(const std::string& name) {
  const char* dir = std::getenv("FEDDA_BIN_DIR");
  return std::filesystem::path(dir ? dir : "build/bin") / name;
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs a shell command, capturing its output.
inline CommandResult run_command(const std::string& command) {
  CommandResult r;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return r;
  char buffer[4096];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) r.output.append(buffer, n);
  const int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace fedda::testing
