#pragma once
// What this site's machine offers, read at each hello (protocol::SiteResources): the logical
// processors the agent may run on, physical memory, free space in the cache folder, the GPUs
// the NVIDIA driver lists and the precision the agent computes in. A figure that cannot be read
// is -1; nothing here fails.

#include <filesystem>
#include <string>
#include <vector>

#include "fedda/common/protocol.h"

namespace fedda::site_agent {

// `precision` and `device` as site.yaml gives them: "auto" is resolved as training would.
protocol::SiteResources site_resources(const std::filesystem::path& cache_dir, const std::string& device,
                                       const std::string& precision);

// The GPU models under `driver_dir` (/proc/driver/nvidia/gpus: one folder per GPU, each with an
// `information` file whose "Model:" line names it), sorted by folder; empty where there is none.
std::vector<std::string> nvidia_gpus(const std::filesystem::path& driver_dir = "/proc/driver/nvidia/gpus");

}  // namespace fedda::site_agent
