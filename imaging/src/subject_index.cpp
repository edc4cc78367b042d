#include "fedda/imaging/subject_index.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <set>
#include <sstream>

#include <regex>

#include <nlohmann/json.hpp>

#include "fedda/common/files.h"
#include "fedda/imaging/dicom.h"
#include "fedda/imaging/nifti_io.h"
#include "layout_detail.h"

namespace fedda::imaging {
namespace fs = std::filesystem;
using nlohmann::json;

const std::vector<std::string>& data_layouts() {
  static const std::vector<std::string> l{"wmh", "bids", "datalist", "dicom", "pacs"};
  return l;
}

const std::vector<std::string>& bids_filter_entities() {
  static const std::vector<std::string> e{"ses", "acq", "ce", "rec", "run", "part"};
  return e;
}

namespace {

void sort_subjects(SubjectIndex& index) {
  std::sort(index.subjects.begin(), index.subjects.end(),
            [](const SubjectFiles& a, const SubjectFiles& b) { return a.subject < b.subject; });
}

Result<SubjectIndex> index_wmh(const DataSource& s, const std::string& clinic) {
  SubjectIndex index;
  detail::collect_wmh_clinic(s.path, clinic, index.subjects, &index.ignored);
  if (index.subjects.empty()) {
    return make_error(s.path.string() + ": no subjects found (expected <subject>/pre/FLAIR.nii.gz)");
  }
  return index;
}

// A BIDS file name's entities and suffix: sub-01_ses-2_acq-3D_FLAIR.nii.gz ->
// {sub: 01, ses: 2, acq: 3D}, FLAIR. False when it is not of that form.
struct BidsName {
  std::map<std::string, std::string> entities;
  std::string suffix;
};
bool parse_bids_name(const fs::path& file, BidsName& out) {
  std::stringstream parts(detail::strip_nifti_extension(file.filename().string()));
  std::vector<std::string> tokens;
  for (std::string t; std::getline(parts, t, '_');) tokens.push_back(t);
  if (tokens.size() < 2) return false;
  out.suffix = tokens.back();
  tokens.pop_back();
  for (const auto& t : tokens) {
    const auto dash = t.find('-');
    if (dash == std::string::npos || dash == 0 || dash + 1 == t.size()) return false;
    out.entities[t.substr(0, dash)] = t.substr(dash + 1);
  }
  return out.entities.count("sub") == 1;
}

std::string entity(const BidsName& n, const std::string& key) {
  auto it = n.entities.find(key);
  return it == n.entities.end() ? std::string() : it->second;
}

std::string names_of(const std::vector<fs::path>& files) {
  std::string out;
  for (const auto& f : files) out += (out.empty() ? "" : ", ") + f.filename().string();
  return out;
}

// The one image of `suffix` in an anat folder that passes the filters; the others are listed in
// `ignored` with their reason. Error text when there is none or more than one.
Result<fs::path> pick_bids_image(const std::vector<fs::path>& files, const std::string& suffix,
                                 const std::map<std::string, std::string>& filters, std::vector<IgnoredFile>& ignored) {
  std::vector<fs::path> chosen;
  for (const auto& f : files) {
    BidsName n;
    if (!parse_bids_name(f, n) || n.suffix != suffix) continue;
    std::string mismatch;
    for (const auto& [key, value] : filters) {
      if (key != "ses" && entity(n, key) != value) {
        mismatch = key + "-" + (entity(n, key).empty() ? "(none)" : entity(n, key)) + " is not bids_filters' " + key + ": " + value;
        break;
      }
    }
    if (!mismatch.empty()) {
      ignored.push_back({f, mismatch});
      continue;
    }
    chosen.push_back(f);
  }
  if (chosen.empty()) return make_error("no " + suffix + " image");
  if (chosen.size() > 1) {
    return make_error(std::to_string(chosen.size()) + " " + suffix + " images (" + names_of(chosen) +
                      "): set bids_filters (acq, run, ...) in site.yaml to choose one");
  }
  return chosen.front();
}

Result<SubjectIndex> index_bids(const DataSource& s, const std::string& clinic) {
  std::error_code ec;
  if (!fs::exists(s.path / "dataset_description.json", ec)) {
    return make_error(s.path.string() + ": no dataset_description.json: not a BIDS dataset");
  }
  for (const auto& [key, value] : s.bids_filters) {
    const auto& known = bids_filter_entities();
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      return make_error("bids_filters: '" + key + "' is not one of ses, acq, ce, rec, run, part");
    }
  }
  const fs::path labels_root = s.bids_labels.empty() ? fs::path() : s.path / "derivatives" / s.bids_labels;
  if (!labels_root.empty() && !fs::is_directory(labels_root, ec)) {
    return make_error(labels_root.string() + ": bids_labels names no derivatives folder");
  }
  SubjectIndex index;
  const auto session_filter = s.bids_filters.count("ses") ? s.bids_filters.at("ses") : std::string();
  for (const auto& dir : detail::sorted_entries(s.path, true)) {
    const auto name = dir.filename().string();
    if (name.rfind("sub-", 0) != 0) continue;  // derivatives, code, sourcedata, ...
    const auto label = name.substr(4);
    // (folder, session) pairs: the subject's own anat/ or one per ses-* folder.
    std::vector<std::pair<fs::path, std::string>> units;
    for (const auto& sub : detail::sorted_entries(dir, true)) {
      const auto sub_name = sub.filename().string();
      if (sub_name.rfind("ses-", 0) != 0) continue;
      const auto session = sub_name.substr(4);
      if (!session_filter.empty() && session != session_filter) {
        index.ignored.push_back({sub, "session " + session + " is not bids_filters' ses: " + session_filter});
        continue;
      }
      units.emplace_back(sub, session);
    }
    if (units.empty() && fs::is_directory(dir / "anat", ec)) units.emplace_back(dir, "");
    if (units.empty()) {
      index.ignored.push_back({dir, "no anat/ folder"});
      continue;
    }
    for (const auto& [folder, session] : units) {
      const auto anat = folder / "anat";
      std::vector<fs::path> files;
      for (const auto& f : detail::sorted_entries(anat, false)) {
        if (!detail::has_nifti_extension(f)) continue;
        BidsName n;
        if (!parse_bids_name(f, n) || entity(n, "sub") != label || entity(n, "ses") != session) {
          index.ignored.push_back({f, "not a BIDS name of sub-" + label + (session.empty() ? "" : " ses-" + session)});
          continue;
        }
        if (n.suffix != "FLAIR" && n.suffix != "T1w") {
          index.ignored.push_back({f, "suffix " + n.suffix + " (fedda uses FLAIR and T1w)"});
          continue;
        }
        files.push_back(f);
      }
      SubjectFiles out;
      out.clinic = clinic;
      out.subject = label + (session.empty() || !session_filter.empty() ? "" : "_ses-" + session);
      auto flair = pick_bids_image(files, "FLAIR", s.bids_filters, index.ignored);
      auto t1 = pick_bids_image(files, "T1w", s.bids_filters, index.ignored);
      if (!flair || !t1) {
        const auto why = !flair ? flair.error().message : t1.error().message;
        index.ignored.push_back({anat, "subject " + out.subject + " skipped: " + why});
        continue;
      }
      out.flair = *flair;
      out.t1 = *t1;
      if (!labels_root.empty()) {
        const auto label_dir = labels_root / fs::relative(anat, s.path, ec);
        std::vector<fs::path> masks;
        for (const auto& f : detail::sorted_entries(label_dir, false)) {
          BidsName n;
          if (detail::has_nifti_extension(f) && parse_bids_name(f, n) && entity(n, "sub") == label && entity(n, "ses") == session &&
              (n.suffix == "mask" || n.suffix == "dseg")) {
            masks.push_back(f);
          }
        }
        if (masks.size() == 1) {
          out.labels = masks.front();
        } else if (masks.size() > 1) {
          index.ignored.push_back({label_dir, "subject " + out.subject + ": " + std::to_string(masks.size()) +
                                                  " label images (" + names_of(masks) + "); used unlabelled"});
        }
      }
      index.subjects.push_back(std::move(out));
    }
  }
  if (index.subjects.empty()) {
    return make_error(s.path.string() + ": no usable BIDS subject (expected sub-<label>/anat/sub-<label>_FLAIR.nii.gz "
                      "and _T1w.nii.gz)" + (index.ignored.empty() ? "" : "; first problem: " +
                      index.ignored.front().path.string() + ": " + index.ignored.front().reason));
  }
  sort_subjects(index);
  return index;
}

Result<SubjectIndex> index_datalist(const DataSource& s, const std::string& clinic) {
  std::ifstream in(s.path);
  if (!in) return make_error(s.path.string() + ": cannot read the datalist");
  json doc;
  try {
    doc = json::parse(in);
  } catch (const std::exception& e) {
    return make_error(s.path.string() + ": not JSON: " + e.what());
  }
  if (!doc.is_object()) return make_error(s.path.string() + ": a datalist is a JSON object");
  const auto base = s.path.parent_path();
  // Which channel of "image" is FLAIR and which T1.
  int flair_channel = 0, t1_channel = 1;
  for (const char* key : {"modality", "channel_names"}) {
    if (!doc.contains(key)) continue;
    if (!doc[key].is_object()) return make_error(s.path.string() + ": " + key + " must map channel numbers to names");
    flair_channel = t1_channel = -1;
    for (const auto& [channel, name] : doc[key].items()) {
      if (!name.is_string()) continue;
      const auto n = name.get<std::string>();
      int number = -1;
      try {
        number = std::stoi(channel);
      } catch (...) {
        return make_error(s.path.string() + ": " + key + ": '" + channel + "' is not a channel number");
      }
      if (n == "FLAIR" || n == "flair") flair_channel = number;
      if (n == "T1" || n == "T1w" || n == "t1") t1_channel = number;
    }
    if (flair_channel < 0 || t1_channel < 0) {
      return make_error(s.path.string() + ": " + key + " names no FLAIR or no T1 channel");
    }
  }
  SubjectIndex index;
  std::set<std::string> seen;
  const auto resolve = [&](const json& v) -> fs::path {
    const fs::path p(v.get<std::string>());
    return p.is_relative() ? (base / p).lexically_normal() : p;
  };
  bool any_list = false;
  for (const char* list : {"training", "validation", "test"}) {
    if (!doc.contains(list)) continue;
    any_list = true;
    if (!doc[list].is_array()) return make_error(s.path.string() + ": '" + list + "' must be a list");
    int position = 0;
    for (const auto& e : doc[list]) {
      const std::string where = std::string(list) + "[" + std::to_string(position++) + "]";
      const fs::path entry_path = s.path.string() + ": " + where;
      if (!e.is_object()) {
        index.ignored.push_back({entry_path, "not an object"});
        continue;
      }
      SubjectFiles f;
      f.clinic = clinic;
      try {
        if (e.contains("flair") || e.contains("t1")) {
          f.flair = resolve(e.at("flair"));
          f.t1 = resolve(e.at("t1"));
        } else {
          const auto& image = e.at("image");
          if (!image.is_array() || static_cast<int>(image.size()) <= std::max(flair_channel, t1_channel)) {
            index.ignored.push_back({entry_path, "'image' must list the FLAIR and the T1 files"});
            continue;
          }
          f.flair = resolve(image.at(flair_channel));
          f.t1 = resolve(image.at(t1_channel));
        }
        if (e.contains("label") && !e["label"].is_null()) f.labels = resolve(e["label"]);
        if (e.contains("subject")) {
          f.subject = e["subject"].is_string() ? e["subject"].get<std::string>() : e["subject"].dump();
        } else {
          f.subject = detail::strip_nifti_extension(f.flair.filename().string());
          if (f.subject.size() > 5 && f.subject.compare(f.subject.size() - 5, 5, "_0000") == 0) {
            f.subject.resize(f.subject.size() - 5);
          }
        }
      } catch (const std::exception& ex) {
        index.ignored.push_back({entry_path, std::string("needs flair and t1, or image: ") + ex.what()});
        continue;
      }
      std::error_code ec;
      std::string missing;
      for (const auto* p : {&f.flair, &f.t1}) {
        if (!fs::exists(*p, ec)) missing += (missing.empty() ? "" : ", ") + p->string();
      }
      if (f.labels && !fs::exists(*f.labels, ec)) missing += (missing.empty() ? "" : ", ") + f.labels->string();
      if (!missing.empty()) {
        index.ignored.push_back({entry_path, "subject " + f.subject + " skipped: missing " + missing});
        continue;
      }
      if (f.subject.empty() || f.subject.find('/') != std::string::npos || !seen.insert(f.subject).second) {
        index.ignored.push_back({entry_path, "subject id '" + f.subject + "' is empty, has a '/' or is listed twice"});
        continue;
      }
      index.subjects.push_back(std::move(f));
    }
  }
  if (!any_list) return make_error(s.path.string() + ": no 'training', 'validation' or 'test' list");
  if (index.subjects.empty()) {
    return make_error(s.path.string() + ": no usable subject" +
                      (index.ignored.empty() ? "" : "; first problem: " + index.ignored.front().path.string() + ": " +
                                                        index.ignored.front().reason));
  }
  sort_subjects(index);
  return index;
}

// Writes the label map at `labels` onto the grid of the image at `reference` (nearest voxel by
// physical position), or refuses when the two do not cover the same voxels.
Status place_labels(const fs::path& labels, const fs::path& reference, const fs::path& out) {
  std::error_code ec;
  // Placed before and neither the label map nor the converted scan changed since: reuse it.
  if (fs::exists(out, ec) && fs::last_write_time(out, ec) >= fs::last_write_time(labels, ec) &&
      fs::last_write_time(out, ec) >= fs::last_write_time(reference, ec)) {
    return Status::success();
  }
  auto map = read_label_map(labels);
  if (!map) return map.error();
  auto grid = read_geometry(reference);
  if (!grid) return grid.error();
  if (map->geometry.voxel_count() != grid->voxel_count()) {
    return make_error(labels.string() + ": " + std::to_string(map->geometry.voxel_count()) + " voxels where the scan has " +
                      std::to_string(grid->voxel_count()));
  }
  LabelMap placed(*grid);
  std::size_t outside = 0;
  for (std::size_t z = 0; z < grid->size[2]; ++z) {
    for (std::size_t y = 0; y < grid->size[1]; ++y) {
      for (std::size_t x = 0; x < grid->size[0]; ++x) {
        const auto i = map->geometry.to_index(grid->to_physical(static_cast<double>(x), static_cast<double>(y), static_cast<double>(z)));
        const long ix = std::lround(i[0]), iy = std::lround(i[1]), iz = std::lround(i[2]);
        if (ix < 0 || iy < 0 || iz < 0 || ix >= static_cast<long>(map->geometry.size[0]) ||
            iy >= static_cast<long>(map->geometry.size[1]) || iz >= static_cast<long>(map->geometry.size[2])) {
          ++outside;
          continue;
        }
        placed.at(x, y, z) = map->at(ix, iy, iz);
      }
    }
  }
  if (outside > 0) {
    return make_error(labels.string() + ": " + std::to_string(outside) + " voxels of the scan fall outside the label map: "
                      "not the same volume (" + geometry_difference(map->geometry, *grid) + ")");
  }
  fs::create_directories(out.parent_path(), ec);
  const auto temporary = out.parent_path() / ("." + out.filename().string());  // whole, or not there
  if (auto st = write_label_map(temporary, placed); !st) return st;
  fs::rename(temporary, out, ec);
  if (ec) return make_error(out.string() + ": " + ec.message());
  return Status::success();
}

Result<SubjectIndex> index_dicom(const DataSource& s, const std::string& clinic) {
  if (s.cache.empty()) return make_error("data_layout dicom needs a cache folder for the converted series");
  std::regex flair_rule, t1_rule;
  try {
    flair_rule = std::regex(s.dicom_flair, std::regex::icase | std::regex::ECMAScript);
    t1_rule = std::regex(s.dicom_t1, std::regex::icase | std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    return make_error("dicom_flair / dicom_t1: not a regular expression: " + std::string(e.what()));
  }
  auto all = scan_dicom(s.path);
  if (!all) return all.error();
  SubjectIndex index;
  std::map<std::string, std::vector<const DicomSeries*>> by_patient;
  for (const auto& series : *all) by_patient[series.patient_id].push_back(&series);
  const auto where = [](const DicomSeries& series) { return series.files.front().parent_path(); };
  const auto named = [](const DicomSeries& series) {
    return "series " + std::to_string(series.number) + " '" + series.description + "'";
  };
  for (const auto& [patient, list] : by_patient) {
    if (patient.empty() || patient.find('/') != std::string::npos || patient == "." || patient == "..") {
      for (const auto* series : list) index.ignored.push_back({where(*series), named(*series) + ": PatientID '" + patient + "' cannot name a subject"});
      continue;
    }
    std::vector<const DicomSeries*> flairs, t1s;
    for (const auto* series : list) {
      if (std::regex_search(series->description, flair_rule)) {
        flairs.push_back(series);
      } else if (std::regex_search(series->description, t1_rule)) {
        t1s.push_back(series);
      } else {
        index.ignored.push_back({where(*series), named(*series) + " matches neither dicom_flair ('" + s.dicom_flair +
                                                     "') nor dicom_t1 ('" + s.dicom_t1 + "')"});
      }
    }
    const auto pick = [&](const std::vector<const DicomSeries*>& found, const std::string& what) -> Result<const DicomSeries*> {
      if (found.empty()) return make_error("no series matches dicom_" + what);
      if (found.size() > 1) {
        std::string names;
        for (const auto* series : found) names += (names.empty() ? "" : ", ") + named(*series);
        return make_error(std::to_string(found.size()) + " series match dicom_" + what + " (" + names + "): make the rule stricter");
      }
      if (!found.front()->problem.empty()) return make_error(named(*found.front()) + ": " + found.front()->problem);
      return found.front();
    };
    auto flair = pick(flairs, "flair");
    auto t1 = pick(t1s, "t1");
    const auto folder = where(*list.front()).parent_path();
    if (!flair || !t1) {
      index.ignored.push_back({folder, "subject " + patient + " skipped: " + (!flair ? flair.error().message : t1.error().message)});
      continue;
    }
    SubjectFiles f;
    f.clinic = clinic;
    f.subject = patient;
    f.flair = s.cache / "dicom" / patient / "FLAIR.nii.gz";
    f.t1 = s.cache / "dicom" / patient / "T1.nii.gz";
    f.flair_dicom = (*flair)->files;
    auto converted = convert_dicom_series(**flair, f.flair);
    if (converted) converted = convert_dicom_series(**t1, f.t1);
    if (!converted) {
      index.ignored.push_back({folder, "subject " + patient + " skipped: " + converted.error().message});
      continue;
    }
    std::error_code ec;
    if (!s.dicom_labels.empty() && fs::exists(s.dicom_labels / (patient + ".nii.gz"), ec)) {
      // The label map is placed by its physical coordinates onto the grid dcm2niix gave the
      // FLAIR (which may store the rows or slices in another order than the labels' file).
      const auto placed = s.cache / "dicom" / patient / "labels.nii.gz";
      if (auto st = place_labels(s.dicom_labels / (patient + ".nii.gz"), f.flair, placed); !st) {
        index.ignored.push_back({s.dicom_labels / (patient + ".nii.gz"), "subject " + patient + " skipped: " + st.error().message});
        continue;
      }
      f.labels = placed;
    }
    index.subjects.push_back(std::move(f));
  }
  if (index.subjects.empty()) {
    return make_error(s.path.string() + ": no usable DICOM subject" +
                      (index.ignored.empty() ? " (no DICOM series found)"
                                             : "; first problem: " + index.ignored.front().path.string() + ": " +
                                                   index.ignored.front().reason));
  }
  sort_subjects(index);
  return index;
}

Status copy_scan(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::create_directories(to.parent_path(), ec);
  std::ifstream in(from, std::ios::binary);
  if (!in) return make_error(from.string() + ": cannot read");
  std::stringstream bytes;
  bytes << in.rdbuf();
  return files::write_atomically(to, bytes.str());
}

}  // namespace

Result<DataSource> detect_data_source(const fs::path& folder) {
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) return make_error(folder.string() + ": no such clinic folder");
  DataSource s;
  s.path = folder;
  if (fs::exists(folder / "dataset_description.json", ec)) {
    s.layout = "bids";
    if (fs::is_directory(folder / "derivatives" / "wmh", ec)) s.bids_labels = "wmh";
  } else if (fs::exists(folder / "dataset.json", ec)) {
    s.layout = "datalist";
    s.path = folder / "dataset.json";
  } else {
    bool wmh = false;
    for (const auto& sub : detail::sorted_entries(folder, true)) wmh = wmh || fs::exists(sub / "pre" / "FLAIR.nii.gz", ec);
    s.layout = wmh ? "wmh" : "dicom";
    if (!wmh && fs::is_directory(folder / "labels", ec)) s.dicom_labels = folder / "labels";
  }
  return s;
}

// The PACS's selected series retrieved into the cache, then indexed as a DICOM folder.
Result<SubjectIndex> index_pacs(const DataSource& s) {
  if (s.cache.empty()) return make_error("data_layout pacs needs a cache folder for the retrieved series");
  std::vector<std::regex> rules;
  try {
    for (const auto& rule : {s.dicom_flair, s.dicom_t1}) rules.emplace_back(rule, std::regex::icase | std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    return make_error("dicom_flair / dicom_t1: not a regular expression: " + std::string(e.what()));
  }
  const auto folder = s.cache / "pacs";
  auto retrieved = retrieve_from_pacs(s.pacs, rules, folder);
  if (!retrieved) return retrieved.error();
  // The cache holds what the selection holds now: a study the filter no longer selects (or the
  // PACS no longer has) is not a subject any more.
  const std::set<std::string> selected(retrieved->study_uids.begin(), retrieved->study_uids.end());
  std::error_code ec;
  std::vector<fs::path> dropped;
  for (const auto& e : fs::directory_iterator(folder, ec)) {
    if (e.is_directory(ec) && !selected.count(e.path().filename().string())) dropped.push_back(e.path());
  }
  for (const auto& d : dropped) fs::remove_all(d, ec);
  if (retrieved->instances == 0) {
    return make_error("pacs " + pacs_location(s.pacs) + ": no series matching dicom_flair ('" + s.dicom_flair + "') or dicom_t1 ('" +
                      s.dicom_t1 + "') in " + std::to_string(retrieved->studies) + " selected studies");
  }
  DataSource local = s;
  local.layout = "dicom";
  local.path = folder;
  return index_dicom(local, s.clinic.empty() ? "pacs" : s.clinic);
}

Result<SubjectIndex> index_subjects(const DataSource& s) {
  if (s.layout == "pacs") return index_pacs(s);
  std::error_code ec;
  auto path = s.path.lexically_normal();
  if (path.filename().empty()) path = path.parent_path();
  if (s.layout == "datalist") {
    if (!fs::is_regular_file(path, ec)) return make_error(path.string() + ": datalist file not found");
  } else if (!fs::is_directory(path, ec)) {
    return make_error(path.string() + ": data folder not found");
  }
  DataSource source = s;
  source.path = path;
  const auto clinic = !s.clinic.empty() ? s.clinic : (s.layout == "datalist" ? path.parent_path() : path).filename().string();
  if (s.layout == "wmh") return index_wmh(source, clinic);
  if (s.layout == "bids") return index_bids(source, clinic);
  if (s.layout == "datalist") return index_datalist(source, clinic);
  if (s.layout == "dicom") return index_dicom(source, clinic);
  return make_error("data layout '" + s.layout + "' is not one of wmh, bids, datalist, dicom, pacs");
}

Status write_layout(const fs::path& wmh_clinic, const std::string& layout, const fs::path& out) {
  DataSource source;
  source.path = wmh_clinic;
  auto index = index_subjects(source);
  if (!index) return index.error();
  if (layout == "wmh") return make_error("write_layout: the clinic is already in the wmh layout");
  if (layout == "bids") {
    const json description = {{"Name", "fedda simulated clinic " + wmh_clinic.filename().string()},
                              {"BIDSVersion", "1.8.0"},
                              {"DatasetType", "raw"},
                              {"GeneratedBy", json::array({{{"Name", "fedda-sim"}}})}};
    if (auto st = files::write_atomically(out / "dataset_description.json", description.dump(2) + "\n"); !st) return st;
    const json derived = {{"Name", "WMH labels of " + wmh_clinic.filename().string()},
                          {"BIDSVersion", "1.8.0"},
                          {"DatasetType", "derivative"},
                          {"GeneratedBy", json::array({{{"Name", "fedda-sim"}}})}};
    if (auto st = files::write_atomically(out / "derivatives" / "wmh" / "dataset_description.json", derived.dump(2) + "\n"); !st) {
      return st;
    }
    std::string participants = "participant_id\n";
    std::string readme = "Simulated clinic " + wmh_clinic.filename().string() +
                         " written by fedda-sim generate --layout bids: FLAIR and T1w per subject, white matter "
                         "hyperintensity labels in derivatives/wmh (0 background, 1 WMH, 2 other pathology).\n";
    for (const auto& s : index->subjects) {
      // BIDS labels are alphanumeric: a subject id with other characters cannot be written.
      if (!std::all_of(s.subject.begin(), s.subject.end(), [](unsigned char c) { return std::isalnum(c); })) {
        return make_error("subject '" + s.subject + "' is not a BIDS label (letters and digits only)");
      }
      const auto sub = "sub-" + s.subject;
      participants += sub + "\n";
      if (auto st = copy_scan(s.flair, out / sub / "anat" / (sub + "_FLAIR.nii.gz")); !st) return st;
      if (auto st = copy_scan(s.t1, out / sub / "anat" / (sub + "_T1w.nii.gz")); !st) return st;
      if (s.labels) {
        if (auto st = copy_scan(*s.labels, out / "derivatives" / "wmh" / sub / "anat" / (sub + "_desc-WMH_mask.nii.gz")); !st) {
          return st;
        }
      }
    }
    if (auto st = files::write_atomically(out / "participants.tsv", participants); !st) return st;
    return files::write_atomically(out / "README", readme);
  }
  if (layout == "datalist") {
    json training = json::array(), test = json::array();
    for (const auto& s : index->subjects) {
      const bool labelled = s.labels.has_value();
      const std::string images = labelled ? "imagesTr/" : "imagesTs/";
      json entry = {{"subject", s.subject},
                    {"image", {images + s.subject + "_0000.nii.gz", images + s.subject + "_0001.nii.gz"}}};
      if (auto st = copy_scan(s.flair, out / images / (s.subject + "_0000.nii.gz")); !st) return st;
      if (auto st = copy_scan(s.t1, out / images / (s.subject + "_0001.nii.gz")); !st) return st;
      if (labelled) {
        entry["label"] = "labelsTr/" + s.subject + ".nii.gz";
        if (auto st = copy_scan(*s.labels, out / "labelsTr" / (s.subject + ".nii.gz")); !st) return st;
        training.push_back(entry);
      } else {
        test.push_back(entry);
      }
    }
    const json doc = {{"name", wmh_clinic.filename().string()},
                      {"channel_names", {{"0", "FLAIR"}, {"1", "T1"}}},
                      {"labels", {{"background", 0}, {"WMH", 1}, {"other", 2}}},
                      {"training", training},
                      {"test", test}};
    return files::write_atomically(out / "dataset.json", doc.dump(2) + "\n");
  }
  if (layout == "dicom") {
    // The clinic's scanner ("3T GE Signa HDxt" in clinic.json) goes into the series' tags.
    DicomSeriesTags tags;
    tags.manufacturer = "UNKNOWN";
    std::ifstream in(wmh_clinic / "clinic.json");
    if (in) {
      try {
        const auto scanner = json::parse(in).value("scanner", std::string());
        std::stringstream words(scanner);
        std::string strength, maker, model, w;
        words >> strength >> maker;
        while (words >> w) model += (model.empty() ? "" : " ") + w;
        if (!strength.empty() && strength.back() == 'T') tags.field_strength_t = std::stod(strength.substr(0, strength.size() - 1));
        if (!maker.empty()) tags.manufacturer = maker;
        tags.model = model;
      } catch (const std::exception&) {
      }
    }
    for (const auto& s : index->subjects) {
      auto subject = read_subject(s.flair, s.t1, s.labels);
      if (!subject) return make_error(s.flair.string() + ": " + subject.error().message);
      // One study per subject, as a PACS holds it: both series in it, with an accession number.
      tags.patient_id = s.subject;
      tags.patient_name = s.clinic + "^" + s.subject;
      tags.study_uid = new_dicom_uid();
      tags.frame_of_reference_uid = new_dicom_uid();  // FLAIR and T1 on one grid: one space
      tags.accession_number = ("A" + s.subject).substr(0, 16);
      // The two acquisitions as a 3 T scanner's protocol would name and time them.
      struct Acquisition {
        const Image& image;
        const char *folder, *description;
        int number;
        const char *sequence, *variant, *type;
        double tr, te, ti;
      };
      for (const auto& a : {Acquisition{subject->flair, "FLAIR", "AX T2 FLAIR", 3, "SE\\IR", "SK", "2D", 11000, 125, 2800},
                            Acquisition{subject->t1, "T1", "AX T1 3D", 5, "GR\\IR", "SP\\MP", "3D", 7.9, 4.5, 450}}) {
        tags.series_description = a.description;
        tags.series_number = a.number;
        tags.scanning_sequence = a.sequence;
        tags.sequence_variant = a.variant;
        tags.acquisition_type = a.type;
        tags.repetition_time_ms = a.tr;
        tags.echo_time_ms = a.te;
        tags.inversion_time_ms = a.ti;
        if (auto st = write_dicom_series(a.image, out / s.subject / a.folder, tags); !st) return st;
      }
      if (s.labels) {
        if (auto st = copy_scan(*s.labels, out / "labels" / (s.subject + ".nii.gz")); !st) return st;
      }
    }
    return Status::success();
  }
  return make_error("data layout '" + layout + "' is not one of wmh, bids, datalist, dicom (a layout to write)");
}

}  // namespace fedda::imaging
