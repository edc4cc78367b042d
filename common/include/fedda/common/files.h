#pragma once
// File helpers that never leave half-written output behind.

#include <filesystem>
#include <functional>
#include <string>

#include "fedda/common/result.h"

namespace fedda::files {

// Writes `contents` to `path` through a temporary file in the same folder, fsyncs it, renames
// it into place and fsyncs the folder, so readers see either the old file or the whole new one,
// and once it returns the new one survives a power cut.
Status write_atomically(const std::filesystem::path& path, const std::string& contents);

// Calls `write(tmp_path)` to produce a file at a temporary name beside `path` (same extension,
// so writers that choose a format from it still work), then renames it into place. On failure
// the temporary file is removed and `path` is left untouched.
Status write_via_temporary(const std::filesystem::path& path,
                           const std::function<Status(const std::filesystem::path&)>& write);

// write_atomically for secrets: the file is created mode 0600 and never exists with wider
// permissions, not even under its temporary name.
Status write_secret(const std::filesystem::path& path, const std::string& contents);

Result<std::string> read_all(const std::filesystem::path& path);

// fsync of a folder: makes the renames and removals inside it durable.
Status sync_folder(const std::filesystem::path& folder);
// Removes a file (nothing when it is absent) and syncs its folder.
Status remove_durably(const std::filesystem::path& path);

}  // namespace fedda::files
