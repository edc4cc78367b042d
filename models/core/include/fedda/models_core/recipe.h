#pragma once
// How a network is trained, apart from what it is trained on: on-the-fly augmentation, patches
// with foreground oversampling, optimiser, learning-rate schedule and batch prefetching. Free of
// LibTorch, so that job files, the coordinator and the command line can read, print and
// validate a recipe without compiling against torch.
//
// Every numeric setting is one row of recipe_keys(): its name (as in job files, JSON and
// --recipe-set), the field, the range it must lie in and what it does. Reading, writing,
// validating and --help all go through that table, so a new setting is one row.
//
// Presets (recipe_preset):
//   classic  what fedda trained with before recipes: left-right flips and a small per-channel
//            intensity scale and shift, whole slices, Adam with one step decay. The default, so
//            that runs and job files from before recipes train exactly as they did.
//   nnunet   nnU-Net's published 2-D defaults (Isensee et al. 2021, Nat. Methods 18:203): spatial
//            (mirroring, rotation, scaling) and intensity (Gaussian noise, Gaussian blur,
//            brightness, contrast, simulated low resolution, gamma) augmentation with its
//            probabilities and ranges, SGD with Nesterov momentum 0.99 and poly decay (exponent
//            0.9) from 1e-2, a third of the patches forced to hold foreground. Two departures:
//            mirroring is left-right only (an axial brain slice's other flip is no brain), and
//            channel_probability (nnU-Net's 0.5 for blur and low resolution) applies to every
//            intensity transform.
//   heavy    nnunet with every intensity transform made likelier and wider, plus a smooth bias
//            field and independent contrast per channel: the scanner shifts of BigAug (Zhang et
//            al. 2020, IEEE TMI 39:2531), for lbound-aug teachers and kd-noisy students.

#include <string>
#include <vector>

#include "fedda/common/result.h"

namespace fedda::models {

struct Recipe {
  std::string preset = "classic";  // what the values below started from (informational)
  // Optimiser and schedule.
  std::string optimizer = "adam";  // adam | sgd (Nesterov momentum, weight decay, gradient clipping)
  std::string schedule = "step";   // step (x decay_factor after decay_epoch) | poly ((1 - e/E)^poly_exponent)
  double momentum = 0.99;          // sgd
  double weight_decay = 3e-5;      // sgd
  double gradient_clip = 12;       // sgd: the gradients' global L2 norm is clipped to this; 0: off
  double poly_exponent = 0.9;
  // Patches: 0 trains on whole slices; otherwise a patch_size x patch_size window of each slice
  // (at least 16, a multiple of the U-Net's 2^depth, at most the grid's smaller side), of which foreground_fraction are
  // centred on a (labelled, else teacher-predicted) lesion voxel. Inference is always on whole slices.
  double patch_size = 0;
  double foreground_fraction = 0.33;
  // Batches prepared this many ahead on a background thread (0: on the training thread).
  double prefetch = 0;
  // What is saved and scored: the weights as trained (0), or their exponential moving average
  // over the steps with this decay (0.999 averages about the last thousand steps). Centralized
  // training only: a federated job's model is already the sites' average every round.
  double weight_average = 0;
  // Augmentation. Each transform happens to a slice with its probability; ranges are uniform.
  // Spatial ones move image, labels (nearest) and soft labels (interpolated) together;
  // intensity ones touch the image only.
  double mirror_probability = 0.5;        // left-right
  double rotation_probability = 0;
  double rotation_degrees = 180;          // angle drawn from [-r, r]
  double scale_probability = 0;
  double scale_min = 0.7, scale_max = 1.4;  // >1 zooms in
  double elastic_probability = 0;
  double elastic_magnitude = 0.03;        // displacement (fraction of the slice) of a smooth 4x4 field
  double jitter_sd = 0.1;                 // classic: x * (1 + sd N) + sd N per channel, every slice
  double noise_probability = 0;
  double noise_variance = 0.1;            // Gaussian noise of variance drawn from [0, v]
  double blur_probability = 0;
  double blur_sigma_min = 0.5, blur_sigma_max = 1.0;  // pixels
  double brightness_probability = 0;
  double brightness_min = 0.75, brightness_max = 1.25;  // multiplicative
  double contrast_probability = 0;
  double contrast_min = 0.75, contrast_max = 1.25;      // around the mean, kept within the range
  double low_resolution_probability = 0;
  double low_resolution_min = 0.5, low_resolution_max = 1.0;  // down-sampled by this, then back
  double gamma_probability = 0;
  double gamma_min = 0.7, gamma_max = 1.5;
  double gamma_invert_probability = 0;    // gamma of the inverted image
  double bias_field_probability = 0;
  double bias_field_strength = 0.3;       // log-amplitude of a smooth multiplicative field
  double channel_probability = 1.0;       // intensity transforms pick each channel with this probability

  bool augments() const;  // whether any transform can change a slice
};

// `recipe` with every augmentation off (patches, optimiser and schedule kept).
Recipe without_augmentation(Recipe recipe);
// `recipe`'s optimiser, schedule, patches and prefetch with `augmentation`'s transforms (e.g. the
// heavy preset's on a profile's own recipe, for lbound-aug and kd-noisy). `preset` stays the
// base's: it names where the values started, and every value is written out beside it.
Recipe with_augmentation_of(Recipe recipe, const Recipe& augmentation);

struct RecipeKey {
  const char* name;
  double Recipe::*field;
  double min, max;
  const char* help;
  bool augmentation;  // one of the augmentation's settings (what with_augmentation_of copies)
};
// Every numeric setting, in the order they are printed.
const std::vector<RecipeKey>& recipe_keys();

// Names of the presets, and one by name; the error lists them.
const std::vector<std::string>& recipe_presets();
Result<Recipe> recipe_preset(const std::string& name);

// Error names the first key at fault and its range (a patch larger than the grid or not on the
// U-Net's stride, a probability outside [0, 1], min above max, an unknown optimiser).
// `grid` and `depth` are the model's (0: not checked).
Status validate(const Recipe& recipe, int grid = 0, int depth = 0);
// Error naming the key when `recipe` holds a setting a federated job cannot have: weight_average
// (a federated job's model is already the sites' average every round). The coordinator checks it
// at submission and the site trainer again before it trains.
Status validate_federated(const Recipe& recipe);

// JSON object of every setting (with "preset").
std::string to_json(const Recipe& recipe);
// Either a preset's name, or an object {"preset": NAME, key: value, ...} whose keys override
// the preset's (default classic). Unknown keys and values of the wrong type are refused naming
// the key; the result is validated (without the grid).
Result<Recipe> recipe_from_json(const std::string& json);
// "key=value" (a preset name alone for "preset=NAME") applied to `recipe`; error names the key.
Status set_recipe_value(Recipe& recipe, const std::string& assignment);

}  // namespace fedda::models
