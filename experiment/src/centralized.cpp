#include "fedda/experiment/centralized.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fedda/common/files.h"
#include "fedda/common/log.h"
#include "fedda/imaging/dataset.h"
#include "fedda/models_core/precision.h"
#include "fedda/common/protocol.h"

namespace fedda::experiment {
namespace fs = std::filesystem;
using imaging::SubjectFiles;

namespace {

// curve.csv: loss per epoch of every stage, and the test half's mean Dice where it was scored.
struct Curve {
  std::ostringstream csv;
  Curve() { csv << "stage,epoch,loss,seconds,slices_per_second,test_dsc,learning_rate,data_wait_share\n"; }
  models::ProgressFn recorder(const std::string& stage) {
    return [this, stage](const models::EpochReport& e) {
      csv << stage << "," << e.epoch << "," << e.loss << "," << e.seconds << "," << e.slices_per_second << ","
          << (std::isfinite(e.curve_dsc) ? std::to_string(e.curve_dsc) : std::string()) << "," << e.learning_rate << ","
          << e.data_wait_share << "\n";
      log::get("centralized")
          ->info("{} epoch {}: loss {:.4f}, lr {:.3g}, {:.1f} s, {:.1f} slices/s, {:.1f}% waiting for data{}{}", stage,
                 e.epoch, e.loss, e.learning_rate, e.seconds, e.slices_per_second, 100 * e.data_wait_share,
                 std::isfinite(e.curve_dsc) ? ", test Dice " + std::to_string(e.curve_dsc) : "",
                 std::isfinite(e.curve_dsc_unaveraged)
                     ? " (averaged weights; as trained " + std::to_string(e.curve_dsc_unaveraged) + ")"
                     : "");
    };
  }
};

Result<std::vector<SubjectFiles>> labelled_clinic(const fs::path& data, const std::string& clinic) {
  auto subjects = imaging::find_clinic_subjects(data, clinic);
  if (!subjects) return subjects.error();
  for (const auto& s : *subjects) {
    if (!s.labels) return make_error(clinic + "/" + s.subject + ": no wmh.nii.gz, but the source clinic must be labelled");
  }
  return subjects;
}

Status train_or_reuse(const fs::path& path, const std::function<Result<models::TrainReport>()>& train) {
  std::error_code ec;
  if (fs::exists(path, ec)) {
    auto spec = models::read_model_spec(path);
    if (spec) {
      log::get("centralized")->info("reusing {}", path.string());
      return Status::success();
    }
    log::get("centralized")->warn("{}; training it again", spec.error().message);
  }
  auto report = train();
  if (!report) return report.error();
  return Status::success();
}

// A method the harness knows, fold 0 or 1, and a target other than the source (but for lbound).
Status check_options(const CentralizedOptions& o) {
  const auto& methods = centralized_methods();
  if (std::find(methods.begin(), methods.end(), o.method) == methods.end()) {
    std::string names;
    for (const auto& m : methods) names += (names.empty() ? "" : ", ") + m;
    return make_error("unknown method '" + o.method + "' (choose " + names + ")");
  }
  const bool lbound = o.method == "lbound" || o.method == "lbound-aug";
  if (o.fold != 0 && o.fold != 1) return make_error("fold must be 0 or 1");
  if (o.source == o.target && !lbound) {
    return make_error("source and target must differ (except for lbound, the in-domain teacher reference)");
  }
  return Status::success();
}

// results.csv (a row per scored subject), curve.csv and summary.json in o.out; fills
// result.mean_dsc (NaN when no subject's Dice is defined).
Status write_outputs(const CentralizedOptions& o, CentralizedResult& result, const Curve& curve) {
  std::ostringstream csv;
  csv << protocol::kResultsCsvHeader << "\n";
  double dsc_sum = 0;
  int dsc_count = 0;
  for (const auto& r : result.rows) {
    const auto& m = r.metrics;
    csv << protocol::csv_line({o.source, o.target, o.fold, o.method, "centralized", r.subject, m.dsc, m.h95, m.avd,
                               m.recall, m.f1});
    if (std::isfinite(m.dsc)) {
      dsc_sum += m.dsc;
      ++dsc_count;
    }
  }
  result.mean_dsc = dsc_count ? dsc_sum / dsc_count : std::nan("");
  nlohmann::json summary = {{"source", o.source}, {"target", o.target}, {"fold", o.fold},
                            {"method", o.method}, {"mode", "centralized"},
                            {"subjects", result.rows.size()}, {"seconds", result.seconds},
                            {"mean_dsc", dsc_count ? nlohmann::json(result.mean_dsc) : nlohmann::json()}};
  if (auto p = models::choose_precision(o.adaptation.precision, o.adaptation.device)) {
    summary["precision"] = p->name();
    summary["precision_reason"] = p->reason;
  }
  if (auto w = files::write_atomically(o.out / "results.csv", csv.str()); !w) return w;
  if (auto w = files::write_atomically(o.out / "curve.csv", curve.csv.str()); !w) return w;
  return files::write_atomically(o.out / "summary.json", summary.dump(2) + "\n");
}

}  // namespace

std::pair<std::vector<SubjectFiles>, std::vector<SubjectFiles>> split_fold(const std::vector<SubjectFiles>& target,
                                                                          int fold) {
  auto split = imaging::split_fold(target, fold);
  return {std::move(split.adapt), std::move(split.test)};
}

Result<CentralizedResult> run_centralized(const CentralizedOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  if (auto st = check_options(o); !st) return st.error();
  const bool lbound = o.method == "lbound" || o.method == "lbound-aug";
  const bool in_domain = o.source == o.target;
  auto source = labelled_clinic(o.data, o.source);
  if (!source) return source.error();
  auto target = labelled_clinic(o.data, o.target);  // test subjects need labels to be scored
  if (!target) return target.error();
  if (target->size() < 2) return make_error(o.target + ": needs at least 2 subjects to split into folds");
  const auto [adapt, test] = experiment::split_fold(*target, o.fold);
  // In domain, the teacher learns from the fold's first half and is tested on the other.
  if (in_domain) *source = adapt;

  Curve curve;
  const fs::path teacher = o.teacher_model.empty() ? o.out / "teacher.pt" : o.teacher_model;
  // In domain, the teacher's learning curve is its Dice on the source's own held-out half.
  auto teacher_config = o.teacher;
  if (in_domain && o.curve_every > 0) {
    teacher_config.curve_every = o.curve_every;
    teacher_config.curve_subjects = test;
  }
  if (o.method != "ubound" || o.ubound_from_teacher) {  // every other method starts from the source teacher
    if (auto st = train_or_reuse(teacher, [&] {
          return models::train_supervised(*source, teacher_config, teacher, "teacher", curve.recorder("teacher"));
        });
        !st) {
      return st.error();
    }
  }

  // Learning curves on the test half: the adaptation (and a U-bound) scored every few epochs.
  auto adaptation = o.adaptation;
  if (o.curve_every > 0) {
    adaptation.curve_every = o.curve_every;
    adaptation.curve_subjects = test;
  }
  CentralizedResult result;
  auto score = [&](const fs::path& model, const std::vector<SubjectFiles>& subjects) -> Status {
    auto scores = models::evaluate_model(model, subjects, o.adaptation.device, o.adaptation.precision,
                                         o.adaptation.test_time_mirroring);
    if (!scores) return scores.error();
    for (const auto& s : *scores) result.rows.push_back({s.subject, s.metrics});
    return Status::success();
  };
  const fs::path model = o.out / "model.pt";
  Status st;
  if (lbound) {
    st = files::write_atomically(model, *files::read_all(teacher));
    if (st) st = score(model, test);
  } else if (o.method == "ubound") {
    std::vector<SubjectFiles> labelled = *source;
    labelled.insert(labelled.end(), adapt.begin(), adapt.end());
    // From scratch like the teacher, with the teacher's budget; or from the teacher like kd and ada.
    auto config = o.teacher;
    if (o.ubound_from_teacher) {
      config = adaptation;
      config.init_model = teacher;
    }
    auto r = models::train_supervised(labelled, config, model, "ubound", curve.recorder("ubound"));
    st = r ? score(model, test) : Status(r.error());
  } else if (o.method == "kd" || o.method == "kd-noisy") {
    auto r = models::train_kd(teacher, *source, adapt, adaptation, model, curve.recorder("kd"));
    st = r ? score(model, test) : Status(r.error());
  } else if (o.method == "ada") {
    auto r = models::train_ada(teacher, *source, adapt, adaptation, model, curve.recorder("ada"));
    st = r ? score(model, test) : Status(r.error());
  } else if (o.method == "kd-from-ada") {
    const fs::path ada = o.ada_model.empty() ? o.out / "ada-teacher.pt" : o.ada_model;
    st = train_or_reuse(ada, [&] { return models::train_ada(teacher, *source, adapt, adaptation, ada, curve.recorder("ada")); });
    if (st) {
      auto r = models::train_kd(ada, *source, adapt, adaptation, model, curve.recorder("kd"));
      st = r ? score(model, test) : Status(r.error());
    }
  } else {  // on the fly: one adaptation per test subject
    for (const auto& subject : test) {
      const fs::path per_subject = o.out / "otf" / (subject.subject + ".pt");
      auto per = adaptation;
      if (o.curve_every > 0) per.curve_subjects = {subject};
      auto r = o.method == "otf-kd"
                   ? models::train_kd(teacher, *source, {subject}, per, per_subject, curve.recorder("kd-" + subject.subject))
                   : models::train_ada(teacher, *source, {subject}, per, per_subject,
                                       curve.recorder("ada-" + subject.subject));
      st = r ? score(per_subject, {subject}) : Status(r.error());
      if (!st) break;
    }
  }
  if (!st) return st.error();

  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (auto w = write_outputs(o, result, curve); !w) return w.error();
  return result;
}

}  // namespace fedda::experiment
