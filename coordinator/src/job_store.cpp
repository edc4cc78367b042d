#include "job_store.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "fedda/common/crypto.h"
#include "fedda/common/files.h"
#include "crash_point.h"
#include "site_registry.h"

namespace fedda::coordinator {
namespace fs = std::filesystem;
using nlohmann::json;

const char* job_state_name(JobState state) {
  switch (state) {
    case JobState::queued: return "queued";
    case JobState::running: return "running";
    case JobState::finished: return "finished";
    case JobState::failed: return "failed";
    case JobState::aborted: return "aborted";
  }
  return "unknown";
}

Result<JobState> parse_job_state(const std::string& name) {
  for (auto s : {JobState::queued, JobState::running, JobState::finished, JobState::failed, JobState::aborted}) {
    if (name == job_state_name(s)) return s;
  }
  if (name == "done") return JobState::finished;  // format 1 (the batch coordinator's)
  return make_error("unknown job state '" + name + "'");
}

FederationSplit federation_split(const RoundRecord& r) {
  FederationSplit f;
  for (const auto& s : r.sites) {
    f.training_s = std::max(f.training_s, s.seconds);
    f.site_s = std::max(f.site_s, s.overhead_seconds);
  }
  const auto& c = r.cost;
  f.span_s = c.span_s;
  f.overhead_s = std::max(0.0, c.span_s - f.training_s);
  f.overhead_share = c.span_s > 0 ? f.overhead_s / c.span_s : 0.0;
  f.encode_s = c.encode_s;
  f.aggregate_s = c.aggregate_s;
  f.persist_s = c.persist_s;
  f.transport_s = std::max(0.0, f.overhead_s - c.encode_s - c.aggregate_s - c.persist_s - f.site_s);
  f.task_bytes = c.task_bytes;
  return f;
}

namespace {

json round_to_json(const RoundRecord& r) {
  json sites = json::array();
  for (const auto& s : r.sites) {
    sites.push_back({{"site", s.site}, {"samples", s.samples}, {"steps", s.steps}, {"loss", s.loss},
                     {"seconds", s.seconds}, {"bytes_up", s.bytes_up}, {"overhead_seconds", s.overhead_seconds},
                     {"precision", s.precision}});
    if (s.epsilon >= 0) {
      sites.back()["epsilon"] = s.epsilon;
      sites.back()["noise_multiplier"] = s.noise_multiplier;
    }
  }
  json refused = json::array();
  for (const auto& [site, reason] : r.refused) refused.push_back({{"site", site}, {"reason", reason}});
  const auto f = federation_split(r);
  json test_dsc = json::object();
  for (const auto& [site, dsc] : r.test_dsc) test_dsc[site] = dsc;
  return {{"round", r.round},
          {"refused", refused},
          {"test_dsc", test_dsc},
          {"seconds", r.seconds},
          {"learning_rate", r.learning_rate},
          {"move_scale", r.move_scale},
          {"sites", sites},
          {"missing", r.missing},
          {"federation",
           {{"span_s", f.span_s}, {"training_s", f.training_s}, {"overhead_s", f.overhead_s},
            {"overhead_share", f.overhead_share}, {"encode_s", f.encode_s}, {"site_s", f.site_s},
            {"transport_s", f.transport_s}, {"aggregate_s", f.aggregate_s}, {"persist_s", f.persist_s},
            {"task_bytes", f.task_bytes}}}};
}

RoundRecord round_from_json(const json& r) {
  RoundRecord rec;
  rec.round = r.at("round").get<int>();
  rec.seconds = r.at("seconds").get<double>();
  rec.learning_rate = r.at("learning_rate").get<double>();
  rec.move_scale = r.value("move_scale", 1.0);
  rec.missing = r.at("missing").get<std::vector<std::string>>();
  // Named, not iterated as a temporary: items() of value()'s returned copy would refer to an object
  // destroyed before the loop's first pass (a record with test Dice read back as null, and a
  // restarted coordinator refused every job it held).
  const json test_dsc = r.value("test_dsc", json::object());
  for (const auto& [site, dsc] : test_dsc.items()) rec.test_dsc[site] = dsc.get<double>();
  for (const auto& x : r.value("refused", json::array())) {
    rec.refused.emplace_back(x.at("site").get<std::string>(), x.at("reason").get<std::string>());
  }
  for (const auto& s : r.at("sites")) {
    rec.sites.push_back({s.at("site").get<std::string>(), s.at("samples").get<std::int64_t>(), s.at("steps").get<int>(),
                         s.at("loss").get<double>(), s.at("seconds").get<double>(), s.value("bytes_up", std::int64_t{0}),
                         s.value("overhead_seconds", 0.0), s.value("precision", std::string()),
                         s.value("epsilon", -1.0), s.value("noise_multiplier", 0.0)});
  }
  if (r.contains("federation")) {
    const auto& f = r.at("federation");
    rec.cost.encode_s = f.value("encode_s", 0.0);
    rec.cost.aggregate_s = f.value("aggregate_s", 0.0);
    rec.cost.persist_s = f.value("persist_s", 0.0);
    rec.cost.span_s = f.value("span_s", 0.0);
    rec.cost.task_bytes = f.value("task_bytes", std::int64_t{0});
  }
  return rec;
}

Result<std::unique_ptr<JobRecord>> read_record(const fs::path& file) {
  auto text = files::read_all(file);
  if (!text) return text.error();
  try {
    const auto j = json::parse(*text);
    auto record = std::make_unique<JobRecord>();
    auto spec = protocol::job_spec_from_json(j.at("job").dump());
    if (!spec) return make_error(file.string() + ": " + spec.error().message);
    auto& d = record->definition;
    d.spec = std::move(*spec);
    d.method = j.value("method", std::string(protocol::job_type_name(d.spec.type)));
    d.teacher = j.value("teacher", std::string());
    auto state = parse_job_state(j.at(j.contains("state") ? "state" : "status").get<std::string>());
    if (!state) return make_error(file.string() + ": " + state.error().message);
    record->state = *state;
    record->order = j.value("order", std::uint64_t{0});
    record->submitted_by = j.value("submitted_by", std::string());
    record->submitted_ms = j.value("submitted_ms", std::int64_t{0});
    record->started_ms = j.value("started_ms", std::int64_t{0});
    record->ended_ms = j.value("ended_ms", std::int64_t{0});
    record->error = j.value("error", std::string());
    record->finished_round = j.at("finished_round").get<int>();
    for (const auto& r : j.at("rounds")) record->rounds.push_back(round_from_json(r));
    for (const auto& e : j.value("history", json::array())) {  // absent before job history
      record->history.push_back({e.value("ms", std::int64_t{0}), e.value("what", std::string()), e.value("by", std::string())});
    }
    return record;
  } catch (const std::exception& e) {
    return make_error(file.string() + ": unreadable job record: " + e.what());
  }
}

}  // namespace

Result<std::unique_ptr<JobStore>> JobStore::open(const fs::path& state_dir) {
  auto store = std::unique_ptr<JobStore>(new JobStore());
  store->root_ = state_dir;
  std::error_code ec;
  fs::create_directories(state_dir / "jobs", ec);
  if (ec) return make_error((state_dir / "jobs").string() + ": cannot create: " + ec.message());
  std::vector<fs::path> folders;
  for (const auto& entry : fs::directory_iterator(state_dir / "jobs", ec)) {
    if (entry.is_directory() && fs::exists(entry.path() / "state.json")) folders.push_back(entry.path());
  }
  std::sort(folders.begin(), folders.end());
  for (const auto& folder : folders) {
    auto record = read_record(folder / "state.json");
    if (!record) return record.error();
    if ((*record)->id() != folder.filename().string()) {
      return make_error((folder / "state.json").string() + ": the record is of job '" + (*record)->id() + "'");
    }
    store->jobs_.push_back(std::move(*record));
  }
  // Records of the batch coordinator carry no order: they keep their folders' order, first.
  std::stable_sort(store->jobs_.begin(), store->jobs_.end(),
                   [](const auto& a, const auto& b) { return a->order < b->order; });
  for (auto& job : store->jobs_) {
    if (job->order == 0) job->order = store->next_order_;
    store->next_order_ = std::max(store->next_order_, job->order + 1);
  }
  return store;
}

JobRecord* JobStore::find(const std::string& id) {
  for (auto& j : jobs_) {
    if (j->id() == id) return j.get();
  }
  return nullptr;
}

Result<fs::path> JobStore::archive(const std::string& id) {
  const auto it = std::find_if(jobs_.begin(), jobs_.end(), [&](const auto& j) { return j->id() == id; });
  if (it == jobs_.end()) return make_error("no job '" + id + "' in this coordinator's queue", ErrorKind::not_found);
  if (!terminal((*it)->state)) {
    return make_error("job '" + id + "' is " + job_state_name((*it)->state) +
                      "; only a finished, failed or aborted job can be deleted (abort it first)",
                      ErrorKind::refused);
  }
  for (const auto& j : jobs_) {
    if (!terminal(j->state) && j->definition.teacher == "job:" + id) {
      return make_error("job '" + j->id() + "' (" + job_state_name(j->state) + ") distils job '" + id +
                        "' as its teacher; it can be deleted once that job has ended",
                        ErrorKind::refused);
    }
  }
  const auto to = root_ / "deleted" / (id + "-" + std::to_string(wall_ms()));
  std::error_code ec;
  fs::create_directories(to.parent_path(), ec);
  fs::rename(dir(id), to, ec);
  if (ec) return make_error(dir(id).string() + ": cannot move it to " + to.string() + ": " + ec.message(), ErrorKind::internal);
  if (auto st = files::sync_folder(root_ / "jobs"); !st) return st.error();
  if (auto st = files::sync_folder(to.parent_path()); !st) return st.error();
  jobs_.erase(it);
  return to;
}

std::vector<JobRecord*> JobStore::ordered() {
  std::vector<JobRecord*> out;
  for (auto& j : jobs_) out.push_back(j.get());
  return out;
}

Result<JobRecord*> JobStore::add(JobDefinition definition, const std::string& submitted_by, const std::string& yaml,
                                 const std::string& teacher_file) {
  const auto& id = definition.spec.id;
  if (auto* existing = find(id)) {
    return make_error("id: job '" + id + "' exists already (" + job_state_name(existing->state) +
                      "); choose another id, or resume it");
  }
  const auto& teacher = definition.teacher;
  if (teacher.rfind("job:", 0) == 0) {
    const auto* source = find(teacher.substr(4));
    if (!source) return make_error("teacher: no job '" + teacher.substr(4) + "' in this coordinator's queue");
    if (source->state == JobState::failed) {
      return make_error("teacher: job '" + source->id() + "' failed (" + source->error + ")");
    }
  }
  const auto folder = dir(id);
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec) return make_error(folder.string() + ": cannot create: " + ec.message());
  if (!teacher_file.empty()) {  // kept once however many jobs distil the same teacher
    const auto digest = crypto::sha256_hex(teacher_file);
    const auto path = root_ / "teachers" / (digest + ".pt");
    if (!fs::exists(path)) {
      if (auto st = files::write_atomically(path, teacher_file); !st) return st.error();
    }
    definition.teacher = "sha256:" + digest;
  }
  if (!yaml.empty()) {
    if (auto st = files::write_atomically(folder / "job.yaml", yaml); !st) return st.error();
  }
  auto record = std::make_unique<JobRecord>();
  record->definition = std::move(definition);
  record->order = next_order_++;
  record->submitted_by = submitted_by;
  record->submitted_ms = wall_ms();
  record->history.push_back({record->submitted_ms, "submitted", submitted_by});
  if (auto st = save(*record); !st) return st.error();
  jobs_.push_back(std::move(record));
  return jobs_.back().get();
}

json history_json(const JobRecord& r) {
  json out = json::array();
  for (const auto& e : r.history) {
    json event = {{"ms", e.ms}, {"what", e.what}};
    if (!e.by.empty()) event["by"] = e.by;
    out.push_back(event);
  }
  return out;
}

Status JobStore::save(const JobRecord& r) {
  json rounds = json::array();
  std::string jsonl;
  for (const auto& round : r.rounds) {
    rounds.push_back(round_to_json(round));
    jsonl += rounds.back().dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  }
  const json state = {{"format", 2},
                      {"job", json::parse(protocol::to_json(r.definition.spec))},
                      {"method", r.definition.method},
                      {"teacher", r.definition.teacher},
                      {"state", job_state_name(r.state)},
                      {"order", r.order},
                      {"submitted_by", r.submitted_by},
                      {"submitted_ms", r.submitted_ms},
                      {"started_ms", r.started_ms},
                      {"ended_ms", r.ended_ms},
                      {"error", r.error},
                      {"finished_round", r.finished_round},
                      {"rounds", rounds},
                      {"history", history_json(r)}};
  const auto folder = dir(r.id());
  if (auto st = files::write_atomically(folder / "rounds.jsonl", jsonl); !st) return st;
  crash_point("rounds", r.finished_round);
  if (auto st = files::write_atomically(folder / "state.json", state.dump(2, ' ', false, json::error_handler_t::replace) + "\n"); !st) return st;
  crash_point("state", r.finished_round);
  return Status::success();
}

Status JobStore::set_state(JobRecord& record, JobState state, const std::string& error, const std::string& by) {
  std::string what = job_state_name(state);
  if (state == JobState::running) what = record.state == JobState::running ? "continued after a restart" : "started";
  if (state == JobState::queued && (record.state == JobState::aborted || record.state == JobState::failed)) what = "resumed";
  record.history.push_back({wall_ms(), what, by});
  record.state = state;
  record.error = error;
  if (state == JobState::running && record.started_ms == 0) record.started_ms = wall_ms();
  if (terminal(state)) record.ended_ms = wall_ms();
  if (state == JobState::queued) record.ended_ms = 0;
  return save(record);
}

fs::path JobStore::teacher_path(const JobRecord& record) const {
  const auto& t = record.definition.teacher;
  if (t.rfind("job:", 0) == 0) return dir(t.substr(4)) / "model.pt";
  if (t.rfind("sha256:", 0) == 0) return root_ / "teachers" / (t.substr(7) + ".pt");
  const fs::path p(t);
  return p.is_relative() ? dir(record.id()) / p : p;
}

}  // namespace fedda::coordinator
