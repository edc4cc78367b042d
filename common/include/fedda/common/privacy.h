#pragma once
// The privacy accountant: what a run of the Poisson-subsampled Gaussian mechanism (DP-SGD with
// the patient as the unit) costs in (epsilon, delta).
//
// Each step samples every patient with probability q, clips each sampled patient's gradient to
// an L2 norm C and adds Gaussian noise of standard deviation sigma * C to the sum. Its Rényi
// differential privacy at order alpha is computed as in Mironov, Talwar and Zhang 2019
// ("Rényi Differential Privacy of the Sampled Gaussian Mechanism", arXiv:1908.10530): the
// binomial sum of their section 3.3 for integer orders and its erfc series for fractional ones,
// in log space. Steps compose by adding RDP (Mironov 2017, "Rényi Differential Privacy",
// proposition 1). RDP becomes (epsilon, delta) by Balle et al. 2020 ("Hypothesis Testing
// Interpretations and Renyi Differential Privacy", theorem 21), minimised over a set of orders;
// the default set is the one Opacus and TF Privacy use, so figures agree with theirs.
//
// Written here rather than taken from a library because no C++ library in Debian has it (the
// reference implementations are Python: Opacus, TF Privacy, autodp). Pure functions of plain
// data; thread-safe.

#include <vector>

#include "fedda/common/result.h"

namespace fedda::privacy {

struct Mechanism {
  double noise_multiplier = 0;  // sigma: the noise's standard deviation over the clip norm
  double sample_rate = 0;       // q: each patient's chance of being in a step's batch
  long long steps = 0;          // how many steps touched the data
};

// 1.1, 1.2, ..., 10.9 and 12, 13, ..., 63: Opacus's DEFAULT_ALPHAS.
const std::vector<double>& default_orders();

// One step's RDP at `order` (> 1). Infinite for sigma 0; 0 for q 0.
double rdp_of_one_step(double sample_rate, double noise_multiplier, double order);

struct Spent {
  double epsilon = 0;
  double order = 0;  // the order that gave the smallest epsilon
};

// The (epsilon, delta) a mechanism spends. Refused, naming the value, for sigma <= 0 or not
// finite, q outside (0, 1], negative steps, delta outside (0, 1) or an order <= 1.
Result<Spent> epsilon(const Mechanism& m, double delta, const std::vector<double>& orders = default_orders());

// The smallest noise multiplier (to 1e-6 relative) whose mechanism at `sample_rate` over `steps`
// spends at most `target_epsilon` at `delta`. Refused for a target <= 0 or one no noise under
// 1e6 reaches.
Result<double> noise_for_epsilon(double target_epsilon, double sample_rate, long long steps, double delta,
                                 const std::vector<double>& orders = default_orders());

}  // namespace fedda::privacy
