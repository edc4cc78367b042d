#pragma once
// A site's weight in a round's average: one rule for the coordinator's plain average, its
// secure-aggregation roster and the site that masks its update under that roster.
//
// FedAvg weighs a site's model by the samples it declared. A job with steps_by_share shares one
// centralized epoch of local steps out by sample count, so a site's move from the global model
// is already about proportional to its samples; weighing it by samples again counts the share
// twice (a site holding a fifth of the samples gets a seventeenth of the objective, share
// squared over the sum of squares), and the average of moves made in parallel advances the
// model by the mean of the sites' steps, not their sum (a half-epoch a round with two equal
// sites). Wang et al. 2020, "Tackling the objective inconsistency problem in heterogeneous
// federated optimization" (FedNova), normalise each move by its steps: such a job weighs a site
// by samples per step, and the coordinator stretches the averaged move from the global model by
// `move_scale` (job_run.cpp), so that the round moves the model as far as the sites' steps
// together and in the direction of the sample-weighted mean of their per-step moves. With steps
// exactly proportional to samples that is the sum of the sites' moves: one centralized epoch.

#include <cstdint>

namespace fedda {

// `steps`: the local steps the coordinator asked of the site this round.
inline double aggregation_weight(bool steps_by_share, std::int64_t samples, int steps) {
  return steps_by_share && steps > 0 ? static_cast<double>(samples) / steps : static_cast<double>(samples);
}

// How far the average of the round's models (weighed by aggregation_weight) is stretched from
// the global model: 1 for FedAvg; for steps_by_share (sum of steps) x (sum of weights) / (sum of
// samples) over the sites counted in.
inline double move_scale(bool steps_by_share, double samples, double steps, double weights) {
  return steps_by_share && samples > 0 ? steps * weights / samples : 1.0;
}

}  // namespace fedda
