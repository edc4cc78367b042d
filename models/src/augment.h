#pragma once
// On-the-fly augmentation and patch sampling of training slices (private; LibTorch inside),
// driven by a Recipe (fedda/models_core/recipe.h).
//
// Every random choice comes from the caller's generator: transform parameters are drawn from it
// directly and noise tensors from a LibTorch generator seeded by one draw of it, so a batch is a
// function of the generator's state alone (an epoch seeded from (seed, epoch) replays exactly,
// on any thread). Nothing here touches LibTorch's global generator.

#include <random>

#include <torch/torch.h>

#include "fedda/models_core/recipe.h"

namespace fedda::models {

// Slices of one batch on the CPU. `labels` and `p` may be undefined.
struct SliceBatch {
  torch::Tensor images;  // [B, C, H, W] float32
  torch::Tensor labels;  // [B, H, W] int64 (0, 1, 2)
  torch::Tensor p;       // [B, H, W] float32: the teacher's p(WMH) in [0, 1]
};

// Whether a recipe's augmentation is the classic one (left-right flips and per-channel jitter,
// whole slices): that path draws from the generator exactly as fedda did before recipes.
bool classic_augmentation(const Recipe& recipe);

// Spatial transforms (mirroring, rotation, scaling, elastic) move images (bilinear; outside the
// slice each channel's darkest value), labels (nearest; outside 0) and p (bilinear; outside 0)
// alike; then intensity transforms change the images only. In place.
void augment_slices(SliceBatch& batch, const Recipe& recipe, std::mt19937_64& rng);

// `recipe`'s intensity transforms as one change of a whole scan ([S, C, H, W], in place): every
// slice gets the same draws from `seed` (which transforms, which channels, their parameters, the
// bias field's and the noise's pattern), as a scan from another scanner or protocol would.
void scanner_change(torch::Tensor& slices, const Recipe& recipe, std::uint64_t seed);

// A patch_size x patch_size window of every slice: with probability foreground_fraction centred
// on a lesion voxel (label 1, else p > 0.5) where the slice has one, else anywhere. In place.
void crop_patches(SliceBatch& batch, int patch_size, double foreground_fraction, std::mt19937_64& rng);

}  // namespace fedda::models
