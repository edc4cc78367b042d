#include "fedda/site_agent/monitor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fedda/common/files.h"
#include "fedda/common/protocol.h"
#include "fedda/imaging/metrics.h"
#include "fedda/imaging/png.h"
#include "fedda/models/engine.h"
#include "fedda/models/quality.h"

namespace fedda::site_agent {
namespace fs = std::filesystem;
using models::ScanSignals;

namespace {

constexpr double kRobustDeviations = 5.0;  // baseline range: median + 5 x 1.4826 MAD ...
constexpr double kFarthestFactor = 1.5;    // ... and at least 1.5x the farthest baseline scan
constexpr double kSiteDriftShare = 0.2;    // the site drifted when this share of its scans did

double median_of(std::vector<double> v) { return imaging::percentile(std::move(v), 50); }

double mad_of(const std::vector<double>& v) {
  const double m = median_of(v);
  std::vector<double> d;
  for (double x : v) d.push_back(std::abs(x - m));
  return median_of(d);
}

// The image statistics a later run compares against: per-scan FLAIR and T1 histograms and noise,
// no subject ids.
struct Baseline {
  std::vector<double> flair, t1;          // mean histograms of the baseline scans
  double flair_limit = 0, t1_limit = 0;   // a scan farther from them drifted
  double noise_median = 0, noise_limit = 0;  // |noise - median| above the limit drifted
};

nlohmann::json profile_json(const std::vector<ScanSignals>& signals, const fs::path& model, const std::string& grid) {
  nlohmann::json scans = nlohmann::json::array();
  for (const auto& s : signals) {
    scans.push_back({{"histogram", s.flair_histogram}, {"t1_histogram", s.t1_histogram}, {"noise", s.noise}});
  }
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return {{"format", "fedda-site-profile"}, {"version", 1}, {"created", stamp}, {"model", model.filename().string()},
          {"grid", grid}, {"scans", scans}};
}

// How far from the baseline's centre a scan may lie, given the baseline scans' own distances.
double limit_of(const std::vector<double>& distances) {
  return std::max(median_of(distances) + kRobustDeviations * 1.4826 * mad_of(distances),
                  kFarthestFactor * *std::max_element(distances.begin(), distances.end()));
}

std::vector<double> mean_histogram(const std::vector<std::vector<double>>& histograms) {
  std::vector<double> mean(models::kHistogramBins, 0);
  for (const auto& h : histograms) {
    for (int i = 0; i < models::kHistogramBins; ++i) mean[i] += h[i] / histograms.size();
  }
  return mean;
}

// Histograms and noise are measured on the model's grid: a baseline holds for that grid only.
Result<Baseline> read_baseline(const fs::path& path, const std::string& grid) {
  auto text = files::read_all(path);
  if (!text) return text.error();
  const auto j = nlohmann::json::parse(*text, nullptr, false);
  if (!j.is_object() || j.value("format", "") != "fedda-site-profile" || !j.contains("scans") || !j["scans"].is_array()) {
    return make_error(path.string() + ": not a fedda site profile (site-profile.json of an earlier monitor run)");
  }
  if (j.value("grid", "") != grid) {
    return make_error(path.string() + ": measured on another model grid (" + j.value("grid", std::string("?")) +
                      ", this model's is " + grid + ")");
  }
  std::vector<std::vector<double>> flair, t1;
  std::vector<double> noise;
  try {
    for (const auto& s : j["scans"]) {
      flair.push_back(s.at("histogram").get<std::vector<double>>());
      t1.push_back(s.at("t1_histogram").get<std::vector<double>>());
      noise.push_back(s.at("noise").get<double>());
      if (flair.back().size() != models::kHistogramBins || t1.back().size() != models::kHistogramBins) {
        throw std::runtime_error("histogram size");
      }
    }
  } catch (const std::exception&) {
    return make_error(path.string() + ": a scan's histograms or noise are malformed");
  }
  if (flair.size() < 3) {
    return make_error(path.string() + ": " + std::to_string(flair.size()) +
                      " scans; a baseline needs at least 3 to have a range");
  }
  Baseline b;
  b.flair = mean_histogram(flair);
  b.t1 = mean_histogram(t1);
  std::vector<double> df, dt, dn;
  b.noise_median = median_of(noise);
  for (std::size_t i = 0; i < flair.size(); ++i) {
    df.push_back(models::histogram_distance(flair[i], b.flair));
    dt.push_back(models::histogram_distance(t1[i], b.t1));
    dn.push_back(std::abs(noise[i] - b.noise_median));
  }
  b.flair_limit = limit_of(df);
  b.t1_limit = limit_of(dt);
  b.noise_limit = limit_of(dn);
  return b;
}

// Figures in the HTML report: three decimals.
std::string shown(double v) {
  if (!std::isfinite(v)) return "";
  char text[32];
  std::snprintf(text, sizeof text, "%.3f", v);
  return text;
}

std::string html_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// A file name for a subject's thumbnail: ids are the site's own, but keep the name tame.
std::string thumbnail_name(const ScanSignals& s) {
  std::string name = s.clinic + "-" + s.subject;
  for (auto& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  }
  return name + ".png";
}

struct Row {
  const ScanSignals* signals = nullptr;
  models::QualityEstimate estimate;
  bool estimate_made = false;  // `estimate` holds one
  bool drifted = false;
  std::vector<std::string> reasons;
  bool flagged() const { return !reasons.empty(); }
  std::string reason_text() const {
    std::string text;
    for (const auto& why : reasons) text += (text.empty() ? "" : "; ") + why;
    return text;
  }
};

const std::vector<std::string>& signal_columns() {
  static const std::vector<std::string> names{"self_dice", "entropy_brain", "entropy_lesion", "tta_dice",
                                              "teacher_dice", "log_lesion_ml", "lesion_count", "histogram_distance",
                                              "noise", "brain_ml"};
  return names;
}

std::string estimates_csv(const std::vector<Row>& rows, bool score) {
  std::ostringstream csv;
  csv << "subject,clinic,estimated_dsc,dsc_low,dsc_high,flagged,reasons,lesion_ml";
  for (const auto& name : signal_columns()) csv << ',' << name;
  if (score) csv << ",true_dsc";
  csv << '\n';
  for (const auto& r : rows) {
    const auto& s = *r.signals;
    const auto reasons = r.reason_text();
    csv << protocol::csv_field(s.subject) << ',' << protocol::csv_field(s.clinic) << ',' << protocol::csv_number(r.estimate.dsc) << ','
        << protocol::csv_number(r.estimate.low) << ',' << protocol::csv_number(r.estimate.high) << ',' << (r.flagged() ? 1 : 0) << ','
        << protocol::csv_field(reasons) << ',' << protocol::csv_number(s.lesion_ml);
    for (const auto& name : signal_columns()) csv << ',' << protocol::csv_number(models::signal_value(s, name));
    if (score) csv << ',' << protocol::csv_number(s.true_dsc);
    csv << '\n';
  }
  return csv.str();
}

std::string report_html(const std::vector<Row>& rows, const MonitorSummary& summary, const MonitorOptions& options,
                        const std::optional<models::QualityEstimator>& estimator, const std::string& drift_note) {
  std::ostringstream h;
  h << "<!doctype html><html><head><meta charset=\"utf-8\"><title>fedda site report</title><style>"
       "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:13px}"
       "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td.l,th.l{text-align:left}"
       "tr.flag{background:#fde2e2}.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ccc;"
       "padding:6px;font-size:13px}.card img{width:192px;height:192px;image-rendering:pixelated}</style></head><body>";
  h << "<h1>Segmentation quality at this site, without labels</h1>";
  if (!estimator) {  // first: without it no Dice was estimated, and "0 flagged" would read as "all well"
    h << "<p><b>No Dice estimates were made: the model carries no quality estimator</b>; only the signals (and drift, "
         "against a baseline) are shown. A labelled site fits one with <code>fedda-agent calibrate</code>.</p>";
  }
  h << "<p>Model <code>" << html_escape(options.model.filename().string()) << "</code>";
  if (options.teacher) h << ", teacher <code>" << html_escape(options.teacher->filename().string()) << "</code>";
  h << ". " << summary.scans << " scans";
  if (!summary.skipped.empty()) h << " (" << summary.skipped.size() << " skipped)";
  h << ".</p>";
  if (estimator) {
    h << "<p>Estimated Dice: median <b>" << shown(summary.median) << "</b>, interquartile range " << shown(summary.q1)
      << " to " << shown(summary.q3) << ". The estimator was fitted on " << html_escape(estimator->fitted_on) << " ("
      << estimator->samples << " samples; on them Spearman " << shown(estimator->fit_spearman) << ", mean absolute error "
      << shown(estimator->fit_mae) << "). Each estimate comes with a 90% interval.</p>";
  }
  if (estimator) {
    h << "<p>Flagged: <b>" << summary.flagged << "</b> of " << summary.scans << " (estimate below "
      << shown(options.flag_below) << ", signals outside the estimator's range, or drifted). " << html_escape(drift_note)
      << "</p>";
  } else {
    h << "<p>Flagged by drift only: <b>" << summary.flagged << "</b> of " << summary.scans << ". "
      << html_escape(drift_note) << "</p>";
  }
  bool any_flagged = false;
  for (const auto& r : rows) any_flagged |= r.flagged();
  if (any_flagged) {
    h << "<h2>Flagged scans</h2><div class=\"cards\">";
    for (const auto& r : rows) {
      if (!r.flagged()) continue;
      const auto reasons = r.reason_text();
      h << "<div class=\"card\"><img src=\"thumbnails/" << html_escape(thumbnail_name(*r.signals)) << "\" alt=\"\"><br><b>"
        << html_escape(r.signals->subject) << "</b> estimate " << shown(r.estimate.dsc) << "<br>" << html_escape(reasons)
        << "</div>";
    }
    h << "</div>";
  }
  h << "<h2>All scans</h2><table><tr><th class=\"l\">subject</th><th>estimated Dice</th><th>90% interval</th>"
       "<th class=\"l\">flag</th><th>lesion mL</th><th>lesions</th><th>self Dice</th><th>entropy</th><th>TTA Dice</th>"
       "<th>teacher Dice</th><th>histogram distance</th><th>noise</th>";
  if (options.score) h << "<th>true Dice</th>";
  h << "</tr>";
  for (const auto& r : rows) {
    const auto& s = *r.signals;
    const auto reasons = r.reason_text();
    h << "<tr" << (r.flagged() ? " class=\"flag\"" : "") << "><td class=\"l\">" << html_escape(s.clinic + "/" + s.subject)
      << "</td><td>" << shown(r.estimate.dsc) << "</td><td>" << shown(r.estimate.low) << " - " << shown(r.estimate.high)
      << "</td><td class=\"l\">" << html_escape(reasons) << "</td><td>" << shown(s.lesion_ml) << "</td><td>"
      << s.lesion_count << "</td><td>" << shown(s.self_dice) << "</td><td>" << shown(s.entropy_brain) << "</td><td>"
      << shown(s.tta_dice) << "</td><td>" << shown(s.teacher_dice) << "</td><td>" << shown(s.histogram_distance)
      << "</td><td>" << shown(s.noise) << "</td>";
    if (options.score) h << "<td>" << shown(s.true_dsc) << "</td>";
    h << "</tr>";
  }
  h << "</table><p>Per-scan values stay at this site; only <code>summary.json</code> (counts, median and IQR) is "
       "meant to be shared.</p></body></html>\n";
  return h.str();
}

// One scan's row: its quality estimate (and whether it is below `flag_below` or outside the
// estimator's range), and whether its statistics drifted from `baseline` (null: none).
Row judge(const ScanSignals& s, const std::optional<models::QualityEstimator>& estimator, const Baseline* baseline,
          double flag_below) {
  Row r;
  r.signals = &s;
  if (estimator) {
    auto e = models::estimate_quality(*estimator, s);
    if (!e) {  // a signal this scan lacks: no estimate for it, the others go on
      r.reasons.push_back("no estimate: " + e.error().message);
    } else {
      r.estimate = *e;
      r.estimate_made = true;
      if (e->dsc < flag_below) r.reasons.push_back("estimate below " + protocol::csv_number(flag_below));
      if (!e->out_of_range.empty()) {
        std::string names;
        for (const auto& f : e->out_of_range) names += (names.empty() ? "" : ", ") + f;
        r.reasons.push_back("outside the estimator's range: " + names);
      }
    }
  }
  if (baseline) {
    std::vector<std::string> moved;
    if (models::histogram_distance(s.flair_histogram, baseline->flair) > baseline->flair_limit) moved.push_back("FLAIR histogram");
    if (models::histogram_distance(s.t1_histogram, baseline->t1) > baseline->t1_limit) moved.push_back("T1 histogram");
    if (std::abs(s.noise - baseline->noise_median) > baseline->noise_limit) moved.push_back("noise");
    r.drifted = !moved.empty();
    if (r.drifted) {
      std::string what;
      for (const auto& m : moved) what += (what.empty() ? "" : ", ") + m;
      r.reasons.push_back("drifted from the baseline (" + what + ")");
    }
  }
  return r;
}

// What the report says of drift: the scans that drifted from the baseline, or why there was none.
std::string drift_text(const MonitorSummary& summary) {
  std::string drift_note = "No baseline given: nothing to compare the scans' statistics against (this run's "
                           "site-profile.json can be the next run's --baseline).";
  if (!summary.baseline_problem.empty()) drift_note = "The baseline was not used: " + summary.baseline_problem + ".";
  if (summary.compared) {
    drift_note = std::to_string(summary.drifted) + " of " + std::to_string(summary.scans) +
                 " scans drifted from the baseline; " +
                 (summary.site_drifted ? "the site's scans changed (at least a fifth drifted): check for a scanner or "
                                         "protocol change before trusting the model here."
                                       : "the site's scans look as before.");
  }
  return drift_note;
}

}  // namespace

Result<MonitorSummary> run_monitor(const MonitorOptions& options, const std::vector<imaging::SubjectFiles>& subjects,
                                   const std::function<void(int, int)>& progress) {
  if (subjects.empty()) return make_error("monitor: no scans to look at");
  if (!(options.flag_below >= 0 && options.flag_below <= 1)) return make_error("monitor: --flag-below must be in [0, 1]");
  auto estimator = models::read_estimator(options.estimator_from.value_or(options.model));
  if (!estimator) return estimator.error();
  if (options.estimator_from && !*estimator) {
    return make_error(options.estimator_from->string() + ": carries no quality estimator");
  }
  if (*estimator && !options.teacher &&
      std::find((*estimator)->features.begin(), (*estimator)->features.end(), "teacher_dice") != (*estimator)->features.end()) {
    return make_error(options.model.string() +
                      ": its quality estimator was fitted with a teacher's agreement; pass the same teacher with --teacher");
  }
  auto spec = models::read_model_spec(options.model);
  if (!spec) return spec.error();
  const auto& g = spec->grid;
  const std::string grid = std::to_string(g.in_plane_size[0]) + "x" + std::to_string(g.in_plane_size[1]) + " at " +
                           protocol::csv_number(g.in_plane_spacing[0]) + "x" + protocol::csv_number(g.in_plane_spacing[1]) + " mm";
  std::optional<Baseline> baseline;
  MonitorSummary summary;
  std::error_code ec;
  if (options.baseline) {
    auto b = read_baseline(*options.baseline, grid);
    if (!b) return b.error();
    baseline = std::move(*b);
  } else if (options.site_baseline && fs::exists(*options.site_baseline, ec)) {
    auto b = read_baseline(*options.site_baseline, grid);
    if (b) {
      baseline = std::move(*b);
    } else {
      summary.baseline_problem = b.error().message;
    }
  }
  summary.compared = baseline.has_value();
  models::SignalOptions so;
  so.teacher = options.teacher;
  if (*estimator) so.reference_histogram = (*estimator)->reference_histogram;
  so.score = options.score;
  so.thumbnails = true;
  so.device = options.device;
  so.precision = options.precision;
  auto signals = models::compute_signals(
      options.model, subjects, so,
      [&](const std::string& subject, const std::string& why) { summary.skipped.push_back(subject + ": " + why); },
      progress);
  if (!signals) return signals.error();
  if (signals->empty()) return make_error("monitor: none of the " + std::to_string(subjects.size()) + " scans could be read");

  std::vector<Row> rows;
  std::vector<double> estimates;
  for (const auto& s : *signals) {
    Row r = judge(s, *estimator, baseline ? &*baseline : nullptr, options.flag_below);
    if (r.estimate_made) estimates.push_back(r.estimate.dsc);
    summary.flagged += r.flagged() ? 1 : 0;
    summary.drifted += r.drifted ? 1 : 0;
    rows.push_back(std::move(r));
  }
  summary.scans = static_cast<int>(rows.size());
  summary.has_estimator = estimator->has_value();
  summary.median = estimates.empty() ? NAN : imaging::percentile(estimates, 50);
  summary.q1 = estimates.empty() ? NAN : imaging::percentile(estimates, 25);
  summary.q3 = estimates.empty() ? NAN : imaging::percentile(estimates, 75);
  summary.site_drifted = baseline && summary.drifted >= std::max(1.0, kSiteDriftShare * summary.scans);
  const auto drift_note = drift_text(summary);

  fs::create_directories(options.out / "thumbnails", ec);
  if (ec) return make_error(options.out.string() + ": cannot create: " + ec.message());
  for (const auto& r : rows) {
    if (r.flagged() && r.signals->thumbnail.width > 0) {
      if (auto st = imaging::write_png(options.out / "thumbnails" / thumbnail_name(*r.signals), r.signals->thumbnail); !st) {
        return st.error();
      }
    }
  }
  if (auto st = files::write_atomically(options.out / "estimates.csv", estimates_csv(rows, options.score)); !st) return st.error();
  if (auto st = files::write_atomically(options.out / "report.html", report_html(rows, summary, options, *estimator, drift_note));
      !st) {
    return st.error();
  }
  const auto profile = profile_json(*signals, options.model, grid).dump(1) + "\n";
  if (auto st = files::write_atomically(options.out / "site-profile.json", profile); !st) return st.error();
  if (options.site_baseline && !options.baseline && !baseline && summary.scans >= 3) {
    if (auto st = files::write_atomically(*options.site_baseline, profile); !st) return st.error();
    summary.became_baseline = true;
  }
  const auto number = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); };
  const nlohmann::json aggregate{{"scans", summary.scans},         {"skipped", summary.skipped.size()},
                                 {"flagged", summary.flagged},     {"drifted", summary.drifted},
                                 {"site_drifted", summary.site_drifted}, {"estimated_dsc_median", number(summary.median)},
                                 {"estimated_dsc_q1", number(summary.q1)}, {"estimated_dsc_q3", number(summary.q3)}};
  if (auto st = files::write_atomically(options.out / "summary.json", aggregate.dump(2) + "\n"); !st) return st.error();
  return summary;
}

}  // namespace fedda::site_agent
