#include "fedda/models_core/model_spec.h"

#include <nlohmann/json.hpp>

namespace fedda::models {

std::string to_json(const ModelSpec& s) {
  nlohmann::json j;
  j["format"] = "fedda-model";
  j["version"] = kModelFormatVersion;
  j["role"] = s.role;
  j["architecture"] = {{"type", "unet2d"},          {"in_channels", s.unet.in_channels},
                       {"classes", s.unet.classes}, {"width", s.unet.width},
                       {"depth", s.unet.depth},     {"norm", s.unet.norm},
                       {"upsample", s.unet.upsample}};
  j["grid"] = {{"in_plane_size", s.grid.in_plane_size}, {"in_plane_spacing_mm", s.grid.in_plane_spacing}};
  return j.dump();
}

Status validate(const ModelSpec& s) {
  const auto& u = s.unet;
  if (u.in_channels < 1 || u.in_channels > 8) return make_error("in_channels must be 1..8");
  if (u.classes < 2 || u.classes > 8) return make_error("classes must be 2..8");
  if (u.width < 1 || u.width > 256) return make_error("width must be 1..256");
  if (u.depth < 1 || u.depth > 6) return make_error("depth must be 1..6");
  if (u.norm != "batch" && u.norm != "instance" && u.norm != "none") {
    return make_error("norm must be batch, instance or none (got '" + u.norm + "')");
  }
  if (u.upsample != "transposed" && u.upsample != "nearest_conv") {
    return make_error("upsample must be transposed or nearest_conv (got '" + u.upsample + "')");
  }
  for (int d = 0; d < 2; ++d) {
    const auto n = s.grid.in_plane_size[d];
    if (n < 8 || n > 1024 || n % (std::size_t{1} << u.depth) != 0) {
      return make_error("grid size " + std::to_string(n) + " must be 8..1024 and divisible by 2^depth");
    }
    if (!(s.grid.in_plane_spacing[d] > 0.05 && s.grid.in_plane_spacing[d] < 20)) {
      return make_error("grid spacing must be between 0.05 and 20 mm");
    }
  }
  return Status::success();
}

Result<ModelSpec> model_spec_from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    return make_error(std::string("model spec is not JSON: ") + e.what());
  }
  try {
    if (j.value("format", "") != "fedda-model") return make_error("not a fedda model (format field missing)");
    const int version = j.at("version").get<int>();
    if (version > kModelFormatVersion) {
      return make_error("model format version " + std::to_string(version) + " is newer than this fedda reads (" +
                        std::to_string(kModelFormatVersion) + "); upgrade fedda");
    }
    ModelSpec s;
    s.role = j.value("role", "segmenter");
    const auto& a = j.at("architecture");
    if (a.at("type").get<std::string>() != "unet2d") {
      return make_error("architecture '" + a.at("type").get<std::string>() + "' is not one fedda knows");
    }
    s.unet.in_channels = a.at("in_channels").get<int>();
    s.unet.classes = a.at("classes").get<int>();
    s.unet.width = a.at("width").get<int>();
    s.unet.depth = a.at("depth").get<int>();
    s.unet.norm = a.at("norm").get<std::string>();
    s.unet.upsample = a.at("upsample").get<std::string>();
    s.grid.in_plane_size = j.at("grid").at("in_plane_size").get<std::array<std::size_t, 2>>();
    s.grid.in_plane_spacing = j.at("grid").at("in_plane_spacing_mm").get<std::array<double, 2>>();
    if (auto st = validate(s); !st) return make_error("invalid model spec: " + st.error().message);
    return s;
  } catch (const std::exception& e) {
    return make_error(std::string("model spec is incomplete: ") + e.what());
  }
}

}  // namespace fedda::models
