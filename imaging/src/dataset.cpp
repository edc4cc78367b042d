#include "fedda/imaging/dataset.h"

#include <algorithm>

#include "layout_detail.h"

namespace fedda::imaging {
namespace fs = std::filesystem;
namespace detail {

std::vector<fs::path> sorted_entries(const fs::path& dir, bool folders) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().filename().string().rfind('.', 0) == 0) continue;
    if (entry.is_directory(ec) == folders) out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void collect_wmh_clinic(const fs::path& clinic_dir, const std::string& clinic, std::vector<SubjectFiles>& out,
                        std::vector<IgnoredFile>* ignored) {
  std::error_code ec;
  for (const auto& subject_dir : sorted_entries(clinic_dir, true)) {
    SubjectFiles s;
    s.clinic = clinic;
    s.subject = subject_dir.filename().string();
    s.flair = subject_dir / "pre" / "FLAIR.nii.gz";
    s.t1 = subject_dir / "pre" / "T1.nii.gz";
    if (!fs::exists(s.flair, ec)) {
      if (ignored) ignored->push_back({subject_dir, "no pre/FLAIR.nii.gz: not a subject folder"});
      continue;
    }
    if (fs::exists(subject_dir / "wmh.nii.gz", ec)) s.labels = subject_dir / "wmh.nii.gz";
    out.push_back(std::move(s));
  }
}

}  // namespace detail

Result<std::vector<SubjectFiles>> find_subjects(const fs::path& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return make_error(root.string() + ": no such data folder");
  std::vector<SubjectFiles> out;
  for (const auto& clinic_dir : detail::sorted_entries(root, true)) detail::collect_wmh_clinic(clinic_dir, clinic_dir.filename().string(), out);
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
  detail::collect_wmh_clinic(dir, clinic, out);
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
