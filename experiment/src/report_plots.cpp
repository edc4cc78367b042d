// The report's plots: gnuplot scripts and their data (Dice per pair, federated against
// centralized, learning and test curves), and the overlays of each method's segmentation on two
// test subjects (PNG, like Fig. 4 of the paper).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fedda/common/files.h"
#include "fedda/imaging/nifti_io.h"
#include "fedda/imaging/png.h"
#include "fedda/simulation/panels.h"
#include "report.h"
#include "run_layout.h"

namespace fedda::experiment::report {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

Status write_text(const fs::path& path, const std::string& text) { return files::write_atomically(path, text); }

}  // namespace

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
    add_centralized("teacher", c, layout::teacher_dir(out, c) / "curve.csv", "teacher");
  }
  for (const auto& pair : pairs) {
    const auto k = pair.find('>');
    const std::string dash = pair.substr(0, k) + "-" + pair.substr(k + 1);
    for (const std::string m : {"ubound", "kd", "ada"}) {
      add_centralized(m, dash, layout::centralized_cell(out, dash, 0, m) / "curve.csv", m);
      add_federated(m, dash, layout::federated_job(out, layout::job_id(m, dash, 0)) / "rounds.jsonl");
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
      if (auto text = files::read_all(layout::centralized_cell(out, dash, 0, m) / "curve.csv")) {
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
      std::ifstream in(layout::federated_job(out, layout::job_id(m, dash, 0)) / "rounds.jsonl");
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
    const auto fed = layout::federated_job(out, layout::job_id(method, dash, 0)) / "model.pt";
    if (method != "lbound" && fs::exists(fed)) return fed;
    const auto cen = method == "lbound" ? layout::teacher_dir(out, source) / "teacher.pt"
                                        : layout::centralized_cell(out, dash, 0, method) / "model.pt";
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

}  // namespace fedda::experiment::report
