#pragma once
// What a model file says about itself, free of LibTorch so that tools and services can read
// and print it without compiling against torch.
//
// A fedda model file is a LibTorch archive holding the weights and one JSON string, the spec:
// architecture, the preprocessing grid it was trained on, and a format version. Loading checks
// the spec before any weight, so a file of another architecture or version is refused with a
// message naming it.

#include <array>
#include <cstddef>
#include <string>

#include "fedda/common/result.h"
#include "fedda/common/grid_spec.h"

namespace fedda::models {

inline constexpr int kModelFormatVersion = 1;

struct UNetSpec {
  int in_channels = 2;  // FLAIR, T1
  int classes = 2;      // background, WMH
  int width = 16;       // channels of the first level; doubled per level
  int depth = 4;        // number of 2x down-samplings
  std::string norm = "batch";            // batch | instance | none
  std::string upsample = "nearest_conv"; // nearest_conv | transposed (the paper's; 1.9x slower on CPU here)
};

struct ModelSpec {
  UNetSpec unet;
  GridSpec grid;
  std::string role = "segmenter";  // what trained it: teacher, student, ada, ...
};

std::string to_json(const ModelSpec& spec);
// Error names what is wrong: not JSON, another format, a newer version, invalid fields.
Result<ModelSpec> model_spec_from_json(const std::string& json);
// Error when a field is out of range (width 1..256, depth 1..6, grid divisible by 2^depth, ...).
Status validate(const ModelSpec& spec);

}  // namespace fedda::models
