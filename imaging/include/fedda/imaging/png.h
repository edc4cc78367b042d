#pragma once
// Writing 8-bit RGB pictures (previews, overlays) as PNG. Thread-safe.

#include <cstdint>
#include <filesystem>
#include <vector>

#include "fedda/common/result.h"

namespace fedda::imaging {

struct RgbPicture {
  std::size_t width = 0;
  std::size_t height = 0;
  std::vector<std::uint8_t> rgb;  // row-major, 3 bytes per pixel

  RgbPicture(std::size_t w, std::size_t h) : width(w), height(h), rgb(w * h * 3, 0) {}
  void set(std::size_t x, std::size_t y, std::uint8_t r, std::uint8_t g, std::uint8_t b) {
    auto* p = &rgb[(y * width + x) * 3];
    p[0] = r;
    p[1] = g;
    p[2] = b;
  }
};

// Written through a temporary name and renamed into place.
Status write_png(const std::filesystem::path& path, const RgbPicture& picture);

}  // namespace fedda::imaging
