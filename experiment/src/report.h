#pragma once
// The parts of the experiment's report (write_experiment_report, experiment.h), private to the
// experiment library: its statistics (report_statistics.cpp: means, standard deviations and
// the one paired t-test), its tables (report_tables.cpp, Markdown), its plots
// (report_plots.cpp: gnuplot scripts and the overlays of segmentations); the page itself is
// experiment_report.cpp.

#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/experiment/experiment.h"
#include "results_csv.h"

namespace fedda::experiment::report {

// ---- statistics ------------------------------------------------------------------------------

std::vector<std::string> split(const std::string& line, char sep);
double number(const std::string& s);  // NaN for "" or what is not a number

struct Stats {
  int n = 0;
  double mean = NAN, sd = NAN;
};
Stats stats(const std::vector<double>& v);  // over the finite values
// The t-test (experiment::paired_t_test) on the subjects both methods scored (keys of both).
std::optional<PairedTTest> paired_t_test(const std::map<std::string, double>& a, const std::map<std::string, double>& b);
std::string fixed(double v, int digits = 3);  // "–" for NaN
std::string p_text(const std::optional<PairedTTest>& t);  // bold below 0.05

// ---- tables ----------------------------------------------------------------------------------

const std::map<std::string, std::string>& method_titles();  // "kd" -> "KD", ...

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

std::string cell_text(const Stats& s);              // "0.512 ± 0.104"
std::string pair_title(const std::string& pair);    // "utrecht>amsterdam" -> "utrecht → amsterdam"
// Pairs are "<source>>target>"; a mode is "federated" or "centralized".
std::string table2(const Scores& sc, const std::string& mode, const std::vector<std::string>& pairs);
std::string beyond_the_paper(const Scores& sc, const std::string& mode, const std::vector<std::string>& pairs);
std::string table3(const Scores& sc, const std::string& mode, const std::vector<std::string>& pairs);
std::string federated_vs_centralized(const Scores& sc, const std::vector<std::string>& pairs);
std::string verdict(const Scores& sc, const std::vector<std::string>& modes, const std::vector<std::string>& pairs);
// The teachers' draws; fills `failed` with the sources whose kept teacher learned nothing.
std::string teachers_table(const std::filesystem::path& out, const std::vector<std::string>& clinics, int allowed,
                           std::set<std::string>& failed);
// Seconds per mode and method from timings.csv; `total`: their sum.
std::string timings_table(const std::filesystem::path& csv, double& total);

// ---- plots -----------------------------------------------------------------------------------
// Each adds its part to a gnuplot `script` (and writes its data beside it in `dir`).

Status dice_plot(const Scores& sc, const std::string& mode, const std::vector<std::string>& pairs,
                 const std::filesystem::path& dir, std::ostringstream& script);
Status scatter_plot(const Scores& sc, const std::vector<std::string>& pairs, const std::vector<int>& folds,
                    const std::filesystem::path& dir, std::ostringstream& script);
Status learning_curves(const std::filesystem::path& out, const std::vector<std::string>& pairs,
                       const std::vector<std::string>& clinics, const std::filesystem::path& dir, std::ostringstream& script);
Status test_curves(const std::filesystem::path& out, const std::vector<std::string>& pairs, const std::filesystem::path& dir,
                   std::ostringstream& script);
Status run_gnuplot(const std::filesystem::path& dir, const std::string& script);
// The PNG files written into `dir` (names relative to it).
Result<std::vector<std::string>> overlays(const std::filesystem::path& out, const std::filesystem::path& data,
                                          const std::string& device, const std::vector<std::string>& clinics,
                                          const std::filesystem::path& dir);

}  // namespace fedda::experiment::report
