// The experiment's tables (with Student's paired t-test from Boost.Math), plots (gnuplot) and
// report (Markdown, rendered to HTML with cmark-gfm).
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <boost/math/distributions/students_t.hpp>
#include <cmark-gfm-core-extensions.h>
#include <cmark-gfm.h>
#include <nlohmann/json.hpp>

#include "fedda/common/files.h"
#include "fedda/common/log.h"
#include "fedda/imaging/nifti_io.h"
#include "fedda/imaging/png.h"
#include "fedda/experiment/experiment.h"
#include "fedda/simulation/panels.h"
#include "results_csv.h"

namespace fedda::experiment {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

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

struct Stats {
  int n = 0;
  double mean = NAN, sd = NAN;
};

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

std::string fixed(double v, int digits = 3) {
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

const std::map<std::string, std::string>& method_titles() {
  static const std::map<std::string, std::string> t{{"lbound", "L-bound"}, {"ubound", "U-bound"}, {"ada", "ADA"},
                                                   {"kd", "KD"}, {"kd-from-ada", "KD (ADA teacher)"},
                                                   {"otf-kd", "KD on the fly"}, {"otf-ada", "ADA on the fly"},
                                                   {"lbound-aug", "L-bound (heavy augmentation)"},
                                                   {"kd-noisy", "KD (noisy student)"}};
  return t;
}

// All scores, by mode, pair and method, keyed by fold/subject.
class Scores {
 public:
  explicit Scores(const std::vector<ResultRow>& rows) {
    for (const auto& r : rows) {
      by_[{r.mode, r.source + ">" + r.target, r.method}][std::to_string(r.fold) + "/" + r.subject] = r.dsc;
      modes_.insert(r.mode);
    }
  }
  const std::map<std::string, double>& get(const std::string& mode, const std::string& pair,
                                           const std::string& method) const {
    static const std::map<std::string, double> none;
    const auto it = by_.find({mode, pair, method});
    return it == by_.end() ? none : it->second;
  }
  Stats of(const std::string& mode, const std::string& pair, const std::string& method) const {
    std::vector<double> v;
    for (const auto& [k, x] : get(mode, pair, method)) v.push_back(x);
    return stats(v);
  }
  Stats of_fold(const std::string& mode, const std::string& pair, int fold, const std::string& method) const {
    const std::string prefix = std::to_string(fold) + "/";  // keys are fold/subject
    std::vector<double> v;
    for (const auto& [k, x] : get(mode, pair, method)) {
      if (k.rfind(prefix, 0) == 0) v.push_back(x);
    }
    return stats(v);
  }
  bool has_mode(const std::string& m) const { return modes_.count(m) > 0; }

 private:
  std::map<std::tuple<std::string, std::string, std::string>, std::map<std::string, double>> by_;
  std::set<std::string> modes_;
};

std::string cell_text(const Stats& s) {
  if (s.n == 0) return "–";
  return fixed(s.mean) + " ± " + fixed(s.sd);
}

std::string pair_title(const std::string& pair) {
  const auto k = pair.find('>');
  return pair.substr(0, k) + " → " + pair.substr(k + 1);
}

// Table 2 of one mode, plus the lines that compare it with the paper's pattern.
std::string table2(const Scores& sc, const std::string& mode, const std::vector<std::string>& pairs) {
  std::ostringstream md;
  md << "| source → target | L-bound | U-bound | ADA | KD | p (KD vs ADA) | KD (ADA teacher) |\n"
     << "|---|---|---|---|---|---|---|\n";
  std::vector<double> l, u, a, k, kfa;
  int kd_above_l = 0, kd_ge_ada = 0, kd_sig_better = 0, kd_sig_worse = 0, counted = 0;
  double gap_kd = 0, gap_ada = 0, gap_total = 0;
  int gaps = 0;
  std::string weakest;
  double weakest_kd = INFINITY;
  for (const auto& pair : pairs) {
    const auto L = sc.of(mode, pair, "lbound"), U = sc.of(mode, pair, "ubound"), A = sc.of(mode, pair, "ada"),
               K = sc.of(mode, pair, "kd"), KA = sc.of(mode, pair, "kd-from-ada");
    const auto t = paired_t_test(sc.get(mode, pair, "kd"), sc.get(mode, pair, "ada"));
    std::string kd = cell_text(K), ada = cell_text(A);
    if (t && t->p < 0.05) (t->mean_difference > 0 ? kd : ada) = "**" + (t->mean_difference > 0 ? kd : ada) + "**";
    md << "| " << pair_title(pair) << " | " << cell_text(L) << " | " << cell_text(U) << " | " << ada << " | " << kd
       << " | " << p_text(t) << " | " << cell_text(KA) << " |\n";
    l.push_back(L.mean), u.push_back(U.mean), a.push_back(A.mean), k.push_back(K.mean), kfa.push_back(KA.mean);
    if (K.n && L.n && A.n) {
      ++counted;
      kd_above_l += K.mean > L.mean;
      kd_ge_ada += K.mean >= A.mean;
      if (t && t->p < 0.05) (t->mean_difference > 0 ? kd_sig_better : kd_sig_worse) += 1;
      if (K.mean < weakest_kd) {
        weakest_kd = K.mean;
        weakest = pair;
      }
    }
    if (U.n && L.n && K.n && A.n && U.mean - L.mean > 0.02) {  // summed: one narrow gap must not dominate
      gap_kd += K.mean - L.mean;
      gap_ada += A.mean - L.mean;
      gap_total += U.mean - L.mean;
      ++gaps;
    }
  }
  md << "| **mean of pairs** | " << fixed(stats(l).mean) << " | " << fixed(stats(u).mean) << " | " << fixed(stats(a).mean)
     << " | " << fixed(stats(k).mean) << " | | " << fixed(stats(kfa).mean) << " |\n\n";
  md << "Mean Dice ± standard deviation over the target's test subjects of both folds. p: Student's paired "
        "t-test (two-sided) of KD against ADA on the same subjects; **bold** where p < 0.05, and the better "
        "method of the two in bold.\n\n";
  if (counted) {
    md << "- KD above L-bound on " << kd_above_l << " of " << counted << " pairs (paper: 6 of 6).\n"
       << "- KD at least as good as ADA on " << kd_ge_ada << " of " << counted << " pairs (paper: 5 of 6); "
       << "significantly better on " << kd_sig_better << ", significantly worse on " << kd_sig_worse << ".\n";
  }
  if (gaps) {
    md << "- Share of the L-bound → U-bound gap closed, summed over the " << gaps
       << " pairs where U-bound exceeds L-bound by more than 0.02: KD " << fixed(100 * gap_kd / gap_total, 0)
       << "%, ADA " << fixed(100 * gap_ada / gap_total, 0) << "% (paper: about half and about a quarter).\n";
  } else if (counted) {
    md << "- No pair has U-bound above L-bound by more than 0.02, so the share of the gap closed is undefined.\n";
  }
  if (!weakest.empty()) {
    const auto KA = sc.of(mode, weakest, "kd-from-ada");
    md << "- Weakest KD pair " << pair_title(weakest) << ": KD " << fixed(weakest_kd) << ", KD with the ADA model as "
       << "teacher " << fixed(KA.mean) << " (paper, its weakest pair: 0.65 → 0.69).\n";
  }
  return md.str();
}

// lbound-aug and kd-noisy beside the methods they extend; empty when the run has neither.
std::string beyond_the_paper(const Scores& sc, const std::string& mode, const std::vector<std::string>& pairs) {
  bool any = false;
  for (const auto& pair : pairs) any = any || sc.of(mode, pair, "lbound-aug").n || sc.of(mode, pair, "kd-noisy").n;
  if (!any) return {};
  std::ostringstream md;
  md << "| source → target | L-bound | L-bound (heavy augmentation) | p | KD | KD (noisy student) | p | U-bound |\n"
     << "|---|---|---|---|---|---|---|---|\n";
  std::vector<double> l, la, k, kn, u;
  for (const auto& pair : pairs) {
    const auto L = sc.of(mode, pair, "lbound"), LA = sc.of(mode, pair, "lbound-aug"), K = sc.of(mode, pair, "kd"),
               KN = sc.of(mode, pair, "kd-noisy"), U = sc.of(mode, pair, "ubound");
    const auto tl = paired_t_test(sc.get(mode, pair, "lbound-aug"), sc.get(mode, pair, "lbound"));
    const auto tk = paired_t_test(sc.get(mode, pair, "kd-noisy"), sc.get(mode, pair, "kd"));
    md << "| " << pair_title(pair) << " | " << cell_text(L) << " | " << cell_text(LA) << " | " << p_text(tl) << " | "
       << cell_text(K) << " | " << cell_text(KN) << " | " << p_text(tk) << " | " << cell_text(U) << " |\n";
    l.push_back(L.mean), la.push_back(LA.mean), k.push_back(K.mean), kn.push_back(KN.mean), u.push_back(U.mean);
  }
  md << "| **mean of pairs** | " << fixed(stats(l).mean) << " | " << fixed(stats(la).mean) << " | | "
     << fixed(stats(k).mean) << " | " << fixed(stats(kn).mean) << " | | " << fixed(stats(u).mean) << " |\n\n"
     << "L-bound (heavy augmentation): a teacher trained on the source alone with strong intensity and scanner "
        "augmentation (BigAug), no target data; KD (noisy student): the student learns the teacher's soft labels "
        "of clean slices from heavily augmented copies. p: paired t-test against L-bound and KD respectively.\n";
  return md.str();
}

std::string table3(const Scores& sc, const std::string& mode, const std::vector<std::string>& pairs) {
  std::ostringstream md;
  md << "| source → target | L-bound | ADA on the fly | KD on the fly | p (KD vs ADA) |\n|---|---|---|---|---|\n";
  std::vector<double> l, a, k;
  int kd_above_l = 0, kd_ge_ada = 0, counted = 0;
  for (const auto& pair : pairs) {
    const auto L = sc.of(mode, pair, "lbound"), A = sc.of(mode, pair, "otf-ada"), K = sc.of(mode, pair, "otf-kd");
    const auto t = paired_t_test(sc.get(mode, pair, "otf-kd"), sc.get(mode, pair, "otf-ada"));
    std::string kd = cell_text(K), ada = cell_text(A);
    if (t && t->p < 0.05) (t->mean_difference > 0 ? kd : ada) = "**" + (t->mean_difference > 0 ? kd : ada) + "**";
    md << "| " << pair_title(pair) << " | " << cell_text(L) << " | " << ada << " | " << kd << " | " << p_text(t) << " |\n";
    l.push_back(L.mean), a.push_back(A.mean), k.push_back(K.mean);
    if (K.n && L.n && A.n) {
      ++counted;
      kd_above_l += K.mean > L.mean;
      kd_ge_ada += K.mean >= A.mean;
    }
  }
  md << "| **mean of pairs** | " << fixed(stats(l).mean) << " | " << fixed(stats(a).mean) << " | " << fixed(stats(k).mean)
     << " | |\n\n";
  md << "Each test subject adapted to on its own (with the source's labelled or soft-labelled scans), the teacher "
        "fixed, and scored. Mean Dice ± standard deviation over subjects; p as in Table 2.\n\n";
  if (counted) {
    md << "- KD on the fly above L-bound on " << kd_above_l << " of " << counted << " pairs, at least as good as ADA "
       << "on the fly on " << kd_ge_ada << " of " << counted << ".\n";
  }
  return md.str();
}

// Federated minus centralized, per method: mean over pairs, and the largest per-pair difference.
std::string federated_vs_centralized(const Scores& sc, const std::vector<std::string>& pairs) {
  std::ostringstream md;
  md << "| method | federated | centralized | federated − centralized | largest per-pair difference |\n"
     << "|---|---|---|---|---|\n";
  for (const auto& method : experiment_methods()) {
    std::vector<double> f, c, d;
    double largest = 0;
    for (const auto& pair : pairs) {
      const auto F = sc.of("federated", pair, method), C = sc.of("centralized", pair, method);
      if (!F.n || !C.n) continue;
      f.push_back(F.mean);
      c.push_back(C.mean);
      d.push_back(F.mean - C.mean);
      if (std::fabs(F.mean - C.mean) > std::fabs(largest)) largest = F.mean - C.mean;
    }
    if (d.empty()) continue;
    md << "| " << method_titles().at(method) << " | " << fixed(stats(f).mean) << " | " << fixed(stats(c).mean) << " | "
       << (stats(d).mean >= 0 ? "+" : "") << fixed(stats(d).mean) << " | " << (largest >= 0 ? "+" : "")
       << fixed(largest) << " |\n";
  }
  md << "\nMeans of the per-pair mean Dice. Both modes adapt the same teacher (one per source clinic, trained "
        "at that clinic alone), so the differences are the adaptations': the federated rounds, the sites' own "
        "random streams and sample-share rounding of the steps.\n";
  return md.str();
}

// The verdict: the paper's findings, each computed from this run beside the paper's figure.
std::string verdict(const Scores& sc, const std::vector<std::string>& modes, const std::vector<std::string>& pairs) {
  std::ostringstream md;
  md << "| finding | paper | " ;
  for (const auto& m : modes) md << m << " | ";
  md << "\n|---|---|";
  for (std::size_t i = 0; i < modes.size(); ++i) md << "---|";
  md << "\n";
  struct Row {
    std::string finding, paper;
    std::function<std::string(const std::string&)> of;
  };
  // Counts over the pairs with both methods scored; "n of m (k significant)" with Student's paired
  // t-test at 5% on the same subjects, as the paper's.
  const auto versus = [&](const std::string& mode, const std::string& a, const std::string& b) {
    int above = 0, significant = 0, counted = 0;
    for (const auto& pair : pairs) {
      const auto A = sc.of(mode, pair, a), B = sc.of(mode, pair, b);
      if (!A.n || !B.n) continue;
      ++counted;
      above += A.mean > B.mean;
      const auto t = paired_t_test(sc.get(mode, pair, a), sc.get(mode, pair, b));
      significant += t && t->p < 0.05 && t->mean_difference > 0;
    }
    if (!counted) return std::string("–");
    return std::to_string(above) + " of " + std::to_string(counted) + " (" + std::to_string(significant) + " significant)";
  };
  const auto gap = [&](const std::string& mode, const std::string& method) {
    double closed = 0, total = 0;
    for (const auto& pair : pairs) {
      const auto L = sc.of(mode, pair, "lbound"), U = sc.of(mode, pair, "ubound"), M = sc.of(mode, pair, method);
      if (!L.n || !U.n || !M.n || U.mean - L.mean <= 0.02) continue;
      closed += M.mean - L.mean;
      total += U.mean - L.mean;
    }
    return total > 0 ? fixed(100 * closed / total, 0) + "%" : std::string("–");
  };
  const auto weakest = [&](const std::string& mode) {
    std::string pair;
    double low = INFINITY;
    for (const auto& p : pairs) {
      const auto K = sc.of(mode, p, "kd");
      if (K.n && K.mean < low) {
        low = K.mean;
        pair = p;
      }
    }
    if (pair.empty()) return std::string("–");
    const auto KA = sc.of(mode, pair, "kd-from-ada");
    return pair_title(pair) + ": " + fixed(low) + " → " + (KA.n ? fixed(KA.mean) : std::string("–"));
  };
  const auto mean_of = [&](const std::string& mode, const std::string& method) {
    std::vector<double> v;
    for (const auto& p : pairs) {
      const auto M = sc.of(mode, p, method);
      if (M.n) v.push_back(M.mean);
    }
    return v.empty() ? std::string("–") : fixed(stats(v).mean);
  };
  const std::vector<Row> rows = {
      {"KD above L-bound (pairs)", "6 of 6", [&](const std::string& m) { return versus(m, "kd", "lbound"); }},
      {"KD above ADA (pairs)", "5 of 6", [&](const std::string& m) { return versus(m, "kd", "ada"); }},
      {"ADA above KD (pairs)", "1 of 6", [&](const std::string& m) { return versus(m, "ada", "kd"); }},
      {"share of the L-bound → U-bound gap closed by KD", "about half", [&](const std::string& m) { return gap(m, "kd"); }},
      {"share of the gap closed by ADA", "about a quarter", [&](const std::string& m) { return gap(m, "ada"); }},
      {"share of the gap closed by KD (ADA teacher)", "–", [&](const std::string& m) { return gap(m, "kd-from-ada"); }},
      {"KD's weakest pair: KD → KD (ADA teacher)", "0.65 → 0.69", [&](const std::string& m) { return weakest(m); }},
      {"mean Dice L-bound / U-bound", "–",
       [&](const std::string& m) { return mean_of(m, "lbound") + " / " + mean_of(m, "ubound"); }},
      {"mean Dice KD / ADA / KD (ADA teacher)", "–",
       [&](const std::string& m) { return mean_of(m, "kd") + " / " + mean_of(m, "ada") + " / " + mean_of(m, "kd-from-ada"); }},
  };
  for (const auto& r : rows) {
    md << "| " << r.finding << " | " << r.paper << " | ";
    for (const auto& m : modes) md << r.of(m) << " | ";
    md << "\n";
  }
  md << "\nSignificant: Student's paired t-test on the target's test subjects of both folds, p < 0.05, in the "
        "direction of the row. The share of the gap is summed over the pairs where U-bound exceeds L-bound by more "
        "than 0.02.";
  if (modes.size() == 2) {
    std::vector<double> d;
    for (const auto& pair : pairs) {
      const auto F = sc.of("federated", pair, "kd"), C = sc.of("centralized", pair, "kd");
      if (F.n && C.n) d.push_back(F.mean - C.mean);
    }
    if (!d.empty()) {
      md << " Federated KD against centralized KD, mean over pairs: " << (stats(d).mean >= 0 ? "+" : "")
         << fixed(stats(d).mean) << " Dice (the table below has every method).";
    }
  }
  md << "\n";
  return md.str();
}

// The teachers: each source's draws and whether the kept one learned its own source (its mean
// Dice on its training scans, summary.json of the teacher cell). Fills `failed` with the sources
// whose teacher did not.
std::string teachers_table(const fs::path& out, const std::vector<std::string>& clinics, int allowed,
                           std::set<std::string>& failed) {
  const auto number = [](const json& j, const char* key) {
    return j.is_object() && j.contains(key) && j[key].is_number() ? j[key].get<double>() : NAN;
  };
  std::ostringstream md;
  bool any = false;
  md << "| source | draws (mean Dice on its own training scans) | kept draw | its seed | its last loss | learned its "
        "source |\n|---|---|---|---|---|---|\n";
  for (const auto& c : clinics) {
    auto text = files::read_all(out / "centralized" / "teachers" / c / "summary.json");
    if (!text) continue;
    const auto j = json::parse(*text, nullptr, false);
    if (!j.is_object() || !j.contains("draws") || !j["draws"].is_array() || j["draws"].empty()) continue;  // before the check
    any = true;
    const auto& draws = j["draws"];
    const bool learned = j.value("learned", true);
    if (!learned) failed.insert(c);
    allowed = std::max(allowed, static_cast<int>(number(j, "draws_allowed") >= 1 ? number(j, "draws_allowed") : 0));
    const double kept_number = number(j, "kept_draw");
    const std::size_t kept = kept_number >= 1 && kept_number <= static_cast<double>(draws.size())
                                 ? static_cast<std::size_t>(kept_number) - 1 : draws.size() - 1;
    std::string tried;
    for (const auto& d : draws) tried += (tried.empty() ? "" : ", ") + fixed(number(d, "source_dice"));
    md << "| " << c << " | " << draws.size() << " (" << tried << ") | " << kept + 1 << " | "
       << static_cast<std::uint64_t>(number(draws[kept], "seed")) << " | " << fixed(number(draws[kept], "final_loss"))
       << " | " << (learned ? "yes" : "**no**") << " |\n";
  }
  if (!any) return {};
  md << "\nA teacher whose mean Dice on its own training scans is below " << fixed(kTeacherLearnedDice, 2)
     << " has learned nothing of its source. ";
  if (allowed > 1) {
    md << "It is trained again from another random draw, up to " << allowed << " draws in all, and the best is kept.";
  } else {
    md << "This run gave each teacher one draw (`teacher_draws` 1).";
  }
  if (!failed.empty()) {
    std::string names;
    for (const auto& f : failed) names += (names.empty() ? "" : ", ") + f;
    md << " No draw learned its source for: " << names
       << ". Every method of the pairs from such a source starts from a teacher that segments nothing, so those "
          "pairs are shown in the tables but left out of the verdict.";
  }
  md << "\n";
  return md.str();
}

// ---- plots ---------------------------------------------------------------------------------

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

Status write_text(const fs::path& path, const std::string& text) { return files::write_atomically(path, text); }

// Dice per pair and method (bars with standard deviations), one picture per mode.
Status dice_plot(const Scores& sc, const std::string& mode, const std::vector<std::string>& pairs,
                 const fs::path& dir, std::ostringstream& script) {
  // Only the methods this run scored: a column of no values fails gnuplot's histogram.
  std::vector<std::string> methods;
  for (const std::string m : {"lbound", "ubound", "ada", "kd", "kd-from-ada", "otf-ada", "otf-kd"}) {
    if (std::any_of(pairs.begin(), pairs.end(), [&](const auto& p) { return sc.of(mode, p, m).n > 0; })) methods.push_back(m);
  }
  if (methods.empty()) return Status::success();
  std::ostringstream dat;
  for (const auto& pair : pairs) {
    std::string label = pair_title(pair);
    label.replace(label.find("→"), std::string("→").size(), ">");
    dat << "\"" << label << "\"";
    for (const auto& m : methods) {
      const auto s = sc.of(mode, pair, m);
      dat << " " << (s.n ? fixed(s.mean, 4) : "NaN") << " " << (s.n ? fixed(s.sd, 4) : "NaN");
    }
    dat << "\n";
  }
  const auto data = dir / ("dice-" + mode + ".dat");
  if (auto st = write_text(data, dat.str()); !st) return st;
  script << "set output " << quoted(dir / ("dice-" + mode + ".png")) << "\n"
         << "set title 'Dice per pair and method (" << mode << ", mean and standard deviation over test subjects)'\n"
         << "set style data histogram\nset style histogram errorbars gap 2 lw 1\nset style fill solid 0.85 border -1\n"
         << "set yrange [0:1]\nset ylabel 'Dice'\nset xtics rotate by -20 nomirror\nset key outside right top\n"
         << "set grid ytics\nplot ";
  for (std::size_t i = 0; i < methods.size(); ++i) {
    script << (i ? ", '' " : quoted(data) + " ") << "using " << 2 + 2 * i << ":" << 3 + 2 * i
           << (i ? "" : ":xtic(1)") << " title '" << method_titles().at(methods[i]) << "'";
  }
  script << "\nset style data lines\nset xtics norotate\nset autoscale\nunset grid\n";
  return Status::success();
}

// Per (pair, fold, method): federated mean Dice against centralized.
Status scatter_plot(const Scores& sc, const std::vector<std::string>& pairs, const std::vector<int>& folds,
                    const fs::path& dir, std::ostringstream& script) {
  std::ostringstream dat;
  std::vector<std::string> present;
  for (const auto& m : experiment_methods()) {
    std::ostringstream block;
    for (const auto& pair : pairs) {
      for (int fold : folds) {
        const auto F = sc.of_fold("federated", pair, fold, m), C = sc.of_fold("centralized", pair, fold, m);
        if (F.n && C.n) block << fixed(C.mean, 4) << " " << fixed(F.mean, 4) << "\n";
      }
    }
    if (block.str().empty()) continue;
    dat << "# " << m << "\n" << block.str() << "\n\n";
    present.push_back(m);
  }
  if (present.empty()) return Status::success();
  const auto data = dir / "federated-vs-centralized.dat";
  if (auto st = write_text(data, dat.str()); !st) return st;
  script << "set output " << quoted(dir / "federated-vs-centralized.png") << "\n"
         << "set title 'Federated against centralized: mean Dice per pair, fold and method'\n"
         << "set xlabel 'centralized Dice'\nset ylabel 'federated Dice'\nset xrange [0:1]\nset yrange [0:1]\n"
         << "set key outside right top\nset size ratio -1\nplot x title 'equal' with lines lc rgb 'gray'";
  for (std::size_t i = 0; i < present.size(); ++i) {
    script << ", " << quoted(data) << " index " << i << " using 1:2 with points pt 7 ps 1.2 title '"
           << method_titles().at(present[i]) << "'";
  }
  script << "\nset size noratio\nunset xlabel\nset autoscale\n";
  return Status::success();
}

// A multiplot panel of a method the run did not train (gnuplot refuses `plot NaN` when no panel
// has a point: "all points y value undefined").
constexpr const char* kEmptyPanel =
    "set label 99 'not in this run' at graph 0.5, graph 0.5 center\nplot [0:1][0:1] -1 notitle\nunset label 99\n";

// Loss per epoch (centralized, dashed) and per round (federated, solid), fold 0, one panel per method.
Status learning_curves(const fs::path& out, const std::vector<std::string>& pairs, const std::vector<std::string>& clinics,
                       const fs::path& dir, std::ostringstream& script) {
  struct Series {
    std::string title;
    fs::path file;
    bool federated;
  };
  std::map<std::string, std::vector<Series>> panels;
  const auto add_centralized = [&](const std::string& panel, const std::string& title, const fs::path& csv,
                                   const std::string& stage) {
    auto text = files::read_all(csv);
    if (!text) return;
    std::istringstream in(*text);
    std::string line, dat;
    std::getline(in, line);
    while (std::getline(in, line)) {
      const auto f = split(line, ',');
      if (f.size() >= 3 && f[0] == stage) dat += f[1] + " " + f[2] + "\n";
    }
    if (dat.empty()) return;
    const auto file = dir / "curves" / ("centralized-" + panel + "-" + title + ".dat");
    if (write_text(file, dat)) panels[panel].push_back({title + " (centralized)", file, false});
  };
  const auto add_federated = [&](const std::string& panel, const std::string& title, const fs::path& jsonl) {
    std::ifstream in(jsonl);
    std::string line, dat;
    while (std::getline(in, line)) {
      auto j = json::parse(line, nullptr, false);
      if (!j.is_object() || !j.contains("sites")) continue;
      double loss = 0, samples = 0;
      for (const auto& s : j["sites"]) {
        loss += s.value("loss", 0.0) * s.value("samples", 0.0);
        samples += s.value("samples", 0.0);
      }
      if (samples > 0) dat += std::to_string(j.value("round", 0)) + " " + std::to_string(loss / samples) + "\n";
    }
    if (dat.empty()) return;
    const auto file = dir / "curves" / ("federated-" + panel + "-" + title + ".dat");
    if (write_text(file, dat)) panels[panel].push_back({title + " (federated)", file, true});
  };
  for (const auto& c : clinics) {
    add_centralized("teacher", c, out / "centralized" / "teachers" / c / "curve.csv", "teacher");
  }
  for (const auto& pair : pairs) {
    const auto k = pair.find('>');
    const std::string dash = pair.substr(0, k) + "-" + pair.substr(k + 1);
    for (const std::string m : {"ubound", "kd", "ada"}) {
      add_centralized(m, dash, out / "centralized" / dash / "fold0" / m / "curve.csv", m);
      add_federated(m, dash, out / "federated" / "jobs" / (m + "-" + dash + "-f0") / "rounds.jsonl");
    }
  }
  if (panels.empty()) return Status::success();
  script << "set output " << quoted(dir / "learning-curves.png") << "\n"
         << "set multiplot layout 2,2 title 'Training loss, fold 0: per epoch (centralized, open points) and per round "
            "(federated, filled points); teachers: one per source, shared'\n"
         << "set key outside right top font ',7' samplen 1 spacing 0.8\nset xlabel 'epoch / round'\nset ylabel 'loss'\n";
  for (const std::string panel : {"teacher", "ubound", "kd", "ada"}) {
    const auto it = panels.find(panel);
    script << "set title '" << (panel == "teacher" ? std::string("teachers") : method_titles().at(panel)) << "'\n";
    if (it == panels.end()) {
      script << kEmptyPanel;
      continue;
    }
    script << "plot ";
    for (std::size_t i = 0; i < it->second.size(); ++i) {
      const auto& s = it->second[i];
      script << (i ? ", " : "") << quoted(s.file) << " using 1:2 with linespoints lw 1.2 pt " << (s.federated ? 7 : 6)
             << " ps 0.8 lc " << 1 + static_cast<int>(i / 2) << " title '" << s.title << "'";
    }
    script << "\n";
  }
  script << "unset multiplot\nunset xlabel\nset key default\n";
  return Status::success();
}

// Runs gnuplot on `script`; a missing gnuplot is reported, not fatal.
Status run_gnuplot(const fs::path& dir, const std::string& script) {
  const auto file = dir / "plots.gnuplot";
  if (auto st = write_text(file, script); !st) return st;
  const std::string command = "gnuplot " + quoted(file) + " > " + quoted(dir / "gnuplot.log") + " 2>&1";
  const int rc = std::system(command.c_str());
  if (rc != 0) {
    return make_error("gnuplot failed (status " + std::to_string(rc) + "; is gnuplot-nox installed? "
                      "scripts/install-deps.sh installs it); see " + (dir / "gnuplot.log").string());
  }
  return Status::success();
}

// Dice on the test half against epochs (centralized, curve.csv's test_dsc) and rounds (federated,
// rounds.jsonl's test_dsc), fold 0, one panel per method: whether a method had converged when scored.
Status test_curves(const fs::path& out, const std::vector<std::string>& pairs, const fs::path& dir,
                   std::ostringstream& script) {
  std::map<std::string, std::vector<std::pair<std::string, fs::path>>> panels;  // method -> (title, data)
  std::map<std::string, std::vector<bool>> federated;
  for (const auto& pair : pairs) {
    const auto k = pair.find('>');
    const std::string dash = pair.substr(0, k) + "-" + pair.substr(k + 1), target = pair.substr(k + 1);
    for (const std::string m : {"ubound", "kd", "ada", "kd-from-ada"}) {
      std::string dat;
      if (auto text = files::read_all(out / "centralized" / dash / "fold0" / m / "curve.csv")) {
        std::istringstream in(*text);
        std::string line;
        std::getline(in, line);
        const std::string stage = m == "kd-from-ada" ? "kd" : m;
        while (std::getline(in, line)) {
          const auto f = split(line, ',');
          if (f.size() >= 6 && f[0] == stage && !f[5].empty()) dat += f[1] + " " + f[5] + "\n";
        }
      }
      if (!dat.empty()) {
        const auto file = dir / "curves" / ("test-centralized-" + m + "-" + dash + ".dat");
        if (write_text(file, dat)) {
          panels[m].emplace_back(dash + " (centralized)", file);
          federated[m].push_back(false);
        }
      }
      dat.clear();
      std::ifstream in(out / "federated" / "jobs" / (m + "-" + dash + "-f0") / "rounds.jsonl");
      for (std::string line; std::getline(in, line);) {
        const auto j = json::parse(line, nullptr, false);
        if (j.is_object() && j.contains("test_dsc") && j["test_dsc"].contains(target)) {
          dat += std::to_string(j.value("round", 0)) + " " + std::to_string(j["test_dsc"][target].get<double>()) + "\n";
        }
      }
      if (!dat.empty()) {
        const auto file = dir / "curves" / ("test-federated-" + m + "-" + dash + ".dat");
        if (write_text(file, dat)) {
          panels[m].emplace_back(dash + " (federated)", file);
          federated[m].push_back(true);
        }
      }
    }
  }
  if (panels.empty()) return Status::success();
  script << "set output " << quoted(dir / "test-curves.png") << "\n"
         << "set multiplot layout 2,2 title 'Dice on the test half, fold 0: per epoch (centralized, open points) and per "
            "round (federated, filled points)'\n"
         << "set key outside right top font ',7' samplen 1 spacing 0.8\nset xlabel 'epoch / round'\nset ylabel 'Dice'\n"
         << "set yrange [0:*]\n";
  for (const std::string panel : {"ubound", "kd", "ada", "kd-from-ada"}) {
    script << "set title '" << method_titles().at(panel) << "'\n";
    const auto it = panels.find(panel);
    if (it == panels.end()) {
      script << kEmptyPanel;
      continue;
    }
    script << "plot ";
    for (std::size_t i = 0; i < it->second.size(); ++i) {
      script << (i ? ", " : "") << quoted(it->second[i].second) << " using 1:2 with linespoints lw 1.2 pt "
             << (federated[panel][i] ? 7 : 6) << " ps 0.8 lc " << 1 + static_cast<int>(i / 2) << " title '"
             << it->second[i].first << "'";
    }
    script << "\n";
  }
  script << "unset multiplot\nunset xlabel\nset autoscale\nset key default\n";
  return Status::success();
}

// FLAIR, ground truth and each method's segmentation of two test subjects, like Fig. 4 of the paper.
Result<std::vector<std::string>> overlays(const fs::path& out, const fs::path& data, const std::string& device,
                                          const std::vector<std::string>& clinics, const fs::path& dir) {
  std::vector<std::string> written;
  if (clinics.size() < 2) return written;
  const std::string source = clinics[0], target = clinics[1], dash = source + "-" + target;
  auto subjects = imaging::find_clinic_subjects(data, target);
  if (!subjects) return subjects.error();
  const auto test = imaging::split_fold(*subjects, 0).test;
  const std::vector<std::string> methods{"lbound", "ubound", "ada", "kd", "kd-from-ada"};
  // The federated models when there are, else the centralized ones.
  const auto model_of = [&](const std::string& method) -> fs::path {
    const auto fed = out / "federated" / "jobs" / (method + "-" + dash + "-f0") / "model.pt";
    if (method != "lbound" && fs::exists(fed)) return fed;
    const auto cen = method == "lbound" ? out / "centralized" / "teachers" / source / "teacher.pt"
                                        : out / "centralized" / dash / "fold0" / method / "model.pt";
    return fs::exists(cen) ? cen : fs::path();
  };
  const int panel = 200;
  const std::size_t gap = 4;
  for (std::size_t k = 0; k < test.size() && k < 2; ++k) {
    const auto& s = test[k];
    auto subject = imaging::read_subject(s.flair, s.t1, s.labels);
    if (!subject || !subject->labels) continue;
    const auto& truth = *subject->labels;
    const auto z = simulation::slice_with_most_wmh(truth);
    const auto range = simulation::intensity_window(subject->flair);
    imaging::RgbPicture pic((2 + methods.size()) * (panel + gap), panel);
    simulation::draw_panel(pic, 0, 0, panel, 240, subject->flair, range, z, nullptr);
    simulation::draw_panel(pic, panel + gap, 0, panel, 240, subject->flair, range, z, nullptr, [&](long x, long y) {
      return truth.at(x, y, z) == imaging::kWmh ? std::optional(std::array<std::uint8_t, 3>{255, 200, 0}) : std::nullopt;
    });
    for (std::size_t m = 0; m < methods.size(); ++m) {
      const auto model = model_of(methods[m]);
      if (model.empty()) continue;
      const auto seg_file = dir / "segmentations" / (methods[m] + "-" + s.subject + ".nii.gz");
      if (!fs::exists(seg_file)) {
        std::error_code ec;
        fs::create_directories(seg_file.parent_path(), ec);
        if (auto st = models::segment_scan(model, s.flair, s.t1, seg_file, device); !st) return st.error();
      }
      auto seg = imaging::read_label_map(seg_file);
      if (!seg) return seg.error();
      simulation::draw_panel(pic, (2 + m) * (panel + gap), 0, panel, 240, subject->flair, range, z, nullptr, [&](long x, long y) {
        const bool t = truth.at(x, y, z) == imaging::kWmh, p = seg->at(x, y, z) == imaging::kWmh;
        using C = std::array<std::uint8_t, 3>;
        if (t && p) return std::optional(C{40, 220, 40});
        if (p && truth.at(x, y, z) == 0) return std::optional(C{240, 40, 40});
        if (t) return std::optional(C{60, 120, 255});
        return std::optional<C>();
      });
    }
    const std::string name = "overlay-" + target + "-" + s.subject + ".png";
    if (auto st = imaging::write_png(dir / name, pic); !st) return st.error();
    written.push_back(name);
  }
  return written;
}

std::string markdown_to_html(const std::string& md, const std::string& title) {
  cmark_gfm_core_extensions_ensure_registered();
  cmark_parser* parser = cmark_parser_new(CMARK_OPT_DEFAULT);
  if (auto* table = cmark_find_syntax_extension("table")) cmark_parser_attach_syntax_extension(parser, table);
  cmark_parser_feed(parser, md.data(), md.size());
  cmark_node* doc = cmark_parser_finish(parser);
  char* body = cmark_render_html(doc, CMARK_OPT_DEFAULT, cmark_parser_get_syntax_extensions(parser));
  std::string html =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + title +
      "</title>\n<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
      "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:4px 8px;text-align:right}"
      "th:first-child,td:first-child{text-align:left}th{background:#eee}img{max-width:100%}"
      "code{background:#f4f4f4;padding:1px 3px}pre{background:#f4f4f4;padding:8px;overflow-x:auto}</style>"
      "</head><body>\n" + std::string(body) + "</body></html>\n";
  std::free(body);
  cmark_node_free(doc);
  cmark_parser_free(parser);
  return html;
}

std::string timings_table(const fs::path& csv, double& total) {
  auto text = files::read_all(csv);
  total = 0;
  if (!text) return "(no timings.csv)\n";
  std::map<std::pair<std::string, std::string>, std::pair<int, double>> sum;
  std::istringstream in(*text);
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    const auto f = split(line, ',');
    if (f.size() < 7) continue;
    auto& s = sum[{f[0], f[4]}];
    s.first += 1;
    s.second += number(f[5]);
    total += number(f[5]);
  }
  std::ostringstream md;
  md << "| mode | method | cells | seconds | seconds per cell |\n|---|---|---|---|---|\n";
  for (const auto& [key, s] : sum) {
    md << "| " << key.first << " | " << key.second << " | " << s.first << " | " << fixed(s.second, 0) << " | "
       << fixed(s.second / std::max(1, s.first), 1) << " |\n";
  }
  return md.str();
}

}  // namespace

std::optional<PairedTTest> paired_t_test(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> d;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (std::isfinite(a[i]) && std::isfinite(b[i])) d.push_back(a[i] - b[i]);
  }
  const auto s = stats(d);
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

Status write_experiment_report(const fs::path& out, const fs::path& data, const std::string& device) {
  auto config_text = files::read_all(out / "experiment.json");
  if (!config_text) return config_text.error();
  const auto config = json::parse(*config_text, nullptr, false);
  if (config.is_discarded()) return make_error((out / "experiment.json").string() + ": not JSON");
  auto csv = files::read_all(out / "results.csv");
  if (!csv) return csv.error();
  auto rows = protocol::parse_results_csv(*csv);
  if (!rows) return make_error((out / "results.csv").string() + ": " + rows.error().message);
  const Scores sc(*rows);
  std::vector<std::string> clinics = config.value("clinics", std::vector<std::string>{});
  std::vector<std::string> pairs;
  for (const auto& s : clinics) {
    for (const auto& t : clinics) {
      if (s != t) pairs.push_back(s + ">" + t);
    }
  }
  std::vector<std::string> modes;
  for (const std::string m : {"federated", "centralized"}) {
    if (sc.has_mode(m)) modes.push_back(m);
  }

  std::ostringstream t2, t3;
  t2 << "# Table 2: domain adaptation across clinics (Dice)\n\n";
  t3 << "# Table 3: adaptation on the fly (Dice)\n\n";
  for (const auto& m : modes) {
    t2 << "## " << (m == "federated" ? "Federated" : "Centralized (reference)") << "\n\n" << table2(sc, m, pairs) << "\n";
    if (const auto beyond = beyond_the_paper(sc, m, pairs); !beyond.empty()) {
      t2 << "### Beyond the paper (" << m << ")\n\n" << beyond << "\n";
    }
    t3 << "## " << (m == "federated" ? "Federated" : "Centralized (reference)") << "\n\n" << table3(sc, m, pairs) << "\n";
  }
  if (modes.size() == 2) t2 << "## Federated against centralized\n\n" << federated_vs_centralized(sc, pairs) << "\n";
  if (auto st = files::write_atomically(out / "table2.md", t2.str()); !st) return st;
  if (auto st = files::write_atomically(out / "table3.md", t3.str()); !st) return st;

  const auto plots = out / "plots";
  std::error_code ec;
  fs::create_directories(plots / "curves", ec);
  std::ostringstream script;
  script << "set terminal png size 1200,520 font ',10'\nset encoding utf8\n";
  for (const auto& m : modes) {
    if (auto st = dice_plot(sc, m, pairs, plots, script); !st) return st;
  }
  if (modes.size() == 2) {
    script << "set terminal png size 760,620 font ',10'\n";
    if (auto st = scatter_plot(sc, pairs, {0, 1}, plots, script); !st) return st;
  }
  script << "set terminal png size 1200,860 font ',10'\n";
  if (auto st = learning_curves(out, pairs, clinics, plots, script); !st) return st;
  if (auto st = test_curves(out, pairs, plots, script); !st) return st;
  std::string plot_problem;
  if (auto st = run_gnuplot(plots, script.str()); !st) {
    plot_problem = st.error().message;
    log::get("experiment")->warn("{}", plot_problem);
  }
  std::vector<std::string> overlay_files;
  if (auto o = overlays(out, data, device, clinics, plots)) {
    overlay_files = *o;
  } else {
    log::get("experiment")->warn("overlays: {}", o.error().message);
    plot_problem += (plot_problem.empty() ? "" : "; ") + std::string("overlays: ") + o.error().message;
  }

  double seconds = 0;
  const auto timings = timings_table(out / "timings.csv", seconds);
  std::ostringstream md;
  md << "# fedda experiment report\n\n"
     << "The seed paper's experiment (Orbes-Arteaga et al., 2019: knowledge distillation for semi-supervised "
        "domain adaptation) on the clinics in `" << config.value("data", std::string()) << "`, every cell run "
     << (modes.size() == 2 ? "federated (a local consortium: coordinator and one agent per clinic as separate "
                              "processes, over CurveZMQ on loopback) and centralized (the reference)"
                           : (modes.empty() ? "(no results yet)" : modes[0]))
     << ". Profile `" << config.value("profile", std::string()) << "`, seed " << config.value("seed", 0)
     << ", device `" << config.value("device", std::string()) << "`; cells took " << fixed(seconds / 60, 1)
     << " minutes in all (sum of cell times).\n\n";
  md << "Methods: **L-bound** the source teacher; **U-bound** the teacher fine-tuned on the source and the "
        "labelled adaptation half of the target; **ADA** adversarial adaptation from the teacher with the "
        "unlabelled adaptation half; **KD** a student distilled (T = " << config.value("budget", json::object()).value("temperature", 2.0)
     << ") from the teacher's soft labels on the source and the unlabelled adaptation half; **KD (ADA teacher)** "
        "the same with the ADA model as teacher; **on the fly**: each test subject adapted to on its own. All "
        "adaptations start from the teacher and train for the same number of steps. Each fold adapts on one half "
        "of the target's subjects and tests on the other.\n\n";
  std::set<std::string> failed_teachers;
  const auto teachers = teachers_table(
      out, clinics, config.value("budget", json::object()).value("teacher_draws", 1), failed_teachers);
  if (!teachers.empty()) md << "## Teachers\n\n" << teachers << "\n";
  std::vector<std::string> verdict_pairs;
  for (const auto& p : pairs) {
    if (!failed_teachers.count(p.substr(0, p.find('>')))) verdict_pairs.push_back(p);
  }
  if (!modes.empty()) {
    md << "## Verdict\n\n";
    if (verdict_pairs.empty()) {
      md << "None: no teacher learned its source (\"Teachers\" above), so no pair can say anything about the "
            "adaptations.\n\n";
    } else {
      if (verdict_pairs.size() < pairs.size()) {
        md << "Over the " << verdict_pairs.size() << " of " << pairs.size()
           << " pairs whose teacher learned its source (\"Teachers\" above).\n\n";
      }
      md << verdict(sc, modes, verdict_pairs) << "\n";
    }
  }
  for (const auto& m : modes) {
    md << "## Table 2, " << m << "\n\n" << table2(sc, m, pairs) << "\n";
  }
  for (const auto& m : modes) {
    md << "## Table 3 (on the fly), " << m << "\n\n" << table3(sc, m, pairs) << "\n";
  }
  if (modes.size() == 2) md << "## Federated against centralized\n\n" << federated_vs_centralized(sc, pairs) << "\n";
  md << "## Plots\n\n";
  for (const auto& m : modes) {
    if (fs::exists(plots / ("dice-" + m + ".png"))) md << "![Dice per pair, " << m << "](plots/dice-" << m << ".png)\n\n";
  }
  if (fs::exists(plots / "federated-vs-centralized.png")) {
    md << "![federated against centralized](plots/federated-vs-centralized.png)\n\n";
  }
  if (fs::exists(plots / "learning-curves.png")) md << "![learning curves](plots/learning-curves.png)\n\n";
  if (fs::exists(plots / "test-curves.png")) md << "![test Dice curves](plots/test-curves.png)\n\n";
  if (!overlay_files.empty()) {
    md << "Segmentations of two test subjects of " << clinics[1] << " (fold 0, source " << clinics[0]
       << "), on the axial slice with the most WMH. Columns: FLAIR, ground truth (yellow), then L-bound, U-bound, "
          "ADA, KD, KD (ADA teacher), federated models where the grid ran federated: green true positive, red false "
          "positive, blue missed lesion.\n\n";
    for (const auto& f : overlay_files) md << "![" << f << "](plots/" << f << ")\n\n";
  }
  if (!plot_problem.empty()) md << "Plots incomplete: " << plot_problem << "\n\n";
  md << "## Configuration\n\n```json\n" << config.dump(2) << "\n```\n\n"
     << "## Timings\n\n" << timings << "\n";
  if (auto failures = files::read_all(out / "failures.json")) {
    const auto f = json::parse(*failures, nullptr, false);
    if (f.is_object() && !f.empty()) {
      md << "## Failed cells\n\n";
      for (const auto& [cell, why] : f.items()) md << "- " << cell << ": " << why.get<std::string>() << "\n";
      md << "\n";
    }
  }
  md << "## Files\n\n`results.csv` (per subject: Dice, H95, AVD, lesion recall, lesion F1), `timings.csv`, "
        "`table2.md`, `table3.md`, `plots/`, `centralized/` (models and learning curves per cell), `federated/` "
        "(the consortium's jobs, logs and kits). Rerunning the same command skips finished cells and rewrites "
        "this report.\n";
  if (auto st = files::write_atomically(out / "report.md", md.str()); !st) return st;
  return files::write_atomically(out / "report.html", markdown_to_html(md.str(), "fedda experiment report"));
}

}  // namespace fedda::experiment
