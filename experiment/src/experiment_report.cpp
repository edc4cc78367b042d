// The experiment's report: report.md and report.html (Markdown rendered with cmark-gfm),
// table2.md and table3.md, and the plots, from OUT's results.csv and experiment.json. Its parts
// are in report.h.
#include <cmark-gfm-core-extensions.h>
#include <cmark-gfm.h>

#include <cstdlib>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fedda/common/files.h"
#include "fedda/common/log.h"
#include "fedda/experiment/experiment.h"
#include "report.h"
#include "results_csv.h"

namespace fedda::experiment {
namespace fs = std::filesystem;
using nlohmann::json;
using namespace report;

namespace {

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

// What the report shows: the clinics' pairs ("utrecht>amsterdam"), the modes with results, and
// Table 2 and 3 of each mode and the comparison of the two modes, computed once for table2.md,
// table3.md and the page.
struct Page {
  std::vector<std::string> clinics, pairs, modes;
  std::map<std::string, std::string> table2, table3;  // by mode
  std::string versus;  // federated against centralized, when both ran
};

Page lay_out(const Scores& sc, const std::vector<std::string>& clinics) {
  Page p;
  p.clinics = clinics;
  for (const auto& s : clinics) {
    for (const auto& t : clinics) {
      if (s != t) p.pairs.push_back(s + ">" + t);
    }
  }
  for (const std::string m : {"federated", "centralized"}) {
    if (!sc.has_mode(m)) continue;
    p.modes.push_back(m);
    p.table2[m] = table2(sc, m, p.pairs);
    p.table3[m] = table3(sc, m, p.pairs);
  }
  if (p.modes.size() == 2) p.versus = federated_vs_centralized(sc, p.pairs);
  return p;
}

std::string mode_title(const std::string& mode) { return mode == "federated" ? "Federated" : "Centralized (reference)"; }

Status write_tables(const fs::path& out, const Scores& sc, const Page& p) {
  std::ostringstream t2, t3;
  t2 << "# Table 2: domain adaptation across clinics (Dice)\n\n";
  t3 << "# Table 3: adaptation on the fly (Dice)\n\n";
  for (const auto& m : p.modes) {
    t2 << "## " << mode_title(m) << "\n\n" << p.table2.at(m) << "\n";
    if (const auto beyond = beyond_the_paper(sc, m, p.pairs); !beyond.empty()) {
      t2 << "### Beyond the paper (" << m << ")\n\n" << beyond << "\n";
    }
    t3 << "## " << mode_title(m) << "\n\n" << p.table3.at(m) << "\n";
  }
  if (!p.versus.empty()) t2 << "## Federated against centralized\n\n" << p.versus << "\n";
  if (auto st = files::write_atomically(out / "table2.md", t2.str()); !st) return st;
  return files::write_atomically(out / "table3.md", t3.str());
}

// What the plots came to: the overlays written, and what went wrong (gnuplot missing, say),
// which the page says instead of failing.
struct Pictures {
  std::vector<std::string> overlays;
  std::string problem;
};

Result<Pictures> draw(const fs::path& out, const fs::path& data, const std::string& device, const Scores& sc,
                      const Page& p) {
  const auto plots = out / "plots";
  std::error_code ec;
  fs::create_directories(plots / "curves", ec);
  std::ostringstream script;
  script << "set terminal png size 1200,520 font ',10'\nset encoding utf8\n";
  for (const auto& m : p.modes) {
    if (auto st = dice_plot(sc, m, p.pairs, plots, script); !st) return st.error();
  }
  if (p.modes.size() == 2) {
    script << "set terminal png size 760,620 font ',10'\n";
    if (auto st = scatter_plot(sc, p.pairs, {0, 1}, plots, script); !st) return st.error();
  }
  script << "set terminal png size 1200,860 font ',10'\n";
  if (auto st = learning_curves(out, p.pairs, p.clinics, plots, script); !st) return st.error();
  if (auto st = test_curves(out, p.pairs, plots, script); !st) return st.error();
  Pictures pictures;
  if (auto st = run_gnuplot(plots, script.str()); !st) {
    pictures.problem = st.error().message;
    log::get("experiment")->warn("{}", pictures.problem);
  }
  if (auto o = overlays(out, data, device, p.clinics, plots)) {
    pictures.overlays = *o;
  } else {
    log::get("experiment")->warn("overlays: {}", o.error().message);
    pictures.problem += (pictures.problem.empty() ? "" : "; ") + std::string("overlays: ") + o.error().message;
  }
  return pictures;
}

std::string introduction(const json& config, const Page& p, double seconds) {
  std::ostringstream md;
  md << "# fedda experiment report\n\n"
     << "The seed paper's experiment (Orbes-Arteaga et al., 2019: knowledge distillation for semi-supervised "
        "domain adaptation) on the clinics in `" << config.value("data", std::string()) << "`, every cell run "
     << (p.modes.size() == 2 ? "federated (a local consortium: coordinator and one agent per clinic as separate "
                                "processes, over CurveZMQ on loopback) and centralized (the reference)"
                             : (p.modes.empty() ? "(no results yet)" : p.modes[0]))
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
  return md.str();
}

// The teachers' draws, then the verdict over the pairs whose teacher learned its source.
std::string teachers_and_verdict(const fs::path& out, const json& config, const Scores& sc, const Page& p) {
  std::ostringstream md;
  std::set<std::string> failed_teachers;
  const auto teachers = teachers_table(
      out, p.clinics, config.value("budget", json::object()).value("teacher_draws", 1), failed_teachers);
  if (!teachers.empty()) md << "## Teachers\n\n" << teachers << "\n";
  std::vector<std::string> verdict_pairs;
  for (const auto& pair : p.pairs) {
    if (!failed_teachers.count(pair.substr(0, pair.find('>')))) verdict_pairs.push_back(pair);
  }
  if (p.modes.empty()) return md.str();
  md << "## Verdict\n\n";
  if (verdict_pairs.empty()) {
    md << "None: no teacher learned its source (\"Teachers\" above), so no pair can say anything about the "
          "adaptations.\n\n";
    return md.str();
  }
  if (verdict_pairs.size() < p.pairs.size()) {
    md << "Over the " << verdict_pairs.size() << " of " << p.pairs.size()
       << " pairs whose teacher learned its source (\"Teachers\" above).\n\n";
  }
  md << verdict(sc, p.modes, verdict_pairs) << "\n";
  return md.str();
}

std::string plots_section(const fs::path& out, const Page& p, const Pictures& pictures) {
  const auto plots = out / "plots";
  std::ostringstream md;
  md << "## Plots\n\n";
  for (const auto& m : p.modes) {
    if (fs::exists(plots / ("dice-" + m + ".png"))) md << "![Dice per pair, " << m << "](plots/dice-" << m << ".png)\n\n";
  }
  if (fs::exists(plots / "federated-vs-centralized.png")) {
    md << "![federated against centralized](plots/federated-vs-centralized.png)\n\n";
  }
  if (fs::exists(plots / "learning-curves.png")) md << "![learning curves](plots/learning-curves.png)\n\n";
  if (fs::exists(plots / "test-curves.png")) md << "![test Dice curves](plots/test-curves.png)\n\n";
  if (!pictures.overlays.empty()) {
    md << "Segmentations of two test subjects of " << p.clinics[1] << " (fold 0, source " << p.clinics[0]
       << "), on the axial slice with the most WMH. Columns: FLAIR, ground truth (yellow), then L-bound, U-bound, "
          "ADA, KD, KD (ADA teacher), federated models where the grid ran federated: green true positive, red false "
          "positive, blue missed lesion.\n\n";
    for (const auto& f : pictures.overlays) md << "![" << f << "](plots/" << f << ")\n\n";
  }
  if (!pictures.problem.empty()) md << "Plots incomplete: " << pictures.problem << "\n\n";
  return md.str();
}

// The run's configuration, its timings, the cells that failed and the files beside the report.
std::string appendix(const fs::path& out, const json& config, const std::string& timings) {
  std::ostringstream md;
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
  return md.str();
}

}  // namespace

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
  const Page p = lay_out(sc, config.value("clinics", std::vector<std::string>{}));
  if (auto st = write_tables(out, sc, p); !st) return st;
  auto pictures = draw(out, data, device, sc, p);
  if (!pictures) return pictures.error();

  double seconds = 0;
  const auto timings = timings_table(out / "timings.csv", seconds);
  std::ostringstream md;
  md << introduction(config, p, seconds) << teachers_and_verdict(out, config, sc, p);
  for (const auto& m : p.modes) md << "## Table 2, " << m << "\n\n" << p.table2.at(m) << "\n";
  for (const auto& m : p.modes) md << "## Table 3 (on the fly), " << m << "\n\n" << p.table3.at(m) << "\n";
  if (!p.versus.empty()) md << "## Federated against centralized\n\n" << p.versus << "\n";
  md << plots_section(out, p, *pictures) << appendix(out, config, timings);
  if (auto st = files::write_atomically(out / "report.md", md.str()); !st) return st;
  return files::write_atomically(out / "report.html", markdown_to_html(md.str(), "fedda experiment report"));
}

}  // namespace fedda::experiment
