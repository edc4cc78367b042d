// The report's tables, in Markdown: Table 2 and 3 of the paper per mode, the rows beyond the
// paper, federated against centralized, the verdict, the teachers' draws and the timings.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fedda/common/files.h"
#include "report.h"
#include "run_layout.h"

namespace fedda::experiment::report {
namespace fs = std::filesystem;
using nlohmann::json;

const std::map<std::string, std::string>& method_titles() {
  static const std::map<std::string, std::string> t{{"lbound", "L-bound"}, {"ubound", "U-bound"}, {"ada", "ADA"},
                                                   {"kd", "KD"}, {"kd-from-ada", "KD (ADA teacher)"},
                                                   {"otf-kd", "KD on the fly"}, {"otf-ada", "ADA on the fly"},
                                                   {"lbound-aug", "L-bound (heavy augmentation)"},
                                                   {"kd-noisy", "KD (noisy student)"}};
  return t;
}

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
    auto text = files::read_all(layout::teacher_dir(out, c) / "summary.json");
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

}  // namespace fedda::experiment::report
