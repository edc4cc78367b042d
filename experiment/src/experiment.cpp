#include "fedda/experiment/experiment.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "fedda/common/files.h"
#include "fedda/common/log.h"
#include "fedda/imaging/dataset.h"
#include "fedda/models/federated.h"
#include "fedda/experiment/centralized.h"
#include "fedda/experiment/consortium.h"
#include "cells.h"
#include "grid.h"
#include "results_csv.h"
#include "run_layout.h"

namespace fedda::experiment {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;
using detail::Cell;
using detail::Grid;
using detail::budget_json;
using detail::centralized_dir;
using detail::csv_rows;
using detail::is_kd;
using detail::run_centralized_cell;
using layout::teacher_model;

namespace {

const std::string kCsvHeader = std::string(protocol::kResultsCsvHeader) + "\n";

class Progress {
 public:
  Progress(std::function<void(const std::string&)> say, double total) : say_(std::move(say)), total_(total) {}
  void start_cell(const Cell& c) { say_("  running " + c.name()); }
  void finish(const Cell& c, double seconds, const std::string& outcome) {
    done_ += c.cost;
    ++cells_;
    const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
    std::string left = "?";
    if (done_ > 0) left = clock_text(elapsed / done_ * std::max(0.0, total_ - done_));
    say_("[" + std::to_string(cells_ + skipped_) + "/" + std::to_string(cell_total_) + " cells | " +
         clock_text(elapsed) + " elapsed | about " + left + " left] " + c.name() + ": " + outcome + " (" +
         std::to_string(static_cast<int>(std::lround(seconds))) + " s)");
  }
  void skip(const Cell& c) {
    total_ -= c.cost;
    ++skipped_;
  }
  void set_cells(int n) { cell_total_ = n; }
  int skipped() const { return skipped_; }

  static std::string clock_text(double seconds) {
    const long s = std::lround(seconds);
    char buf[32];
    if (s >= 3600) {
      std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
    } else {
      std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
    }
    return buf;
  }

 private:
  std::function<void(const std::string&)> say_;
  double total_ = 0, done_ = 0;
  int cells_ = 0, skipped_ = 0, cell_total_ = 0;
  Clock::time_point start_ = Clock::now();
};

// Mean Dice of a results.csv's rows (no header), as text for the progress line.
std::string mean_dice_text(const std::string& rows) {
  double sum = 0;
  int n = 0;
  auto parsed = protocol::parse_results_csv(kCsvHeader + rows);
  if (!parsed) return parsed.error().message;
  for (const auto& r : *parsed) {
    if (std::isfinite(r.dsc)) {
      sum += r.dsc;
      ++n;
    }
  }
  if (n == 0) return "no scored subject";
  char buf[64];
  std::snprintf(buf, sizeof buf, "mean Dice %.3f over %d subjects", sum / n, n);
  return buf;
}

}  // namespace

namespace detail {

std::string Cell::name() const {
  if (is_teacher()) return method + " " + source;
  return mode + " " + method + " " + source + "->" + target + " fold " + std::to_string(fold);
}

std::string Cell::id() const {
  if (is_teacher()) return method + "-" + source;
  return mode + "-" + method + "-" + pair() + "-f" + std::to_string(fold);
}

std::vector<std::string> Cell::jobs() const {
  const std::string base = layout::job_id(method, pair(), fold);
  if (method.rfind("otf-", 0) != 0) return {base};
  std::vector<std::string> ids;
  for (std::size_t i = 0; i < subjects.size(); ++i) ids.push_back(base + "-s" + std::to_string(i));
  return ids;
}

std::vector<std::string> cell_dependencies(const Cell& c) {
  if (c.is_teacher()) return {};
  std::vector<std::string> needs{(c.method == "lbound-aug" ? "teacher-aug-" : "teacher-") + c.source};
  if (c.method == "kd-from-ada") needs.push_back(c.mode + "-ada-" + c.pair() + "-f" + std::to_string(c.fold));
  return needs;
}

Result<Grid> plan_grid(const ExperimentOptions& o, const ExperimentBudget& b) {
  auto subjects = imaging::find_subjects(o.data);
  if (!subjects) return subjects.error();
  std::map<std::string, std::vector<imaging::SubjectFiles>> by_clinic;
  Grid g;
  for (const auto& s : *subjects) {
    if (!by_clinic.count(s.clinic)) g.clinics.push_back(s.clinic);
    by_clinic[s.clinic].push_back(s);
  }
  for (const auto& clinic : g.clinics) {  // a clinic's name is part of every cell id and job id
    const bool plain = !clinic.empty() && std::all_of(clinic.begin(), clinic.end(), [](unsigned char ch) {
      return std::isalnum(ch) || ch == '_';
    });
    if (!plain) {
      return make_error((o.data / clinic).string() + ": a clinic's folder name is letters, digits and '_' only "
                        "(it names the grid's cells and jobs)");
    }
  }
  if (g.clinics.size() < 2) return make_error(o.data.string() + ": the grid needs at least two clinics, found " +
                                              std::to_string(g.clinics.size()));
  for (const auto& [clinic, list] : by_clinic) {
    if (list.size() < 2) return make_error(clinic + ": needs at least 2 subjects to split into two folds");
    for (const auto& s : list) {
      if (!s.labels) return make_error(clinic + "/" + s.subject + ": no wmh.nii.gz (every subject is scored, or is a source)");
    }
  }
  const auto methods = o.methods.empty() ? paper_methods() : o.methods;
  const bool augmented_teachers = std::count(methods.begin(), methods.end(), "lbound-aug") > 0;
  const double eval = 4, overhead = 10;  // steps' worth per scored subject and per cell
  // One teacher per source clinic, trained at that clinic alone and shared by both modes, so
  // that federated against centralized compares the adaptations rather than two teacher draws.
  for (const auto& source : g.clinics) {
    Cell t;
    t.mode = "centralized";
    t.source = source;
    t.method = "teacher";
    t.cost = b.teacher_epochs * b.steps + overhead;
    g.cells.push_back(t);
    if (augmented_teachers) {  // lbound-aug's teacher: the same source, heavily augmented
      t.method = "teacher-aug";
      g.cells.push_back(t);
    }
  }
  for (const auto& mode : o.modes) {
    for (const auto& source : g.clinics) {
      for (const auto& target : g.clinics) {
        if (source == target) continue;
        for (int fold : o.folds) {
          const auto test = imaging::split_fold(by_clinic[target], fold).test;
          for (const auto& method : methods) {
            Cell c;
            c.mode = mode;
            c.source = source;
            c.target = target;
            c.method = method;
            c.fold = fold;
            const double n = static_cast<double>(test.size());
            const double adapt = b.adapt_epochs * b.steps, otf = b.otf_epochs * b.steps;
            const double kd = kd_epochs(b) * b.steps * (b.kd_hard_weight > 0 ? 1.1 : 1.0);
            const double curves = b.curve_every > 0 ? eval * n * 0.3 * kd_epochs(b) / b.curve_every : 0;
            if (method == "lbound" || method == "lbound-aug") c.cost = overhead + eval * n;
            if (method == "ubound") c.cost = adapt + overhead + eval * n + curves;
            if (method == "kd" || method == "kd-noisy") c.cost = kd + overhead + eval * n + curves;
            if (method == "ada") c.cost = 2 * adapt + overhead + eval * n + curves;
            if (method == "kd-from-ada") c.cost = kd + overhead + eval * n + curves;
            if (method == "otf-kd") c.cost = n * (otf + overhead + eval);
            if (method == "otf-ada") c.cost = n * (2 * otf + overhead + eval);
            if (method.rfind("otf-", 0) == 0) {
              for (const auto& s : test) c.subjects.push_back(s.subject);
            }
            g.cells.push_back(c);
          }
        }
      }
    }
  }
  return g;
}

}  // namespace detail

namespace {

std::string yaml_list(const std::vector<std::string>& items) {
  std::string s = "[";
  for (std::size_t i = 0; i < items.size(); ++i) s += (i ? ", " : "") + items[i];
  return s + "]";
}

// Where federated cells run: the grid's one consortium (a run in one process), or a
// consortium of the cell's own (a cell run alone, --cell, so that cells on other machines or
// beside it never share a coordinator or a site's state).
using layout::shared_consortium;
fs::path own_consortium(const fs::path& out, const Cell& c) { return layout::own_consortium(out, c.id()); }

bool jobs_done(const fs::path& consortium, const Cell& c) {
  const auto ids = c.jobs();
  return std::all_of(ids.begin(), ids.end(), [&](const auto& id) { return fs::exists(consortium / "jobs" / id / "summary.json"); });
}

// The consortium holding a federated cell's finished jobs: its own where it ran alone, else the shared one.
fs::path consortium_of(const fs::path& out, const Cell& c) {
  return jobs_done(own_consortium(out, c), c) ? own_consortium(out, c) : shared_consortium(out);
}

// A centralized cell is done when its summary is written; a federated one when all its jobs are.
bool cell_done(const fs::path& out, const Cell& c) {
  if (c.mode == "centralized") return fs::exists(centralized_dir(out, c) / "summary.json");
  return jobs_done(consortium_of(out, c), c);
}

// The kd-from-ada cell's ada twin (same mode, pair and fold).
Cell ada_twin(const Cell& c) {
  Cell ada = c;
  ada.method = "ada";
  ada.subjects.clear();
  return ada;
}

// Pseudonym <-> subject id of each clinic of the local consortium, loaded once per clinic.
class Pseudonyms {
 public:
  explicit Pseudonyms(fs::path consortium) : consortium_(std::move(consortium)) {}
  // The subject a pseudonym of `clinic` stands for (the pseudonym itself when unknown).
  std::string subject(const std::string& clinic, const std::string& pseudonym) {
    const auto& m = load(clinic);
    const auto it = m.find(pseudonym);
    return it == m.end() ? pseudonym : it->second;
  }
  Result<std::string> pseudonym(const std::string& clinic, const std::string& subject) {
    for (const auto& [p, s] : load(clinic)) {
      if (s == subject) return p;
    }
    return make_error(clinic + "/" + subject + ": no pseudonym (has the consortium run that site?)");
  }

 private:
  const std::map<std::string, std::string>& load(const std::string& clinic) {
    auto it = maps_.find(clinic);
    if (it == maps_.end()) {
      auto map = site_pseudonyms(consortium_, clinic);
      it = maps_.emplace(clinic, map ? *map : std::map<std::string, std::string>()).first;
    }
    return it->second;
  }
  fs::path consortium_;
  std::map<std::string, std::map<std::string, std::string>> maps_;
};

// A YAML single-quoted scalar: any path, quotes doubled.
std::string yaml_quoted(const std::string& text) {
  std::string quoted = "'";
  for (char ch : text) quoted += ch == '\'' ? std::string("''") : std::string(1, ch);
  return quoted + "'";
}

// The job files of a federated cell run on `consortium`, as (id, YAML) in running order: every
// setting a JobSpec (protocol::job_file_settings), and the file's own keys (method, teacher,
// recipe) after them.
Result<std::vector<std::pair<std::string, std::string>>> job_files(const ExperimentOptions& o, const ExperimentBudget& b,
                                                                   const Cell& c, const fs::path& consortium,
                                                                   Pseudonyms& pseudonyms) {
  using protocol::JobType;
  std::vector<std::pair<std::string, std::string>> out;
  const auto ids = c.jobs();
  const std::string teacher = yaml_quoted(teacher_model(o.out, c.source, c.method == "lbound-aug").string());
  const bool otf = c.method.rfind("otf-", 0) == 0;
  // Rounds, step size and recipe of the cell's centralized twin: a round is one of its epochs.
  const auto training = cell_training(b, c.method, o.seed, o.device, o.precision, o.threads).adaptation;
  const auto precision = protocol::parse_setting<protocol::Precision>(o.precision, "precision");
  if (!precision) return precision.error();
  for (std::size_t i = 0; i < ids.size(); ++i) {
    protocol::JobSpec j;
    models::set_learning_settings(j, training);  // batch, losses, scoring: the centralized twin's
    j.bn_statistics = protocol::BnStatistics::shared;  // the federated cells' own: below
    j.id = ids[i];
    j.fold = c.fold;
    j.sites = {c.source, c.target};
    j.evaluation_sites = {c.target};
    j.source = c.source;
    j.local_steps = b.steps;
    j.steps_by_share = true;
    j.seed = o.seed;
    j.round_deadline_s = 1800;
    j.ada_weight = b.ada_weight;
    j.ada_warmup_rounds = b.ada_warmup_epochs;
    j.precision = *precision;
    std::string extra = "method: " + c.method + "\n";
    std::string model = teacher;  // the job's teacher: model file or job:<id>
    if (c.method == "lbound" || c.method == "lbound-aug") {
      j.type = JobType::evaluate;
    } else {
      j.rounds = training.epochs;
      j.learning_rate = training.learning_rate;
      j.min_sites = 2;
      j.bn_statistics = b.federated_bn;
      j.server_optimizer = b.server_optimizer;
      j.server_lr = b.server_lr;
      if (!otf && b.curve_every > 0) j.evaluate_every = b.curve_every;
      j.secure_aggregation = o.secure_aggregation;
      if (is_kd(c.method)) j.student_init = b.student_init;
      // JSON is YAML; the classic recipe is written as none, as before recipes.
      if (models::to_json(training.recipe) != models::to_json(models::Recipe{})) {
        extra += "recipe: " + models::to_json(training.recipe) + "\n";
      }
      j.type = c.method == "ubound" ? JobType::teacher : c.method == "ada" || c.method == "otf-ada" ? JobType::ada : JobType::kd;
      if (c.method == "kd-from-ada") {
        // The ada job of the same consortium, or the model of the ada cell that ran in its own.
        const auto ada = ada_twin(c);
        if (consortium == shared_consortium(o.out) && consortium_of(o.out, ada) == consortium) {
          model = "job:" + ada.jobs().front();
        } else {
          model = yaml_quoted(fs::absolute(consortium_of(o.out, ada) / "jobs" / ada.jobs().front() / "model.pt").string());
        }
      }
      if (otf) {
        auto p = pseudonyms.pseudonym(c.target, c.subjects[i]);
        if (!p) return p.error();
        j.subjects = {*p};
      }
    }
    out.emplace_back(ids[i], protocol::job_file_settings(j) + extra + "teacher: " + model + "\n");
  }
  return out;
}

// The "seconds" of a summary.json (the engine's or the coordinator's); 0 when unreadable.
double summary_seconds(const fs::path& summary) {
  auto text = files::read_all(summary);
  if (!text) return 0;
  const auto j = json::parse(*text, nullptr, false);
  return j.is_object() && j.contains("seconds") && j["seconds"].is_number() ? j["seconds"].get<double>() : 0;
}

// A federated cell's rows with subjects under their real ids again (the sites sent pseudonyms).
std::string job_rows(const fs::path& jobs, const Cell& c, Pseudonyms& pseudonyms) {
  std::string rows;
  for (const auto& id : c.jobs()) {
    auto parsed = protocol::parse_results_csv(kCsvHeader + csv_rows(jobs / id / "results.csv"));
    if (!parsed) continue;
    for (auto r : *parsed) {
      r.subject = pseudonyms.subject(r.target, r.subject);
      rows += protocol::csv_line(r);
    }
  }
  return rows;
}

double job_seconds(const fs::path& jobs, const Cell& c) {
  double s = 0;
  for (const auto& id : c.jobs()) s += summary_seconds(jobs / id / "summary.json");
  return s;
}

// Runs the federated cells on one local consortium in `root` (agents for `sites`; empty: every
// clinic): every cell's jobs are submitted through the coordinator's admin endpoint up front, in
// the grid's order, and the coordinator runs them one after another (they share sites); a job
// whose teacher job failed fails with it. Cells are reported as their jobs end, a failed one with
// the coordinator's reason; finished jobs of an earlier run are not rerun, unfinished ones resume.
void run_federated(const ExperimentOptions& o, const ExperimentBudget& b, const std::vector<Cell>& cells,
                   const fs::path& root, const std::vector<std::string>& sites, Progress& progress,
                   std::map<std::string, std::string>& failures) {
  std::error_code ec;
  fs::create_directories(root / "job-files", ec);
  std::vector<const Cell*> pending;
  for (const auto& c : cells) {
    if (!fs::exists(teacher_model(o.out, c.source, c.method == "lbound-aug"))) {
      failures[c.name()] = "not run: teacher " + c.source + " failed";
      progress.finish(c, 0, "not run (teacher " + c.source + " failed)");
      continue;
    }
    pending.push_back(&c);
  }
  if (pending.empty()) return;
  const auto fail_all = [&](std::size_t from, const std::string& why) {
    log::get("experiment")->error("{}", why);
    for (std::size_t i = from; i < pending.size(); ++i) {
      failures[pending[i]->name()] = why;
      progress.finish(*pending[i], 0, "FAILED (see report)");
    }
  };
  ConsortiumOptions co;
  co.data = o.data;
  co.out = root;
  co.sites = sites;
  co.device = o.device;
  co.threads_per_agent = o.threads;
  co.bin_dir = o.bin_dir;
  co.secure = o.secure;
  co.show_progress = false;
  co.heartbeat_ms = 500;
  auto consortium = LocalConsortium::start(co);
  if (!consortium) return fail_all(0, "the consortium did not start: " + consortium.error().message);
  Pseudonyms pseudonyms(root);
  std::vector<std::string> ids;
  std::vector<const Cell*> submitted;
  for (const auto* c : pending) {
    std::string failed;
    auto files_of_cell = job_files(o, b, *c, root, pseudonyms);
    if (!files_of_cell) failed = files_of_cell.error().message;
    for (const auto& [id, yaml] : files_of_cell ? *files_of_cell : std::vector<std::pair<std::string, std::string>>{}) {
      const auto file = root / "job-files" / (id + ".yaml");
      auto queued = files::write_atomically(file, yaml) ? (*consortium)->submit(file)
                                                        : Result<std::string>(make_error(file.string() + ": cannot write"));
      if (!queued) {
        failed = queued.error().message;
        break;
      }
      ids.push_back(*queued);
    }
    if (!failed.empty()) {
      failures[c->name()] = "not submitted: " + failed;
      progress.finish(*c, 0, "FAILED (see report)");
      continue;
    }
    submitted.push_back(c);
  }
  pending = submitted;
  if (pending.empty()) return;
  std::size_t next = 0;  // first cell not yet reported
  auto cell_start = Clock::now();
  const auto poll = [&](const std::vector<JobView>& jobs) {
    std::map<std::string, const JobView*> by_id;
    for (const auto& j : jobs) by_id[j.id] = &j;
    while (next < pending.size()) {
      const Cell& c = *pending[next];
      std::string failed;
      for (const auto& id : c.jobs()) {
        const auto it = by_id.find(id);
        if (it == by_id.end()) return;
        const auto& state = it->second->state;
        if (state != "finished" && state != "failed" && state != "aborted") return;
        if (state != "finished" && failed.empty()) failed = "job " + id + " " + state + ": " + it->second->error;
      }
      const double seconds = std::chrono::duration<double>(Clock::now() - cell_start).count();
      if (failed.empty()) {
        progress.finish(c, seconds, mean_dice_text(job_rows(root / "jobs", c, pseudonyms)));
      } else {
        failures[c.name()] = failed;
        log::get("experiment")->error("federated {}", failed);
        progress.finish(c, seconds, "FAILED (see report)");
      }
      cell_start = Clock::now();
      ++next;
      if (next < pending.size()) progress.start_cell(*pending[next]);
    }
  };
  progress.start_cell(*pending.front());
  auto ended = (*consortium)->wait(ids, poll);
  if (!ended) return fail_all(next, "the consortium stopped: " + ended.error().message);
  std::vector<JobView> last;
  for (const auto& [id, view] : *ended) last.push_back(view);
  poll(last);
  if (auto st = (*consortium)->stop(); !st) log::get("experiment")->warn("{}", st.error().message);
}

Status check_configuration(const ExperimentOptions& o, const json& config) {
  const auto file = o.out / "experiment.json";
  if (fs::exists(file)) {
    auto text = files::read_all(file);
    if (!text) return text.error();
    auto old = json::parse(*text, nullptr, false);
    if (old.is_discarded()) return make_error(file.string() + ": not JSON; remove it or choose another --out");
    for (const char* key : {"profile", "seed", "budget", "data"}) {
      const json& now = config.at(key);
      json before = old.value(key, json());
      // A budget key newer than the run reads as the value that does what the run did.
      static const json kBeforeTheKey = {{"teacher_draws", 1},
                                         {"scratch_student_as_teacher", false},
                                         {"teacher_recipe", json::parse(models::to_json(models::Recipe{}))},
                                         {"adapt_recipe", json::parse(models::to_json(models::Recipe{}))},
                                         {"noisy_augmentation", json::parse(models::to_json(*models::recipe_preset("heavy")))}};
      if (std::string(key) == "budget" && before.is_object()) {
        for (const auto& [name, value] : kBeforeTheKey.items()) {
          if (!before.contains(name)) before[name] = value;
        }
        // A recipe written before one of its keys existed reads as the preset's value of it.
        for (const char* name : {"teacher_recipe", "adapt_recipe", "noisy_augmentation"}) {
          if (!before.contains(name)) continue;
          if (auto r = models::recipe_from_json(before[name].dump())) before[name] = json::parse(models::to_json(*r));
        }
      }
      if (before != now) {
        return make_error(o.out.string() + " holds a run with another " + key + " (" + before.dump() +
                          ", now " + now.dump() + "); resume it with the same settings or choose another --out");
      }
    }
  }
  return files::write_atomically(file, config.dump(2) + "\n");
}

}  // namespace

namespace {

// A grid ready to run: its options completed, its budget, its cells, its configuration on disk.
struct Setup {
  ExperimentOptions o;
  ExperimentBudget budget;
  Grid grid;
};

// Checks the options, plans the grid and writes (or checks against) out/experiment.json: what
// every way of running a grid does first, so that a plan's cells agree with each other.
Result<Setup> set_up(const ExperimentOptions& options) {
  Setup setup{options, {}, {}};
  ExperimentOptions& o = setup.o;
  if (!o.say) o.say = [](const std::string& line) { std::cout << line << std::endl; };
  for (const auto& m : o.modes) {
    if (m != "federated" && m != "centralized") return make_error("unknown mode '" + m + "' (federated or centralized)");
  }
  for (const auto& m : o.methods) {
    if (std::find(experiment_methods().begin(), experiment_methods().end(), m) == experiment_methods().end()) {
      std::string names;
      for (const auto& known : experiment_methods()) names += (names.empty() ? "" : ", ") + known;
      return make_error("unknown method '" + m + "' (choose from " + names + ")");
    }
  }
  // kd-from-ada needs its pair's ada model.
  if (!o.methods.empty() && std::count(o.methods.begin(), o.methods.end(), "kd-from-ada") &&
      !std::count(o.methods.begin(), o.methods.end(), "ada")) {
    o.methods.push_back("ada");
  }
  if (auto st = models::check_device(o.device); !st) return st.error();
  // LibTorch's own default may be the physical core count; the grid runs one thing at a time.
  if (o.threads <= 0) o.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  auto chosen = experiment_budget(o.profile);
  if (!chosen) return chosen.error();
  auto& budget = setup.budget;
  budget = *chosen;
  if (o.student_init) budget.student_init = *o.student_init;
  if (o.federated_bn) budget.federated_bn = *o.federated_bn;
  if (o.server_optimizer) budget.server_optimizer = *o.server_optimizer;
  if (o.server_lr > 0) budget.server_lr = o.server_lr;
  if (o.test_time_mirroring) budget.test_time_mirroring = true;
  if (o.teacher_draws > 0) budget.teacher_draws = o.teacher_draws;
  auto grid = detail::plan_grid(o, budget);
  if (!grid) return grid.error();
  setup.grid = std::move(*grid);
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec) return make_error(o.out.string() + ": cannot create: " + ec.message());

  json config = {{"profile", o.profile},
                 {"seed", o.seed},
                 {"budget", budget_json(budget)},
                 {"data", fs::absolute(o.data).lexically_normal().string()},
                 {"clinics", setup.grid.clinics},
                 {"modes", o.modes},
                 {"device", o.device},
                 {"precision", o.precision},
                 {"threads", o.threads},
                 {"secure", o.secure},
                 {"secure_aggregation", o.secure_aggregation}};
  if (auto st = check_configuration(o, config); !st) return st.error();
  return setup;
}

// Why a cell run alone (--cell) failed, kept for the report step: out/cell-failures/<id>.txt.
fs::path cell_failure_file(const fs::path& out, const Cell& c) { return out / "cell-failures" / (c.id() + ".txt"); }

// Merges the results and timings of every finished cell, names the failed ones and writes the
// report. `failures`: this run's; cells neither finished nor failed here are named from their
// own run's failure file, or as not run.
Status merge_and_report(const Setup& setup, std::map<std::string, std::string> failures) {
  const auto& o = setup.o;
  std::map<fs::path, Pseudonyms> pseudonyms;
  std::string results = kCsvHeader;
  std::string timings = "mode,source,target,fold,method,seconds,status\n";
  for (const auto& c : setup.grid.cells) {
    const bool done = cell_done(o.out, c);
    std::string rows;
    double seconds = 0;
    if (c.mode == "centralized") {
      rows = csv_rows(centralized_dir(o.out, c) / "results.csv");
      seconds = summary_seconds(centralized_dir(o.out, c) / "summary.json");
    } else {
      const auto root = consortium_of(o.out, c);
      auto& names = pseudonyms.try_emplace(root, root).first->second;
      rows = job_rows(root / "jobs", c, names);
      seconds = job_seconds(root / "jobs", c);
    }
    if (!done && !failures.count(c.name())) {
      auto why = files::read_all(cell_failure_file(o.out, c));
      failures[c.name()] = why ? *why : "not run";
    }
    results += rows;
    char line[512];
    std::snprintf(line, sizeof line, "%s,%s,%s,%d,%s,%.1f,%s\n", c.mode.c_str(), c.source.c_str(), c.target.c_str(),
                  c.fold, c.method.c_str(), seconds, done ? "done" : "failed");
    timings += line;
  }
  if (auto st = files::write_atomically(o.out / "results.csv", results); !st) return st.error();
  if (auto st = files::write_atomically(o.out / "timings.csv", timings); !st) return st.error();
  json failed = json::object();
  for (const auto& [cell, why] : failures) failed[cell] = why;
  if (auto st = files::write_atomically(o.out / "failures.json", failed.dump(2) + "\n"); !st) return st.error();
  o.say("experiment: writing tables, plots and report");
  return write_experiment_report(o.out, o.data, o.device);
}

// Runs one centralized cell, with its progress lines; false (and the reason in `failures`) when it failed.
bool run_centralized_with_progress(const Setup& setup, const Cell& c, Progress& progress,
                                   std::map<std::string, std::string>& failures) {
  progress.start_cell(c);
  const auto t0 = Clock::now();
  auto rows = run_centralized_cell(setup.o, setup.budget, c);
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!rows) {
    failures[c.name()] = rows.error().message;
    log::get("experiment")->error("{}: {}", c.name(), rows.error().message);
    progress.finish(c, s, "FAILED (see report)");
    return false;
  }
  progress.finish(c, s, c.is_teacher() ? "trained" : mean_dice_text(*rows));
  return true;
}

// The whole grid in this process: centralized cells one after another, then the federated
// cells on one shared consortium, then the report.
Result<ExperimentResult> run_grid(const Setup& setup, Clock::time_point start) {
  const auto& o = setup.o;
  double total = 0;
  for (const auto& c : setup.grid.cells) total += c.cost;
  Progress progress(o.say, total);
  progress.set_cells(static_cast<int>(setup.grid.cells.size()));
  std::map<std::string, std::string> failures;
  std::vector<Cell> federated;
  for (const auto& c : setup.grid.cells) {
    if (cell_done(o.out, c)) {
      progress.skip(c);
    } else if (c.mode == "federated") {
      federated.push_back(c);
    }
  }
  o.say("experiment: " + std::to_string(setup.grid.cells.size()) + " cells (" + o.profile + " profile, " +
        std::to_string(setup.grid.clinics.size()) + " clinics, modes " + yaml_list(o.modes) + "), " +
        std::to_string(progress.skipped()) + " already done; output in " + o.out.string());
  for (const auto& c : setup.grid.cells) {
    if (c.mode == "centralized" && !cell_done(o.out, c)) run_centralized_with_progress(setup, c, progress, failures);
  }
  if (!federated.empty()) run_federated(o, setup.budget, federated, shared_consortium(o.out), {}, progress, failures);
  if (auto st = merge_and_report(setup, failures); !st) return st.error();
  ExperimentResult result;
  result.cells = static_cast<int>(setup.grid.cells.size());
  result.failed = static_cast<int>(failures.size());
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  result.report = o.out / "report.html";
  return result;
}

// Where the grid's plan is, for the refusals of --cell (out/plan.json, written with the plan).
std::string plan_hint(const fs::path& out) {
  auto text = files::read_all(out / "plan.json");
  const auto j = text ? json::parse(*text, nullptr, false) : json();
  if (j.is_object() && j.contains("dir") && j["dir"].is_string()) {
    return "the plan in " + j["dir"].get<std::string>() + " (cells.tsv lists its cells)";
  }
  return "its plan (fedda-sim experiment with the same options and --plan DIR writes DIR/cells.tsv)";
}

// One cell of the grid (o.cell), as a line of a plan runs it: refused while a cell it needs has
// not finished; a federated cell on a consortium of its own. The report step (kReportCell)
// merges every finished cell and writes the report.
Result<ExperimentResult> run_one_cell(const Setup& setup, Clock::time_point start) {
  const auto& o = setup.o;
  ExperimentResult result;
  result.cells = 1;
  result.report = o.out / "report.html";
  if (o.cell == detail::kReportCell) {
    if (auto st = merge_and_report(setup, {}); !st) return st.error();
    for (const auto& c : setup.grid.cells) result.failed += cell_done(o.out, c) ? 0 : 1;
    result.cells = static_cast<int>(setup.grid.cells.size());
    result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    return result;
  }
  std::map<std::string, const Cell*> by_id;
  for (const auto& c : setup.grid.cells) by_id[c.id()] = &c;
  const auto it = by_id.find(o.cell);
  if (it == by_id.end()) {
    return make_error("--cell " + o.cell + ": no such cell in the grid of " + o.out.string() + " (" +
                      std::to_string(setup.grid.cells.size()) + " cells and '" + detail::kReportCell + "'; see " +
                      plan_hint(o.out) + ")");
  }
  const Cell& c = *it->second;
  for (const auto& need : detail::cell_dependencies(c)) {
    const auto dep = by_id.find(need);
    if (dep == by_id.end() || !cell_done(o.out, *dep->second)) {
      return make_error("--cell " + c.id() + " needs cell " + need + ", which has not finished in " + o.out.string() +
                        " (run --cell " + need + " first: its stage of " + plan_hint(o.out) + " comes earlier)");
    }
  }
  if (cell_done(o.out, c)) {
    o.say("experiment: cell " + c.id() + " is done already in " + o.out.string());
    return result;
  }
  Progress progress(o.say, c.cost);
  progress.set_cells(1);
  std::map<std::string, std::string> failures;
  if (c.mode == "centralized") {
    run_centralized_with_progress(setup, c, progress, failures);
  } else {
    run_federated(o, setup.budget, {c}, own_consortium(o.out, c), {c.source, c.target}, progress, failures);
  }
  const auto failure_file = cell_failure_file(o.out, c);
  if (const auto why = failures.find(c.name()); why != failures.end()) {
    result.failed = 1;
    if (auto st = files::write_atomically(failure_file, why->second); !st) log::get("experiment")->warn("{}", st.error().message);
  } else if (auto st = files::remove_durably(failure_file); !st) {
    log::get("experiment")->warn("{}", st.error().message);
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

}  // namespace

Result<ExperimentResult> run_experiment(const ExperimentOptions& options) {
  const auto start = Clock::now();
  auto setup = set_up(options);
  if (!setup) return setup.error();
  return setup->o.cell.empty() ? run_grid(*setup, start) : run_one_cell(*setup, start);
}

Result<ExperimentPlan> write_experiment_plan(const ExperimentOptions& options, const fs::path& dir,
                                             const std::function<std::string(const std::string&)>& command) {
  auto setup = set_up(options);
  if (!setup) return setup.error();
  auto plan = detail::write_plan_files(setup->grid, dir, command, options.threads);
  if (!plan) return plan.error();
  // Where the plan is, for the refusals of --cell (an unknown cell, one that must wait).
  const json record = {{"dir", fs::absolute(dir).lexically_normal().string()}, {"cells", plan->cells}, {"stages", plan->stages}};
  if (auto st = files::write_atomically(setup->o.out / "plan.json", record.dump(2) + "\n"); !st) return st.error();
  return plan;
}

}  // namespace fedda::experiment
