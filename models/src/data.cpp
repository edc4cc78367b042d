#include "data.h"

#include <algorithm>
#include <cstdlib>
#include <list>
#include <mutex>
#include <optional>
#include <sstream>

#include "augment.h"
#include "fedda/imaging/nifti_io.h"

namespace fedda::models {

namespace {

torch::Tensor image_tensor(const imaging::Image& image) {
  const auto& n = image.geometry.size;
  return torch::from_blob(const_cast<float*>(image.voxels.data()),
                          {static_cast<int64_t>(n[2]), static_cast<int64_t>(n[1]), static_cast<int64_t>(n[0])},
                          torch::kFloat32)
      .clone();
}

// Preprocessed scans, kept for the life of the process: a site agent runs many jobs over the
// same scans and the experiment grid adapts to the same subjects many times, while reading and
// preprocessing a scan costs far more than a training step on it. The key holds each file's
// path, size and modification time and the grid, so a changed file is read again. Least
// recently used scans go first once FEDDA_SCAN_CACHE_MB (default 2048; 0 turns it off) is
// exceeded. Entries share their tensors with the scans handed out, which nobody writes to.
class ScanMemo {
 public:
  static ScanMemo& instance() {
    static ScanMemo memo;
    return memo;
  }
  std::optional<ScanSlices> find(const std::string& key) {
    std::lock_guard lock(mutex_);
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->first == key) {
        entries_.splice(entries_.begin(), entries_, it);
        return it->second;
      }
    }
    return std::nullopt;
  }
  void add(const std::string& key, const ScanSlices& scan) {
    const auto cost = bytes(scan);
    if (cost > budget_) return;
    std::lock_guard lock(mutex_);
    entries_.emplace_front(key, scan);
    used_ += cost;
    while (used_ > budget_ && !entries_.empty()) {
      used_ -= bytes(entries_.back().second);
      entries_.pop_back();
    }
  }

 private:
  ScanMemo() {
    const char* mb = std::getenv("FEDDA_SCAN_CACHE_MB");
    budget_ = (mb ? std::strtoull(mb, nullptr, 10) : 2048ull) << 20;
  }
  static std::size_t bytes(const ScanSlices& s) {
    std::size_t n = s.images.numel() * s.images.element_size() + s.brain.numel();
    if (s.labels.defined()) n += s.labels.numel() * s.labels.element_size();
    return n;
  }
  std::mutex mutex_;
  std::list<std::pair<std::string, ScanSlices>> entries_;
  std::size_t used_ = 0, budget_ = 0;
};

// Empty when a file cannot be stat'ed (load_scan then reports it).
std::string memo_key(const imaging::SubjectFiles& files, const GridSpec& grid, bool with_labels) {
  std::ostringstream key;
  auto add = [&](const std::filesystem::path& p) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(p, ec);
    if (ec) return false;
    const auto time = std::filesystem::last_write_time(p, ec);
    if (ec) return false;
    key << p.string() << '|' << size << '|' << time.time_since_epoch().count() << '|';
    return true;
  };
  if (!add(files.flair) || !add(files.t1)) return {};
  if (with_labels && (!files.labels || !add(*files.labels))) return {};
  key << files.clinic << '/' << files.subject << '|' << grid.in_plane_size[0] << 'x' << grid.in_plane_size[1] << '@'
      << grid.in_plane_spacing[0] << 'x' << grid.in_plane_spacing[1] << '|' << with_labels;
  return key.str();
}

Result<ScanSlices> read_scan(const imaging::SubjectFiles& files, const GridSpec& grid, bool with_labels) {
  const std::string id = files.clinic + "/" + files.subject;
  if (with_labels && !files.labels) return make_error(id + ": no labels (wmh.nii.gz) for a labelled role");
  auto subject = imaging::read_subject(files.flair, files.t1, with_labels ? files.labels : std::nullopt);
  if (!subject) return subject.error();
  auto pre = imaging::preprocess(subject->flair, subject->t1, grid);
  if (!pre) return make_error(id + ": " + pre.error().message);
  ScanSlices s;
  s.id = id;
  s.original = pre->original;
  s.grid = pre->grid;
  s.images = torch::stack({image_tensor(pre->flair), image_tensor(pre->t1)}, 1).contiguous();
  const auto& n = pre->grid.size;
  const std::size_t plane = n[0] * n[1];
  s.brain = torch::from_blob(pre->mask.voxels.data(),
                             {static_cast<int64_t>(n[2]), static_cast<int64_t>(n[1]), static_cast<int64_t>(n[0])},
                             torch::kUInt8)
                .ne(0);
  for (std::size_t z = 0; z < n[2]; ++z) {
    const auto* m = &pre->mask.voxels[z * plane];
    if (std::any_of(m, m + plane, [](auto v) { return v != 0; })) s.brain_slices.push_back(static_cast<int>(z));
  }
  if (s.brain_slices.empty()) return make_error(id + ": no brain found in " + files.flair.string());
  if (with_labels) {
    const auto labels = imaging::resample_labels(*subject->labels, pre->grid);
    std::vector<int64_t> values(labels.voxels.begin(), labels.voxels.end());
    s.labels = torch::tensor(values, torch::kInt64).reshape({static_cast<int64_t>(n[2]), static_cast<int64_t>(n[1]),
                                                              static_cast<int64_t>(n[0])});
    for (std::size_t z = 0; z < n[2]; ++z) {
      const auto* l = &labels.voxels[z * plane];
      if (std::any_of(l, l + plane, [](auto v) { return v == imaging::kWmh; })) s.lesion_slices.push_back(static_cast<int>(z));
    }
  }
  return s;
}

}  // namespace

Result<ScanSlices> load_scan(const imaging::SubjectFiles& files, const GridSpec& grid, bool with_labels) {
  const auto key = memo_key(files, grid, with_labels);
  if (!key.empty()) {
    if (auto hit = ScanMemo::instance().find(key)) return std::move(*hit);
  }
  auto scan = read_scan(files, grid, with_labels);
  if (scan && !key.empty()) ScanMemo::instance().add(key, *scan);
  return scan;
}

Result<std::vector<ScanSlices>> load_scans(const std::vector<imaging::SubjectFiles>& files,
                                           const GridSpec& grid, bool with_labels) {
  std::vector<ScanSlices> out;
  for (const auto& f : files) {
    auto s = load_scan(f, grid, with_labels);
    if (!s) return s.error();
    out.push_back(std::move(*s));
  }
  return out;
}

namespace {

Batch to_device(const SliceBatch& s, const torch::Device& device) {
  Batch out;
  out.images = s.images.to(device);
  if (s.labels.defined()) out.labels = s.labels.to(device);
  if (s.p.defined()) out.soft = torch::stack({1 - s.p, s.p}, 1).to(device);
  return out;
}

}  // namespace

Batch sample_batch(const std::vector<ScanSlices>& scans, int batch, double lesion_fraction, const Recipe& recipe,
                   std::mt19937_64& rng, const torch::Device& device) {
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<torch::Tensor> images, labels, soft;
  const bool has_labels = scans.front().labels.defined();
  const bool has_soft = scans.front().soft.defined();
  // The classic recipe draws flips and jitter slice by slice, as fedda did before recipes, so
  // that its runs replay; every other recipe augments the drawn batch (augment.h).
  const bool classic = classic_augmentation(recipe);
  const bool jitter = classic && (recipe.mirror_probability > 0 || recipe.jitter_sd > 0);
  for (int b = 0; b < batch; ++b) {
    const auto& scan = scans[static_cast<std::size_t>(uniform(rng) * scans.size())];
    const bool want_lesion = !scan.lesion_slices.empty() && uniform(rng) < lesion_fraction;
    const auto& pool = want_lesion ? scan.lesion_slices : scan.brain_slices;
    const int z = pool[static_cast<std::size_t>(uniform(rng) * pool.size())];
    auto image = scan.images[z].clone();
    torch::Tensor label = has_labels ? scan.labels[z] : torch::Tensor();
    torch::Tensor p = has_soft ? scan.soft[z].to(torch::kFloat32) : torch::Tensor();
    if (jitter) {
      if (uniform(rng) < recipe.mirror_probability) {
        image = image.flip({2});
        if (label.defined()) label = label.flip({1});
        if (p.defined()) p = p.flip({1});
      }
      for (int c = 0; c < image.size(0); ++c) {
        image[c].mul_(1.0 + recipe.jitter_sd * normal(rng)).add_(recipe.jitter_sd * normal(rng));
      }
    }
    images.push_back(image);
    if (label.defined()) labels.push_back(label);
    if (p.defined()) soft.push_back(p);
  }
  SliceBatch slices;
  slices.images = torch::stack(images);
  if (!labels.empty()) slices.labels = torch::stack(labels);
  if (!soft.empty()) slices.p = torch::stack(soft);
  if (!classic) {
    augment_slices(slices, recipe, rng);
    crop_patches(slices, static_cast<int>(recipe.patch_size), recipe.foreground_fraction, rng);
  }
  return to_device(slices, device);
}

Batch sample_batch(const std::vector<ScanSlices>& scans, int batch, double lesion_fraction, bool augment,
                   std::mt19937_64& rng, const torch::Device& device) {
  Recipe recipe;
  if (!augment) recipe.mirror_probability = recipe.jitter_sd = 0;
  return sample_batch(scans, batch, lesion_fraction, recipe, rng, device);
}

}  // namespace fedda::models
