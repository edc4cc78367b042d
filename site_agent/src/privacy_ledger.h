#pragma once
// The site's record of what it has released under differential privacy, per job: the DP-SGD
// steps that touched its patients, with the mechanism they ran under. Kept in
// cache_dir/privacy/<job>.json, written (temporary file, fsync, rename) before a round's update
// leaves, so a restarted agent, or a round the coordinator asks for again, counts on from it:
// epsilon is never computed from round numbers the coordinator chooses. Not thread-safe.

#include <filesystem>
#include <string>

#include "fedda/common/result.h"
#include "fedda/models/federated.h"

namespace fedda::site_agent {

// The steps released on `job` so far (0 when none). Refused when the ledger was kept under
// another mechanism (noise, sample rate or delta): one epsilon cannot be added up over two.
Result<long long> read_privacy_ledger(const std::filesystem::path& cache_dir, const std::string& job,
                                      const models::DpGuarantee& dp);
Status write_privacy_ledger(const std::filesystem::path& cache_dir, const std::string& job,
                            const models::DpGuarantee& dp, long long steps, double epsilon);

}  // namespace fedda::site_agent
