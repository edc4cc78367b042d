#pragma once
// Job files (YAML), as a consortium operator writes them; examples in configs/jobs/.
//
//   id: kd-utrecht                 # unique; names the job's output folder
//   type: kd                       # teacher | kd | ada | evaluate
//   source: utrecht                # labelled source clinic
//   sites: [utrecht, amsterdam, singapore]
//   teacher: job:teacher-utrecht   # kd/ada/evaluate: a model file, or job:<id> for another job's result
//   rounds: 4
//   sites_per_round: 10            # jobs naming many sites: train a sample of them each round
//   ...                            # every JobSpec field by name (see protocol.h)
//   model: {width: 16, depth: 4, norm: batch, upsample: nearest_conv,
//           grid_size: 128, grid_spacing: 1.5}   # teacher jobs: the architecture to train
//
// Unknown keys are errors (a typo must not silently fall back to a default).

#include <filesystem>
#include <string>

#include "fedda/common/protocol.h"
#include "fedda/common/result.h"

namespace fedda::coordinator {

struct JobDefinition {
  protocol::JobSpec spec;      // model_spec_json filled for teacher jobs with `model`
  std::string method;          // results.csv's method column: lbound (teacher), kd, ada, or the file's `method`
  std::string teacher;         // kd / ada / evaluate: model file path or "job:<id>"; teacher: optional start
  std::filesystem::path file;  // where it was read from
};

// Error names the file and the key at fault.
Result<JobDefinition> read_job_file(const std::filesystem::path& path);
// The same from text (a job submitted over the admin channel): `name` stands in for the file
// in messages; a relative teacher path is kept as written (the submitter resolves it).
Result<JobDefinition> parse_job_file(const std::string& text, const std::string& name);

}  // namespace fedda::coordinator
