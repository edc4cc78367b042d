#pragma once
// Scans as slices on the model grid, slice sampling and augmentation (private; LibTorch
// inside). All randomness comes from the caller's generator, so an epoch seeded from
// (seed, epoch) replays exactly.

#include <random>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "fedda/common/result.h"
#include "fedda/imaging/dataset.h"
#include "fedda/imaging/preprocess.h"
#include "fedda/models_core/recipe.h"

namespace fedda::models {

struct ScanSlices {
  std::string id;                // clinic/subject, for messages
  torch::Tensor images;          // [S, 2, H, W] float32: z-scored FLAIR, T1 on the model grid
  torch::Tensor labels;          // [S, H, W] int64 in {0, 1, 2}; undefined when unlabelled
  torch::Tensor soft;            // [S, H, W] float16 teacher's tempered p(WMH); undefined if none
  torch::Tensor brain;           // [S, H, W] bool: the brain mask on the grid
  std::vector<int> brain_slices;   // slices holding brain
  std::vector<int> lesion_slices;  // slices with (labelled, else teacher-predicted) WMH
  imaging::Geometry original;
  imaging::Geometry grid;
};

// Reads, validates and preprocesses one subject; labels are resampled (nearest) to the grid.
// Results are remembered for the life of the process (keyed by the files' paths, sizes and
// modification times and the grid; FEDDA_SCAN_CACHE_MB bounds the memory, default 2048).
Result<ScanSlices> load_scan(const imaging::SubjectFiles& files, const GridSpec& grid, bool with_labels);
Result<std::vector<ScanSlices>> load_scans(const std::vector<imaging::SubjectFiles>& files,
                                           const GridSpec& grid, bool with_labels);

struct Batch {
  torch::Tensor images;  // [B, 2, H, W]
  torch::Tensor labels;  // [B, H, W] int64 or undefined
  torch::Tensor soft;    // [B, 2, H, W] float32 tempered teacher posteriors, or undefined
};

// Draws `batch` slices: a `lesion_fraction` share from slices with lesions, the rest from
// brain slices, then augments them and cuts patches as `recipe` says (augment.h). Soft labels
// and labels get the same geometric transform as the images; intensity transforms touch images only.
Batch sample_batch(const std::vector<ScanSlices>& scans, int batch, double lesion_fraction, const Recipe& recipe,
                   std::mt19937_64& rng, const torch::Device& device);
// The classic recipe (left-right flips, intensity scale and shift) when `augment`, else none.
Batch sample_batch(const std::vector<ScanSlices>& scans, int batch, double lesion_fraction, bool augment,
                   std::mt19937_64& rng, const torch::Device& device);

}  // namespace fedda::models
