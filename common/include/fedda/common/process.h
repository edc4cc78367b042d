#pragma once
// Starting another program without a shell (posix_spawn): the local consortium's agents and
// coordinator, dcm2niix for DICOM series. Its stdout and stderr go to a log file.

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

#include "fedda/common/result.h"

namespace fedda::process {

struct SpawnOptions {
  bool append_log = true;    // false: the log file is truncated first
  bool search_path = false;  // true: argv[0] is looked up in PATH (posix_spawnp)
};

// Starts argv (no shell) with stdin from /dev/null and stdout + stderr to `log_file`; its pid,
// or an error naming the program.
Result<pid_t> spawn(const std::vector<std::string>& argv, const std::filesystem::path& log_file,
                    const SpawnOptions& options = {});

// Waits for `pid` (through EINTR): its exit status, or -1 when a signal ended it.
int wait_for(pid_t pid);

}  // namespace fedda::process
