#include "fedda/common/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

namespace fedda::files {
namespace fs = std::filesystem;
namespace {

fs::path temporary_beside(const fs::path& path) {
  static std::atomic<unsigned> counter{0};
  std::random_device rd;
  const std::string tag = std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
                          std::to_string(rd() % 100000);
  // Keep the full extension (".nii.gz") so format-sniffing writers still work.
  const std::string name = path.filename().string();
  const auto dot = name.find('.');
  const std::string stem = dot == std::string::npos ? name : name.substr(0, dot);
  const std::string ext = dot == std::string::npos ? "" : name.substr(dot);
  return path.parent_path() / ("." + stem + ".tmp-" + tag + ext);
}

Status fsync_file(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return make_error("cannot open " + path.string() + " to sync: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return make_error("cannot sync " + path.string() + ": " + std::strerror(errno));
  return Status::success();
}

}  // namespace

Status write_via_temporary(const fs::path& path,
                           const std::function<Status(const fs::path&)>& write) {
  std::error_code ec;
  if (!path.parent_path().empty()) {
    fs::create_directories(path.parent_path(), ec);
    if (ec) return make_error("cannot create folder " + path.parent_path().string() + ": " + ec.message());
  }
  const fs::path tmp = temporary_beside(path);
  Status written = write(tmp);
  if (written) written = fsync_file(tmp);
  if (!written) {
    fs::remove(tmp, ec);
    return written;
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return make_error("cannot move " + tmp.string() + " to " + path.string() + ": " + ec.message());
  }
  // The rename is durable only once the folder's entry is: without this a power cut can bring
  // back the old file after the caller acted on the new one (deleted what it replaced, say).
  return sync_folder(path.parent_path().empty() ? fs::path(".") : path.parent_path());
}

Status sync_folder(const fs::path& folder) {
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return make_error("cannot open folder " + folder.string() + " to sync: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return make_error("cannot sync folder " + folder.string() + ": " + std::strerror(errno));
  return Status::success();
}

Status remove_durably(const fs::path& path) {
  std::error_code ec;
  if (!fs::remove(path, ec)) {
    if (ec) return make_error("cannot remove " + path.string() + ": " + ec.message());
    return Status::success();
  }
  return sync_folder(path.parent_path().empty() ? fs::path(".") : path.parent_path());
}

Status write_atomically(const fs::path& path, const std::string& contents) {
  return write_via_temporary(path, [&](const fs::path& tmp) -> Status {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return make_error("cannot open " + tmp.string() + " for writing");
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
    out.close();
    if (!out) return make_error("cannot write " + tmp.string() + " (disk full?)");
    return Status::success();
  });
}

Status write_secret(const fs::path& path, const std::string& contents) {
  return write_via_temporary(path, [&](const fs::path& tmp) -> Status {
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) return make_error("cannot create " + tmp.string() + ": " + std::strerror(errno));
    std::size_t written = 0;
    while (written < contents.size()) {
      const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
      if (n <= 0) {
        ::close(fd);
        return make_error("cannot write " + tmp.string() + ": " + std::strerror(errno));
      }
      written += static_cast<std::size_t>(n);
    }
    ::close(fd);
    return Status::success();
  });
}

Result<std::string> read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error("cannot open " + path.string() + ": " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return make_error("cannot read " + path.string());
  return ss.str();
}

}  // namespace fedda::files
