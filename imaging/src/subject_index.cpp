#include "fedda/imaging/subject_index.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fedda/common/files.h"

namespace fedda::imaging {
namespace fs = std::filesystem;
using nlohmann::json;

const std::vector<std::string>& data_layouts() {
  static const std::vector<std::string> l{"wmh", "bids", "datalist"};
  return l;
}

const std::vector<std::string>& bids_filter_entities() {
  static const std::vector<std::string> e{"ses", "acq", "ce", "rec", "run", "part"};
  return e;
}

namespace {

bool is_nifti(const fs::path& p) {
  const auto name = p.filename().string();
  const auto ends = [&](const std::string& s) { return name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0; };
  return ends(".nii.gz") || ends(".nii");
}

std::string strip_nifti(std::string name) {
  for (const std::string ext : {".nii.gz", ".nii"}) {
    if (name.size() > ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0) {
      return name.substr(0, name.size() - ext.size());
    }
  }
  return name;
}

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

void sort_subjects(SubjectIndex& index) {
  std::sort(index.subjects.begin(), index.subjects.end(),
            [](const SubjectFiles& a, const SubjectFiles& b) { return a.subject < b.subject; });
}

Result<SubjectIndex> index_wmh(const DataSource& s, const std::string& clinic) {
  SubjectIndex index;
  std::error_code ec;
  for (const auto& dir : sorted_entries(s.path, true)) {
    SubjectFiles f;
    f.clinic = clinic;
    f.subject = dir.filename().string();
    f.flair = dir / "pre" / "FLAIR.nii.gz";
    f.t1 = dir / "pre" / "T1.nii.gz";
    if (!fs::exists(f.flair, ec)) {
      index.ignored.push_back({dir, "no pre/FLAIR.nii.gz: not a subject folder"});
      continue;
    }
    if (fs::exists(dir / "wmh.nii.gz", ec)) f.labels = dir / "wmh.nii.gz";
    index.subjects.push_back(std::move(f));
  }
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
  std::stringstream parts(strip_nifti(file.filename().string()));
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
  for (const auto& dir : sorted_entries(s.path, true)) {
    const auto name = dir.filename().string();
    if (name.rfind("sub-", 0) != 0) continue;  // derivatives, code, sourcedata, ...
    const auto label = name.substr(4);
    // (folder, session) pairs: the subject's own anat/ or one per ses-* folder.
    std::vector<std::pair<fs::path, std::string>> units;
    for (const auto& sub : sorted_entries(dir, true)) {
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
      for (const auto& f : sorted_entries(anat, false)) {
        if (!is_nifti(f)) continue;
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
        for (const auto& f : sorted_entries(label_dir, false)) {
          BidsName n;
          if (is_nifti(f) && parse_bids_name(f, n) && entity(n, "sub") == label && entity(n, "ses") == session &&
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
          f.subject = strip_nifti(f.flair.filename().string());
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

Result<SubjectIndex> index_subjects(const DataSource& s) {
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
  return make_error("data layout '" + s.layout + "' is not one of wmh, bids, datalist");
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
  return make_error("data layout '" + layout + "' is not one of wmh, bids, datalist");
}

}  // namespace fedda::imaging
