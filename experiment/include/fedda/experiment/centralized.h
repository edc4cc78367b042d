#pragma once
// `fedda-sim centralized`: one cell of the seed paper's experiment, non-federated, as the
// reference the federated runs are compared with.
//
// The target clinic's subjects (sorted by id) are split in two halves. Fold 0 adapts on the
// first half and tests on the second; fold 1 the other way round. Methods:
//   lbound       teacher trained on the source clinic only
//   ubound       supervised on source + the adaptation half with its labels (teacher's budget)
//   kd           student distilled from the teacher on source + adaptation half (no labels)
//   ada          adversarial adaptation from the teacher, source labels + adaptation half
//   kd-from-ada  kd with the ada model as teacher
//   otf-kd, otf-ada  on the fly: each test subject adapted to separately, teacher fixed
//   lbound-aug   lbound, for a teacher whose recipe (`teacher`) augments heavily (BigAug):
//                no target data at all
//   kd-noisy     kd, for a student whose recipe (`adaptation`) augments heavily the slices the
//                teacher labelled clean (Noisy Student)
// lbound-aug and kd-noisy differ from lbound and kd only in the recipes they are given
// (experiment::cell_training gives the grid's; `fedda-sim centralized --profile` the same).
// Every method is scored on the test half with the five challenge metrics. With source ==
// target (lbound only), the teacher trains on one half of the clinic and is tested on the
// other: the in-domain reference.

#include <filesystem>
#include <string>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/models/engine.h"

namespace fedda::experiment {

struct CentralizedOptions {
  std::filesystem::path data;
  std::filesystem::path out;
  std::string source;
  std::string target;
  std::string method;
  int fold = 0;
  models::TrainConfig teacher;      // how the source teacher and the U-bound (both from scratch) train
  models::TrainConfig adaptation;   // how kd / ada adapt, starting from the teacher
  std::filesystem::path teacher_model;  // where the source teacher is kept and reused; default OUT/teacher.pt
  std::filesystem::path ada_model;      // kd-from-ada's teacher, kept and reused; default OUT/ada-teacher.pt
  bool ubound_from_teacher = false;     // U-bound fine-tunes the teacher with the adaptation budget
                                        // (like kd and ada) instead of training from scratch
  int curve_every = 0;                  // > 0: the test half scored every this many adaptation epochs
                                        // (curve.csv's test_dsc), a learning curve
};

struct CentralizedRow {
  std::string subject;
  imaging::CaseMetrics metrics;
};

struct CentralizedResult {
  std::vector<CentralizedRow> rows;
  double seconds = 0;
  double mean_dsc = 0;
};

inline const std::vector<std::string>& centralized_methods() {
  static const std::vector<std::string> m{"lbound", "ubound",  "ada",     "kd",      "kd-from-ada",
                                          "otf-kd", "otf-ada", "lbound-aug", "kd-noisy"};
  return m;
}

// Writes OUT/model.pt (OUT/otf/<subject>.pt on the fly), OUT/results.csv (columns
// source,target,fold,method,mode,subject,dsc,h95,avd,recall,f1), OUT/curve.csv (loss per
// epoch) and OUT/summary.json. The source teacher is kept as OUT/teacher.pt and reused when
// present.
Result<CentralizedResult> run_centralized(const CentralizedOptions& options);

// The split of the target clinic for a fold: {adaptation, test}.
std::pair<std::vector<imaging::SubjectFiles>, std::vector<imaging::SubjectFiles>> split_fold(
    const std::vector<imaging::SubjectFiles>& target, int fold);

}  // namespace fedda::experiment
