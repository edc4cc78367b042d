// The RDP accountant of the Poisson-subsampled Gaussian mechanism: formulas and their sources in
// fedda/common/privacy.h.
#include "fedda/common/privacy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "fedda/common/text.h"

namespace fedda::privacy {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// log(exp(a) + exp(b)) without overflow.
double log_add(double a, double b) {
  const double hi = std::max(a, b), lo = std::min(a, b);
  if (hi == -kInf) return -kInf;
  return hi + std::log1p(std::exp(lo - hi));
}

// log(exp(a) - exp(b)) for a >= b; the alternating terms of the fractional series keep it so.
// Where rounding breaks that, NaN: the order is then left out of the minimum rather than
// counted with a sum that came out too small.
double log_sub(double a, double b) {
  if (b == -kInf) return a;
  if (a == b) return -kInf;
  if (a < b) return std::nan("");
  return b + std::log(std::expm1(a - b));
}

// log(erfc(x)), kept finite where erfc underflows (x beyond about 26) by the asymptotic series.
double log_erfc(double x) {
  if (x < 25) return std::log(std::erfc(x));
  const double x2 = x * x;
  return -x2 - std::log(x) - 0.5 * std::log(M_PI) +
         std::log1p(-1 / (2 * x2) + 3 / (4 * x2 * x2) - 15 / (8 * x2 * x2 * x2));
}

// log A_alpha for an integer order: the binomial sum over how many of alpha draws see the patient.
double log_a_integer(double q, double sigma, int alpha) {
  double log_a = -kInf;
  for (int i = 0; i <= alpha; ++i) {
    const double log_binom = std::lgamma(alpha + 1.0) - std::lgamma(i + 1.0) - std::lgamma(alpha - i + 1.0);
    const double term = log_binom + i * std::log(q) + (alpha - i) * std::log1p(-q) +
                        (static_cast<double>(i) * i - i) / (2 * sigma * sigma);
    log_a = log_add(log_a, term);
  }
  return log_a;
}

// log A_alpha for a fractional order: the erfc series of Mironov, Talwar and Zhang (section
// 3.3), summed until a term falls below e^-30. The generalised binomial coefficient changes sign
// once i passes alpha, so each half is kept as a sum and a difference in log space.
double log_a_fractional(double q, double sigma, double alpha) {
  double log_a0 = -kInf, log_a1 = -kInf;
  const double z0 = sigma * sigma * std::log(1 / q - 1) + 0.5;
  double log_coef = 0;  // log |binom(alpha, i)|
  bool positive = true;
  for (int i = 0; i < 1000000; ++i) {
    const double j = alpha - i;
    const double log_t0 = log_coef + i * std::log(q) + j * std::log1p(-q);
    const double log_t1 = log_coef + j * std::log(q) + i * std::log1p(-q);
    const double log_e0 = std::log(0.5) + log_erfc((i - z0) / (std::sqrt(2.0) * sigma));
    const double log_e1 = std::log(0.5) + log_erfc((z0 - j) / (std::sqrt(2.0) * sigma));
    const double log_s0 = log_t0 + (static_cast<double>(i) * i - i) / (2 * sigma * sigma) + log_e0;
    const double log_s1 = log_t1 + (j * j - j) / (2 * sigma * sigma) + log_e1;
    if (positive) {
      log_a0 = log_add(log_a0, log_s0);
      log_a1 = log_add(log_a1, log_s1);
    } else {
      log_a0 = log_sub(log_a0, log_s0);
      log_a1 = log_sub(log_a1, log_s1);
    }
    if (std::max(log_s0, log_s1) < -30) break;
    // binom(alpha, i + 1) = binom(alpha, i) * (alpha - i) / (i + 1)
    log_coef += std::log(std::abs(alpha - i)) - std::log(i + 1.0);
    if (alpha - i < 0) positive = !positive;
  }
  return log_add(log_a0, log_a1);
}

using text::number;

Status check_mechanism(double q, long long steps, double delta, const std::vector<double>& orders) {
  if (!(q > 0 && q <= 1)) return make_error("sample rate " + number(q) + " is not in (0, 1]");
  if (steps < 0) return make_error("steps " + std::to_string(steps) + " is negative");
  if (!(delta > 0 && delta < 1)) return make_error("delta " + number(delta) + " is not in (0, 1)");
  if (orders.empty()) return make_error("no Rényi orders to minimise over");
  for (double a : orders) {
    if (!(a > 1) || !std::isfinite(a)) return make_error("Rényi order " + number(a) + " is not above 1");
  }
  return Status::success();
}

// The smallest epsilon over the orders, for a mechanism already checked.
Spent spent(double sigma, double q, long long steps, double delta, const std::vector<double>& orders) {
  Spent best{kInf, orders.front()};
  if (steps == 0) return Spent{0, orders.front()};  // nothing touched the data
  for (double a : orders) {
    const double rdp = steps * rdp_of_one_step(q, sigma, a);
    // Balle et al. 2020, theorem 21.
    const double eps = rdp - (std::log(delta) + std::log(a)) / (a - 1) + std::log((a - 1) / a);
    if (std::isnan(eps)) continue;
    if (eps < best.epsilon) best = Spent{std::max(eps, 0.0), a};
  }
  return best;
}

}  // namespace

const std::vector<double>& default_orders() {
  static const std::vector<double> orders = [] {
    std::vector<double> o;
    for (int x = 1; x < 100; ++x) o.push_back(1 + x / 10.0);
    for (int x = 12; x < 64; ++x) o.push_back(x);
    return o;
  }();
  return orders;
}

double rdp_of_one_step(double q, double sigma, double order) {
  if (q == 0) return 0;
  if (sigma == 0) return kInf;
  if (q == 1) return order / (2 * sigma * sigma);  // the Gaussian mechanism, not subsampled
  const double log_a = order == std::floor(order) ? log_a_integer(q, sigma, static_cast<int>(order))
                                                   : log_a_fractional(q, sigma, order);
  return log_a / (order - 1);
}

Result<Spent> epsilon(const Mechanism& m, double delta, const std::vector<double>& orders) {
  if (!(m.noise_multiplier > 0) || !std::isfinite(m.noise_multiplier)) {
    return make_error("noise multiplier " + number(m.noise_multiplier) + " is not a positive number");
  }
  if (auto ok = check_mechanism(m.sample_rate, m.steps, delta, orders); !ok) return ok.error();
  return spent(m.noise_multiplier, m.sample_rate, m.steps, delta, orders);
}

Result<double> noise_for_epsilon(double target_epsilon, double q, long long steps, double delta,
                                 const std::vector<double>& orders) {
  if (!(target_epsilon > 0) || !std::isfinite(target_epsilon)) {
    return make_error("target epsilon " + number(target_epsilon) + " is not a positive number");
  }
  if (auto ok = check_mechanism(q, steps, delta, orders); !ok) return ok.error();
  if (steps == 0) return make_error("no steps: nothing touches the data, so no noise is needed");
  // Epsilon falls as the noise grows: bracket the target, then bisect.
  double low = 0, high = 1;
  while (spent(high, q, steps, delta, orders).epsilon > target_epsilon) {
    low = high;
    high *= 2;
    if (high > 1e6) {
      return make_error("no noise multiplier up to 1e6 reaches epsilon " + number(target_epsilon) + " at delta " +
                        number(delta));
    }
  }
  while (high - low > 1e-6 * high) {
    const double mid = (low + high) / 2;
    (spent(mid, q, steps, delta, orders).epsilon > target_epsilon ? low : high) = mid;
  }
  return high;
}

}  // namespace fedda::privacy
