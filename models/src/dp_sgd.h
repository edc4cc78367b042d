#pragma once
// DP-SGD with the patient as the privacy unit (Abadi et al. 2016, "Deep Learning with
// Differential Privacy", with subjects in the place of examples): every step samples each of
// the site's subjects with probability q (Poisson sampling, as the accountant in
// fedda/common/privacy.h assumes), computes each sampled subject's gradient on a micro-batch of
// that subject's slices alone, clips it to an L2 norm C, sums, adds Gaussian noise of standard
// deviation sigma * C to every coordinate, divides by the expected number of subjects q * N and
// steps. LibTorch 1.13 has no vmap in C++, so per-subject gradients are micro-batches, one
// backward pass per sampled subject.
//
// Nothing may mix subjects: batch-norm layers are held in eval mode (the statistics of the
// model the site was sent, which never saw this site's data, normalise and are not updated);
// instance norm mixes nothing. The noise comes from a generator seeded from OpenSSL's
// RAND_bytes, never from the job's seed, which the coordinator knows. Internal to the models
// library; not thread-safe.

#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include <torch/torch.h>

#include "data.h"

namespace fedda::models {

struct DpSgd {
  double clip_norm = 1.0;         // C: each subject's gradient is clipped to this L2 norm
  double noise_multiplier = 1.0;  // sigma: the noise's standard deviation over C
  double sample_rate = 0.1;       // q: each subject's chance of joining one step
};

// q for a site of `subjects` subjects whose steps hold `batch` slices, `per_subject` from each
// subject that joins: the expected batch over the slices a subject gives, at most 1.
double dp_sample_rate(int subjects, int batch, int per_subject);

struct DpStepResult {
  double loss = 0;   // mean of the joined subjects' losses (0 when none joined)
  int subjects = 0;  // how many joined
};

// One DP-SGD step over `scans` (one per subject). `micro_batch` draws a subject's slices,
// `loss` scores them. A step that no subject joined still steps, on the noise alone: the
// analysis counts every step. The parameters' gradients are left as the step used them.
DpStepResult dp_step(torch::nn::Module& net, torch::optim::Optimizer& optimizer, const std::vector<ScanSlices>& scans,
                     const DpSgd& dp, const std::function<Batch(const ScanSlices&)>& micro_batch,
                     const std::function<torch::Tensor(const Batch&)>& loss, std::mt19937_64& rng,
                     torch::Generator& noise);

// Every batch-norm layer of `net` in eval mode (call after net->train()).
void freeze_batch_norm(torch::nn::Module& net);

// A CPU generator seeded with 64 bits from OpenSSL's RAND_bytes.
torch::Generator secret_noise_generator();

}  // namespace fedda::models
