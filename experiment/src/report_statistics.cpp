// The report's statistics: means and standard deviations over the finite scores, and Student's
// paired t-test (Boost.Math's t distribution), the one test every table uses.
#include <boost/math/distributions/students_t.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "report.h"

namespace fedda::experiment {
namespace report {

std::vector<std::string> split(const std::string& line, char sep) {
  std::vector<std::string> f;
  std::stringstream ss(line);
  for (std::string x; std::getline(ss, x, sep);) f.push_back(x);
  if (!line.empty() && line.back() == sep) f.emplace_back();
  return f;
}

double number(const std::string& s) {
  if (s.empty()) return NAN;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  return end && *end == 0 ? v : NAN;
}

Stats stats(const std::vector<double>& v) {
  Stats s;
  double sum = 0;
  for (double x : v) {
    if (std::isfinite(x)) {
      sum += x;
      ++s.n;
    }
  }
  if (s.n == 0) return s;
  s.mean = sum / s.n;
  double ss = 0;
  for (double x : v) {
    if (std::isfinite(x)) ss += (x - s.mean) * (x - s.mean);
  }
  s.sd = s.n > 1 ? std::sqrt(ss / (s.n - 1)) : 0.0;
  return s;
}

// The t-test on the subjects both methods scored.
std::optional<PairedTTest> paired_t_test(const std::map<std::string, double>& a, const std::map<std::string, double>& b) {
  std::vector<double> x, y;
  for (const auto& [key, value] : a) {
    const auto it = b.find(key);
    if (it == b.end()) continue;
    x.push_back(value);
    y.push_back(it->second);
  }
  return experiment::paired_t_test(x, y);
}

std::string fixed(double v, int digits) {
  if (!std::isfinite(v)) return "–";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string p_text(const std::optional<PairedTTest>& t) {
  if (!t) return "–";
  char buf[32];
  if (t->p < 0.001) std::snprintf(buf, sizeof buf, "<0.001");
  else std::snprintf(buf, sizeof buf, "%.3f", t->p);
  return t->p < 0.05 ? std::string("**") + buf + "**" : std::string(buf);
}

}  // namespace report

std::optional<PairedTTest> paired_t_test(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> d;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (std::isfinite(a[i]) && std::isfinite(b[i])) d.push_back(a[i] - b[i]);
  }
  const auto s = report::stats(d);
  if (s.n < 2) return std::nullopt;
  PairedTTest t;
  t.n = s.n;
  t.mean_difference = s.mean;
  if (s.sd == 0) {  // every difference the same: no spread to test against
    t.t = s.mean == 0 ? 0 : std::copysign(INFINITY, s.mean);
    t.p = s.mean == 0 ? 1.0 : 0.0;
    return t;
  }
  t.t = s.mean / (s.sd / std::sqrt(static_cast<double>(s.n)));
  boost::math::students_t dist(static_cast<double>(s.n - 1));
  t.p = 2 * boost::math::cdf(boost::math::complement(dist, std::fabs(t.t)));
  return t;
}
}  // namespace fedda::experiment
