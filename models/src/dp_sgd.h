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
// instance norm mixes nothing. Which patients join a step, and the noise, come from OpenSSL's
// RAND_bytes (its DRBG), never from the job's seed, which the coordinator knows: whoever could
// replay either could subtract the noise or undo the subsampling. Internal to the models
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

// Randomness nobody can replay: words from OpenSSL's RAND_bytes, as uniforms and as Gaussians
// (Box-Muller on 53-bit uniforms). Throws std::runtime_error when OpenSSL gives no bytes.
class SecretRandom {
 public:
  double uniform();  // in (0, 1]
  // float32 values of standard deviation `sd`, on the CPU.
  torch::Tensor gaussian(torch::IntArrayRef sizes, double sd);

 private:
  std::uint64_t word();
  std::vector<std::uint64_t> words_;
  std::size_t next_ = 0;
};

struct DpStepResult {
  double loss = 0;            // mean of the joined subjects' losses (0 when none joined)
  int subjects = 0;           // how many joined
  int clipped = 0;            // of those, how many had a gradient longer than the clip norm
  std::vector<double> norms;  // each joined subject's gradient norm before clipping, in joining order
};

// The private gradient of one step over `scans` (one per subject), in `params`' gradients: each
// subject joins with probability dp.sample_rate (drawn from `secret`); `backward` draws a joined
// subject's micro-batch, leaves that subject's gradient in `params` (they are zeroed before each
// call) and returns its loss; the gradient is clipped to dp.clip_norm over all of `params` at
// once, the clipped ones summed, Gaussian noise of sd noise_multiplier * clip_norm added to every
// coordinate and the sum divided by q * N. The result says how many joined, and their norms
// before the clip (for the site's own log: they carry no noise). A step that no subject joined
// gives the noise alone: the analysis counts every step. `params` may span several modules
// (ADA: the segmenter's and the discriminator's, one vector for the clip, so one mechanism for
// both).
DpStepResult dp_gradient(const std::vector<torch::Tensor>& params, const std::vector<ScanSlices>& scans,
                         const DpSgd& dp, const std::function<double(const ScanSlices&)>& backward,
                         SecretRandom& secret);

// One DP-SGD step of `net` (its parameters that require a gradient): dp_gradient, then the
// optimiser's step. `micro_batch` draws a subject's slices (its augmentation may use the job's
// seed), `loss` scores them. The parameters' gradients are left as the step used them.
DpStepResult dp_step(torch::nn::Module& net, torch::optim::Optimizer& optimizer, const std::vector<ScanSlices>& scans,
                     const DpSgd& dp, const std::function<Batch(const ScanSlices&)>& micro_batch,
                     const std::function<torch::Tensor(const Batch&)>& loss, SecretRandom& secret);

// `net`'s parameters that require a gradient: what DP-SGD clips and steps.
std::vector<torch::Tensor> trainable_parameters(torch::nn::Module& net);

// Every batch-norm layer of `net` in eval mode (call after net->train()).
void freeze_batch_norm(torch::nn::Module& net);

}  // namespace fedda::models
