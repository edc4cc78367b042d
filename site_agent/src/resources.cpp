#include "resources.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <system_error>
#include <thread>

#include "fedda/models_core/precision.h"

namespace fedda::site_agent {
namespace {

int usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : -1;
}

std::int64_t physical_memory() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<std::int64_t>(pages) * page : -1;
}

std::int64_t free_space(const std::filesystem::path& dir) {
  std::error_code ec;
  // The cache folder may not exist before the first job: its nearest existing parent holds it.
  std::filesystem::path at = dir.empty() ? std::filesystem::current_path(ec) : dir;
  while (!at.empty() && !std::filesystem::exists(at, ec) && at.has_parent_path() && at.parent_path() != at) {
    at = at.parent_path();
  }
  const auto space = std::filesystem::space(at, ec);
  return ec ? -1 : static_cast<std::int64_t>(space.available);
}

std::string trimmed(std::string s) {
  const auto first = s.find_first_not_of(" \t\r");
  if (first == std::string::npos) return "";
  const auto last = s.find_last_not_of(" \t\r");
  return s.substr(first, last - first + 1);
}

}  // namespace

std::vector<std::string> nvidia_gpus(const std::filesystem::path& driver_dir) {
  std::error_code ec;
  std::vector<std::filesystem::path> folders;
  for (const auto& entry : std::filesystem::directory_iterator(driver_dir, ec)) folders.push_back(entry.path());
  std::sort(folders.begin(), folders.end());
  std::vector<std::string> models;
  for (const auto& folder : folders) {
    std::ifstream in(folder / "information");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("Model:", 0) != 0) continue;
      // Written as a protocol line: what is not printable UTF-8 is repaired when sent (protocol.h).
      const std::string model = trimmed(line.substr(6));
      if (!model.empty()) models.push_back(model);
      break;
    }
  }
  return models;
}

protocol::SiteResources site_resources(const std::filesystem::path& cache_dir, const std::string& device,
                                       const std::string& precision) {
  protocol::SiteResources r;
  r.cores = usable_cores();
  r.memory_bytes = physical_memory();
  r.cache_free_bytes = free_space(cache_dir);
  r.gpus = nvidia_gpus();
  const auto choice = models::choose_precision(precision, device);
  r.precision = choice ? choice->name() : precision;
  return r;
}

}  // namespace fedda::site_agent
