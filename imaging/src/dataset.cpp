#include "fedda/imaging/dataset.h"

#include <algorithm>

namespace fedda::imaging {
namespace fs = std::filesystem;
namespace {

std::vector<fs::path> sorted_folders(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_directory(ec) && entry.path().filename().string().rfind('.', 0) != 0) {
      out.push_back(entry.path());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

void collect_clinic(const fs::path& clinic_dir, std::vector<SubjectFiles>& out) {
  std::error_code ec;
  for (const auto& subject_dir : sorted_folders(clinic_dir)) {
    SubjectFiles s;
    s.clinic = clinic_dir.filename().string();
    s.subject = subject_dir.filename().string();
    s.flair = subject_dir / "pre" / "FLAIR.nii.gz";
    s.t1 = subject_dir / "pre" / "T1.nii.gz";
    if (!fs::exists(s.flair, ec)) continue;
    if (fs::exists(subject_dir / "wmh.nii.gz", ec)) s.labels = subject_dir / "wmh.nii.gz";
    out.push_back(std::move(s));
  }
}

}  // namespace

Result<std::vector<SubjectFiles>> find_subjects(const fs::path& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return make_error(root.string() + ": no such data folder");
  std::vector<SubjectFiles> out;
  for (const auto& clinic_dir : sorted_folders(root)) collect_clinic(clinic_dir, out);
  if (out.empty()) {
    return make_error(root.string() +
                      ": no subjects found (expected <clinic>/<subject>/pre/FLAIR.nii.gz)");
  }
  return out;
}

Result<std::vector<SubjectFiles>> find_clinic_subjects(const fs::path& root, const std::string& clinic) {
  std::error_code ec;
  const fs::path dir = root / clinic;
  if (!fs::is_directory(dir, ec)) return make_error(dir.string() + ": no such clinic folder");
  std::vector<SubjectFiles> out;
  collect_clinic(dir, out);
  if (out.empty()) {
    return make_error(dir.string() + ": no subjects found (expected <subject>/pre/FLAIR.nii.gz)");
  }
  return out;
}

FoldSplit split_fold(const std::vector<SubjectFiles>& subjects, int fold) {
  const std::size_t half = subjects.size() / 2;
  std::vector<SubjectFiles> first(subjects.begin(), subjects.begin() + half), second(subjects.begin() + half, subjects.end());
  return fold == 0 ? FoldSplit{first, second} : FoldSplit{second, first};
}

}  // namespace fedda::imaging
