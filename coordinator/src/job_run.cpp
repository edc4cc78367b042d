#include "job_run.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>

#include "crash_point.h"
#include "fedda/common/crypto.h"
#include "fedda/common/files.h"
#include "fedda/models_core/recipe.h"
#include "job_run_detail.h"

namespace fedda::coordinator {
namespace fs = std::filesystem;
using protocol::JobType;
using protocol::MessageType;
using job_run_detail::duration_of;
using job_run_detail::Stopwatch;

namespace {

std::string round_file(int round, const char* what) {
  char name[64];
  std::snprintf(name, sizeof name, "round-%04d.%s", round, what);
  return name;
}

// A round's global weights at rest: the wire encoding of the TensorSet, sealed with the
// coordinator's storage key (AES-256-GCM) when the consortium has kits.
// The associated data of a job's round files: they cannot be swapped between jobs or rounds.
std::string round_context(const std::string& job, int round) { return "job " + job + " round " + std::to_string(round); }

Status save_weights(const fs::path& path, const TensorSet& weights, const std::string& key, const std::string& context) {
  return crypto::write_sealed(path, protocol::encode(protocol::Header{}, weights).body, key, context);
}

Result<TensorSet> load_weights(const fs::path& path, const std::string& key, const std::string& context) {
  auto bytes = crypto::read_sealed(path, key, context);
  if (!bytes) return bytes.error();
  auto weights = protocol::decode_body<TensorSet>(*bytes);
  if (!weights) return make_error(path.string() + ": " + weights.error().message);
  if (auto st = check_integrity(*weights); !st) return make_error(path.string() + ": " + st.error().message);
  return weights;
}

double round_learning_rate(const protocol::JobSpec& j, int round) {
  if (!j.recipe.empty()) {
    auto recipe = models::recipe_from_json(j.recipe);  // validated when the job was read
    if (recipe && recipe->schedule == "poly") {
      return j.learning_rate * std::pow(1.0 - static_cast<double>(round - 1) / j.rounds, recipe->poly_exponent);
    }
  }
  const int decay = j.decay_round >= 0 ? j.decay_round : std::max(1, j.rounds * 3 / 8);
  return round > decay ? j.learning_rate * 0.1 : j.learning_rate;
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
  return out;
}

// Interim evaluations (evaluate_every) are numbered apart from the rounds and the final one.
constexpr int kInterimRound = 1000000;

}  // namespace

Result<Broadcast> make_broadcast(const kit::CoordinatorKit* kit, protocol::Frames frames, const std::string& job, int round) {
  Broadcast b;
  b.crc = frames.body_crc32;
  if (kit) {
    auto signature = crypto::sign(kit->sign_private, protocol::model_signed_text(job, round, frames.body));
    if (!signature) return make_error("signing job " + job + " round " + std::to_string(round) + ": " + signature.error().message);
    b.signature = std::move(*signature);
  }
  b.body = std::make_shared<const std::string>(std::move(frames.body));
  return b;
}

JobRun::JobRun(JobRecord& record, JobHost& host)
    : record_(record), host_(host), model_(std::make_unique<Model>()), log_(log::get("coordinator")) {}
JobRun::~JobRun() = default;

bool JobRun::trains(const std::string& site) const {
  const auto& s = record_.definition.spec;
  return s.type != JobType::evaluate && std::count(s.sites.begin(), s.sites.end(), site);
}

int JobRun::sites_needed() const {
  const auto& s = record_.definition.spec;
  return s.secure_aggregation ? std::max(s.min_sites, secagg::minimum_sum(s.sites.size())) : s.min_sites;
}

std::string JobRun::needed_text() const {
  const auto& s = record_.definition.spec;
  return sites_needed() > s.min_sites ? "the " + std::to_string(sites_needed()) + " secure aggregation needs"
                                      : "min_sites " + std::to_string(s.min_sites);
}

bool JobRun::evaluates(const std::string& site) const {
  const auto& s = record_.definition.spec;
  return s.evaluate && std::count(s.evaluation_sites.begin(), s.evaluation_sites.end(), site);
}

bool JobRun::uses(const std::string& site) const {
  const auto& s = record_.definition.spec;
  return std::count(s.sites.begin(), s.sites.end(), site) || evaluates(site);
}

Status JobRun::start() {
  auto& spec = record_.definition.spec;
  auto& m = *model_;
  auto& store = host_.store();
  const auto dir = store.dir(spec.id);
  const std::string storage_key = host_.kit() ? host_.kit()->storage_key : std::string();
  resumed_ = record_.finished_round > 0;
  protocol::JobOffer job_offer;
  if (spec.type != JobType::teacher || !record_.definition.teacher.empty()) {
    const auto teacher_file = store.teacher_path(record_);
    auto teacher = models::read_model_weights(teacher_file);
    if (!teacher) return make_error("teacher: " + teacher.error().message);
    m.spec = teacher->spec;
    m.global = teacher->weights;
    job_offer.quality_estimator = teacher->quality;  // for the sites' quality reports
    if (spec.type == JobType::kd) job_offer.teacher = std::move(teacher->weights);
  } else {
    auto parsed = models::model_spec_from_json(spec.model_spec_json);
    if (!parsed) return parsed.error();
    m.spec = *parsed;
    auto fresh = models::new_model_weights(m.spec, spec.seed);
    if (!fresh) return fresh.error();
    m.global = std::move(*fresh);
  }
  m.spec.role = spec.type == JobType::teacher ? "teacher" : spec.type == JobType::kd ? "student" : protocol::job_type_name(spec.type);
  spec.model_spec_json = models::to_json(m.spec);
  if (spec.type == JobType::kd && spec.student_init == protocol::StudentInit::scratch) {  // a new U-Net of the teacher's architecture
    auto fresh = models::new_model_weights(m.spec, spec.seed);
    if (!fresh) return fresh.error();
    m.global = std::move(*fresh);
  }
  if (spec.bn_statistics == protocol::BnStatistics::local) m.local_norm = models::batch_norm_tensors(m.spec);
  if (spec.secure_aggregation && sites_needed() > spec.min_sites) {
    log_->info("job {}: secure aggregation: rounds open with at least {} sites and no sum of fewer is unmasked "
               "(min_sites {}; a sum of two would show each of them the other's update)",
               spec.id, sites_needed(), spec.min_sites);
  }
  m.server = std::make_unique<ServerOptimizer>(spec.server_optimizer, spec.server_lr);
  if (spec.type == JobType::ada) {
    auto weights = models::new_discriminator_weights(m.spec, spec.seed);
    if (!weights) return weights.error();
    auto created = models::DiscriminatorOptimizer::create(m.spec, *weights, spec.learning_rate);
    if (!created) return created.error();
    m.discriminator = std::move(*created);
  }
  if (record_.finished_round > 0) {
    const int r = record_.finished_round;
    auto stored = load_weights(dir / round_file(r, "weights"), storage_key, round_context(spec.id, r));
    if (!stored) return stored.error();
    if (auto st = check_same_layout(*stored, m.global); !st) return make_error(dir.string() + ": round state: " + st.error().message);
    m.global = std::move(*stored);
    if (m.discriminator) {
      if (auto st = m.discriminator->load(dir / round_file(r, "discriminator.pt"), storage_key, round_context(spec.id, r)); !st) {
        return st.error();
      }
    }
    if (m.server->adaptive()) {
      auto state = load_weights(dir / round_file(r, "server"), storage_key, round_context(spec.id, r));
      if (!state) return state.error();
      if (auto st = m.server->restore(*state); !st) return st.error();
    }
    log_->info("job {}: resuming after round {} of {}", spec.id, r, spec.rounds);
  }
  // A crash can leave round files the record does not point at (written before their record, or
  // not yet removed after it): only the last finished round's are kept.
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const auto name = entry.path().filename().string();
    if (name.rfind("round-", 0) == 0 && name.rfind(round_file(record_.finished_round, ""), 0) != 0) {
      if (auto st = files::remove_durably(entry.path()); !st) log_->warn("{}", st.error().message);
    }
  }
  job_offer.job = spec;
  auto encoded = make_broadcast(host_.kit(), protocol::encode(protocol::Header{}, job_offer), spec.id, 0);
  if (!encoded) return encoded.error();
  offer_ = std::move(*encoded);
  round_ = record_.finished_round;
  phase_ = Phase::waiting;
  phase_start_ = host_.now();
  for (auto& [sid, site] : host_.sites().all()) {
    if (!uses(sid)) continue;
    site.jobs[spec.id] = Participation{};  // a fresh start: offered again
    if (site.alive) offer(site);
  }
  return Status::success();
}

void JobRun::offer(SiteInfo& site) {
  if (!uses(site.id)) return;
  auto& p = site.jobs[id()];
  if (p.offered) return;
  p.offered = true;
  p.ready = false;
  p.failed = false;
  p.failure.clear();
  host_.send(site, MessageType::job_offer, id(), 0, offer_);
  log_->info("site {}: offered job {}", site.id, id());
}

void JobRun::site_joined(SiteInfo& site) {
  if (expected_.count(site.id) && !answered_.count(site.id)) {  // a new session cannot answer the old task
    expected_.erase(site.id);
    current_.missing.push_back(site.id + " (reconnected)");
  }
  if (phase_ != Phase::done) offer(site);
}

void JobRun::site_lost(const std::string& site, const std::string& why) {
  if (expected_.erase(site) && !answered_.count(site)) current_.missing.push_back(site + " (" + why + ")");
}

void JobRun::cannot_run(const std::string& site, Participation& p, protocol::FailureCode code, const std::string& rule,
                        const std::string& reason) {
  p.failed = true;
  p.ready = false;
  p.pending = false;
  p.failure_code = code;
  p.failure_rule = rule;
  p.failure = reason;
  if (expected_.erase(site)) current_.missing.push_back(site + " (failed: " + protocol::failure_code_name(code) + ")");
}

const Participation* JobRun::participation_of(const std::string& site) const {
  const auto* info = host_.sites().find(site);
  if (!info) return nullptr;
  const auto it = info->jobs.find(id());
  return it == info->jobs.end() ? nullptr : &it->second;
}

std::vector<std::string> JobRun::ready_sites(bool training) const {
  std::vector<std::string> ready;
  for (const auto& [sid, site] : host_.sites().all()) {
    const auto it = site.jobs.find(id());
    if (!site.alive || it == site.jobs.end() || !it->second.ready || it->second.failed) continue;
    if (training ? (trains(sid) && it->second.samples > 0) : (evaluates(sid) && it->second.evaluation_subjects > 0)) {
      ready.push_back(sid);
    }
  }
  return ready;
}

std::vector<std::string> JobRun::within_sample_share(std::vector<std::string> sites) {
  const double cap = record_.definition.spec.max_sample_share;
  if (!(cap > 0) || sites.size() < 2) return sites;
  std::vector<std::int64_t> declared;
  double total = 0;
  for (const auto& sid : sites) {
    declared.push_back(host_.sites().in(sid, id()).samples);
    total += static_cast<double>(declared.back());
  }
  std::vector<std::string> kept;
  for (std::size_t i = 0; i < sites.size(); ++i) {
    const auto& sid = sites[i];
    const double share = static_cast<double>(declared[i]) / total;
    if (share <= cap) {
      kept.push_back(sid);
      continue;
    }
    char why[200];
    std::snprintf(why, sizeof why, "declared %lld samples, %.0f%% of the round's %.0f, over max_sample_share %.2f",
                  static_cast<long long>(declared[i]), 100 * share, total, cap);
    log_->warn("job {}: round {}: site {} left out: {}", id(), round_, sid, why);
    current_.missing.push_back(sid + " (refused)");
    current_.refused.emplace_back(sid, why);
  }
  return kept;
}

std::vector<std::string> JobRun::sample(std::vector<std::string> ready) const {
  const auto& spec = record_.definition.spec;
  std::size_t k = ready.size();
  if (spec.sites_per_round > 0) k = std::min<std::size_t>(k, static_cast<std::size_t>(spec.sites_per_round));
  // A job stored before submissions were held to it may ask for fewer than a secure sum needs.
  k = std::max(k, std::min(ready.size(), static_cast<std::size_t>(sites_needed())));
  if (spec.fraction > 0) {
    k = std::min(k, std::max<std::size_t>(static_cast<std::size_t>(sites_needed()),
                                          static_cast<std::size_t>(std::ceil(spec.fraction * static_cast<double>(ready.size())))));
  }
  if (k >= ready.size()) return ready;
  std::mt19937_64 rng(spec.seed * 0x9e3779b97f4a7c15ULL + static_cast<std::uint64_t>(round_));
  std::shuffle(ready.begin(), ready.end(), rng);
  ready.resize(k);
  std::sort(ready.begin(), ready.end());
  return ready;
}

bool JobRun::wants_upload(const std::string& site, int round) const {
  return (phase_ == Phase::collecting || phase_ == Phase::evaluating) && round == round_ && expected_.count(site) &&
         !answered_.count(site);
}

bool JobRun::send_to(const std::string& site, MessageType type, const Broadcast& body) {
  auto* s = host_.sites().find(site);
  if (!s || !s->alive) return false;
  host_.send(*s, type, id(), round_, body);
  return true;
}

int JobRun::steps_asked(const std::string& site) const {
  const auto it = steps_asked_.find(site);  // a site that joins the round late is not listed: local_steps
  return it != steps_asked_.end() ? it->second : record_.definition.spec.local_steps;
}

double JobRun::weight_of(const std::string& site, std::int64_t samples) const {
  return aggregation_weight(record_.definition.spec.steps_by_share, samples, steps_asked(site));
}

void JobRun::stretch_moves(TensorSet& averaged) {
  const auto& spec = record_.definition.spec;
  double samples = 0, steps = 0, weights = 0;
  for (const auto& s : current_.sites) {
    samples += static_cast<double>(s.samples);
    steps += steps_asked(s.site);
    weights += weight_of(s.site, s.samples);
  }
  current_.move_scale = move_scale(spec.steps_by_share, samples, steps, weights);
  if (current_.move_scale == 1.0) return;
  const auto& global = model_->global;
  for (auto& t : averaged.tensors) {  // parameters only: running statistics and counters stay averaged
    const auto* g = global.find(t.name);
    if (!g || t.dtype != DType::f32 || g->dtype != DType::f32 || !protocol::is_parameter(t.name)) continue;
    auto values = to_f32(t);
    const auto from = to_f32(*g);
    for (std::size_t i = 0; i < values.size() && i < from.size(); ++i) {
      values[i] = static_cast<float>(from[i] + current_.move_scale * (static_cast<double>(values[i]) - from[i]));
    }
    t = make_f32(t.name, t.shape, values);
  }
}

void JobRun::ask(const std::string& site) {
  if (send_to(site, MessageType::round_task, task_)) expected_.insert(site);
}

void JobRun::open_round() {
  auto& m = *model_;
  const auto& spec = record_.definition.spec;
  round_ = record_.finished_round + 1;
  current_ = RoundRecord{};
  current_.round = round_;
  current_.learning_rate = round_learning_rate(spec, round_);
  expected_.clear();
  answered_.clear();
  needed_ = sites_needed();
  protocol::RoundTask task;
  task.learning_rate = current_.learning_rate;
  task.adversarial_weight =
      spec.type == JobType::ada
          ? spec.ada_weight * std::min(1.0, (round_ - 1) / static_cast<double>(std::max(1, spec.ada_warmup_rounds)))
          : 0.0;
  m.model_average = std::make_unique<RunningAverage>(m.global);
  m.grad_average.reset();
  if (m.discriminator) {
    auto w = m.discriminator->weights();
    if (!w) return fail(w.error().message);
    task.discriminator = std::move(*w);
    m.grad_average = std::make_unique<RunningAverage>(protocol::parameters_only(task.discriminator));
  }
  // Every training site of the job that will not contribute is named in the round, with why.
  const auto ready = ready_sites(true);
  const auto drawn = sample(ready);
  const auto candidates = within_sample_share(drawn);
  if (spec.secure_aggregation && static_cast<int>(candidates.size()) < needed_) {  // max_sample_share left too few
    return fail("round " + std::to_string(round_) + ": " + std::to_string(candidates.size()) + " of the " +
                std::to_string(drawn.size()) + " ready sites are within max_sample_share " + std::to_string(spec.max_sample_share) +
                ", fewer than " + needed_text() + "; nothing was sent (raise max_sample_share, or add sites)");
  }
  for (const auto& [sid, why] : sitting_out()) current_.missing.push_back(sid + " (" + why + ")");
  for (const auto& sid : ready) {
    if (!std::count(drawn.begin(), drawn.end(), sid)) current_.missing.push_back(sid + " (not drawn for this round)");
  }
  steps_asked_.clear();
  if (spec.steps_by_share) {  // one centralized epoch per round, shared by sample count
    double total = 0;
    for (const auto& sid : candidates) total += static_cast<double>(host_.sites().in(sid, id()).samples);
    for (const auto& sid : candidates) {
      task.step_sites.push_back(sid);
      task.steps.push_back(std::max(
          1, static_cast<int>(std::lround(spec.local_steps * static_cast<double>(host_.sites().in(sid, id()).samples) / total))));
      steps_asked_[sid] = task.steps.back();
    }
  }
  phase_start_ = host_.now();
  const Stopwatch encoding;
  task.model = spec.transfer_precision == protocol::TransferPrecision::float16 ? to_half(m.global) : m.global;
  auto encoded = make_broadcast(host_.kit(), protocol::encode(protocol::Header{}, task), id(), round_);
  if (!encoded) return fail(encoded.error().message);
  task_ = std::move(*encoded);
  current_.cost.task_bytes = static_cast<std::int64_t>(task_.body->size());
  current_.cost.encode_s = encoding.seconds();
  deadline_ = host_.now() + duration_of(spec.round_deadline_s);
  give_up_ = deadline_ + host_.start_timeout();
  phase_ = Phase::collecting;
  log_->info("job {}: round {}/{} with {} sites", id(), round_, spec.rounds, candidates.size());
  secure_.reset();
  // The key requests go first: a site's keys exist before its update can.
  if (spec.secure_aggregation && !open_secure(task, candidates)) return;
  for (const auto& sid : candidates) ask(sid);
}

void JobRun::open_evaluation(bool interim) {
  const auto& spec = record_.definition.spec;
  interim_ = interim;
  round_ = interim ? kInterimRound + record_.finished_round : spec.rounds + 1;
  current_ = RoundRecord{};
  expected_.clear();
  answered_.clear();
  evaluation_.clear();
  quality_.clear();
  if (!interim) evaluation_missing_.clear();
  needed_ = 1;
  protocol::RoundTask task;
  task.evaluate = true;
  task.model = model_->global;
  auto encoded = make_broadcast(host_.kit(), protocol::encode(protocol::Header{}, task), id(), round_);
  if (!encoded) return fail(encoded.error().message);
  task_ = std::move(*encoded);
  deadline_ = host_.now() + duration_of(spec.round_deadline_s);
  give_up_ = deadline_ + host_.start_timeout();
  phase_ = Phase::evaluating;
  const auto candidates = ready_sites(false);
  log_->info("job {}: evaluating at {}", id(), joined(candidates));
  for (const auto& sid : spec.evaluation_sites) {  // the evaluation sites that sit it out, and why
    if (std::count(candidates.begin(), candidates.end(), sid)) continue;
    const auto why = why_not_in(sid, false).value_or("not ready");
    current_.missing.push_back(sid + " (" + why + ")");
    if (!interim) evaluation_missing_.push_back(sid + " (" + why + ")");
    log_->warn("job {}: evaluating without {} ({})", id(), sid, why);
  }
  for (const auto& sid : candidates) ask(sid);
}

void JobRun::tick() {
  // A step that moves the job to another phase is followed at once by the next one (a closed
  // round opens the next when its sites are ready) instead of at the service's next turn.
  for (Phase before = phase_;; before = phase_) {
    step();
    if (phase_ == before || phase_ == Phase::done) return;
  }
}

void JobRun::step() {
  const auto now = host_.now();
  switch (phase_) {
    case Phase::done: return;
    case Phase::waiting: return step_waiting(now);
    case Phase::waiting_for_evaluation: return step_before_evaluation(now);
    case Phase::collecting:
    case Phase::evaluating: return step_collecting(now);
  }
}

void JobRun::step_waiting(Clock::time_point now) {
  const auto& spec = record_.definition.spec;
  if (abort_ || drain_) return stop_after_round();
  if (spec.type == JobType::evaluate || record_.finished_round >= spec.rounds) {
    phase_ = Phase::waiting_for_evaluation;
    phase_start_ = now;
    return;
  }
  // Wait for enough ready sites, and for connected sites still preparing (computing soft
  // labels, say) up to the round deadline, so that a slow start does not leave them out.
  const auto ready = ready_sites(true).size();
  bool preparing = false;
  for (const auto& [sid, site] : host_.sites().all()) {
    const auto it = site.jobs.find(id());
    if (site.alive && trains(sid) && it != site.jobs.end() && it->second.offered && !it->second.ready && !it->second.failed) {
      preparing = true;
    }
  }
  const auto grace = phase_start_ + duration_of(spec.round_deadline_s);
  if (static_cast<int>(ready) >= sites_needed() && (!preparing || now >= grace)) return open_round();
  if (now >= phase_start_ + host_.start_timeout()) {
    return fail("only " + std::to_string(ready) + " of " + needed_text() + " ready after " +
                std::to_string(std::chrono::duration_cast<std::chrono::seconds>(host_.start_timeout()).count()) + " s");
  }
}

void JobRun::step_before_evaluation(Clock::time_point now) {
  const auto& spec = record_.definition.spec;
  if (abort_ || drain_) return stop_after_round();
  if (!spec.evaluate || spec.evaluation_sites.empty()) return finish();
  // Every evaluation site ready, or known not to come: one that refused the job or cannot run it
  // is not waited for (the evaluation names it missing).
  std::size_t settled = 0;
  for (const auto& sid : spec.evaluation_sites) {
    const auto* site = host_.sites().find(sid);
    const auto* p = participation_of(sid);
    if (p && ((site->alive && p->ready) || p->failed)) ++settled;
  }
  if (settled == spec.evaluation_sites.size() || now >= phase_start_ + host_.start_timeout()) open_evaluation(false);
}

void JobRun::step_collecting(Clock::time_point now) {
  const auto& spec = record_.definition.spec;
  if (secure_stages(now)) return;
  const int got = static_cast<int>(answered_.size());
  const bool all_in = got == static_cast<int>(expected_.size()) && got > 0;
  // A secure round closes at its deadline only once its sum can be unmasked (otherwise it waits
  // for more masked updates until it gives up).
  const bool unmaskable = phase_ != Phase::collecting || !secure_ || secure_->aggregator->can_unmask();
  if ((all_in && got >= needed_) || (now >= deadline_ && got >= needed_ && got > 0 && unmaskable)) {
    for (const auto& sid : expected_) {
      if (!answered_.count(sid)) {
        log_->warn("site {}: no answer by the deadline of round {}; its late answer will be discarded", sid, round_);
        current_.missing.push_back(sid + " (late)");
      }
    }
    if (phase_ == Phase::evaluating) return close_evaluation();
    return secure_ ? secure_unmask() : close_round();
  }
  if (now >= give_up_) {
    return fail("round " + std::to_string(round_) + " of job " + id() + ": only " + std::to_string(got) + " of the " +
                std::to_string(needed_) + " sites needed answered in time" +
                (secure_ && needed_ > spec.min_sites ? std::string(" (a secure round of this job opens a sum of at least ") +
                                                           std::to_string(needed_) + "; nothing was unmasked)"
                                                     : std::string()));
  }
  // Sites that (re)joined and got ready may take part while the round still lacks answers (not
  // in a secure round: they missed its key exchange).
  if (!secure_ && static_cast<int>(expected_.size()) < std::max(needed_, 1)) {
    for (const auto& sid : ready_sites(phase_ == Phase::collecting)) {
      if (!expected_.count(sid) && !answered_.count(sid)) {
        log_->info("site {}: joins round {} late", sid, round_);
        ask(sid);
      }
    }
  }
}

void JobRun::close_round() {
  auto& m = *model_;
  const Stopwatch averaging;
  auto averaged = m.model_average->average();
  if (!averaged) return fail(averaged.error().message);
  std::optional<TensorSet> grads;
  if (m.discriminator) {
    auto g = m.grad_average->average();
    if (!g) return fail(g.error().message);
    grads = std::move(*g);
  }
  current_.cost.aggregate_s += averaging.seconds();
  commit_round(std::move(*averaged), std::move(grads));
}

void JobRun::commit_round(TensorSet averaged, std::optional<TensorSet> grads) {
  auto& m = *model_;
  auto& store = host_.store();
  const auto& spec = record_.definition.spec;
  const auto dir = store.dir(id());
  const std::string storage_key = host_.kit() ? host_.kit()->storage_key : std::string();
  const int r = round_;
  const Stopwatch averaging;
  stretch_moves(averaged);
  for (auto& t : averaged.tensors) {  // FedBN: batch norm stays each site's; the global keeps its own
    if (std::count(m.local_norm.begin(), m.local_norm.end(), t.name)) {
      if (const auto* kept = m.global.find(t.name)) t = *kept;
    }
  }
  auto stepped = m.server->step(m.global, averaged);
  if (!stepped) return fail(stepped.error().message);
  m.global = std::move(*stepped);
  current_.cost.aggregate_s += averaging.seconds();
  if (m.discriminator) {
    if (!grads) return fail("round " + std::to_string(r) + ": no averaged discriminator gradients");
    if (auto st = m.discriminator->step(*grads, current_.learning_rate); !st) return fail(st.error().message);
  }
  m.model_average.reset();
  m.grad_average.reset();
  task_ = Broadcast{};
  // Persist: round files first, then the record that points at them, then (the record durable)
  // the previous round's files.
  const Stopwatch persisting;
  if (auto st = save_weights(dir / round_file(r, "weights"), m.global, storage_key, round_context(id(), r)); !st) {
    return fail(st.error().message);
  }
  if (m.discriminator) {
    if (auto st = m.discriminator->save(dir / round_file(r, "discriminator.pt"), storage_key, round_context(id(), r)); !st) {
      return fail(st.error().message);
    }
  }
  if (m.server->adaptive()) {
    if (auto st = save_weights(dir / round_file(r, "server"), m.server->state(), storage_key, round_context(id(), r)); !st) {
      return fail(st.error().message);
    }
  }
  crash_point("weights", r);
  current_.cost.persist_s = persisting.seconds();
  current_.cost.span_s = std::chrono::duration<double>(host_.now() - phase_start_).count();
  current_.seconds = current_.cost.span_s;
  record_.rounds.push_back(current_);
  record_.finished_round = r;
  if (auto st = store.save(record_); !st) return fail(st.error().message);
  for (const char* what : {"weights", "discriminator.pt", "server"}) {
    if (auto st = files::remove_durably(dir / round_file(r - 1, what)); !st) log_->warn("{}", st.error().message);
  }
  crash_point("removed", r);
  expected_.clear();
  answered_.clear();
  double loss = 0;
  double samples = 0;
  for (const auto& s : current_.sites) {
    loss += s.loss * static_cast<double>(s.samples);
    samples += static_cast<double>(s.samples);
  }
  const auto f = federation_split(current_);
  char scale[48] = "";
  if (current_.move_scale != 1.0) std::snprintf(scale, sizeof scale, ", moves stretched %.2fx", current_.move_scale);
  log_->info("job {}: round {}/{} done in {:.1f} s: {} sites{}, mean loss {:.4f}, federation {:.0f} ms ({:.1f}% of {:.2f} s){}",
             id(), r, spec.rounds, current_.seconds, current_.sites.size(), scale, samples > 0 ? loss / samples : 0.0,
             1000 * f.overhead_s, 100 * f.overhead_share, f.span_s,
             current_.missing.empty() ? "" : ", missing " + std::to_string(current_.missing.size()));
  if (abort_ || drain_) return stop_after_round();
  phase_ = Phase::waiting;
  phase_start_ = host_.now();
  if (spec.evaluate_every > 0 && r % spec.evaluate_every == 0 && r < spec.rounds && spec.evaluate &&
      !ready_sites(false).empty()) {
    open_evaluation(true);
  }
}

void JobRun::close_evaluation() {
  const auto dir = host_.store().dir(id());
  if (interim_) {  // a point of the learning curve: mean Dice per site, with the round it followed
    std::map<std::string, std::pair<double, int>> dice;
    for (const auto& row : evaluation_) {
      if (!std::isfinite(row.metrics.dsc)) continue;
      dice[row.site].first += row.metrics.dsc;
      dice[row.site].second += 1;
    }
    if (!record_.rounds.empty()) {
      for (const auto& [site, d] : dice) record_.rounds.back().test_dsc[site] = d.first / d.second;
      if (auto st = host_.store().save(record_); !st) return fail(st.error().message);
    }
    log_->info("job {}: after round {}, test Dice {}", id(), record_.finished_round,
               dice.empty() ? std::string("-") : std::to_string(dice.begin()->second.first / dice.begin()->second.second));
    interim_ = false;
    evaluation_.clear();
    expected_.clear();
    answered_.clear();
    phase_ = Phase::waiting;
    phase_start_ = host_.now();
    return;
  }
  if (auto st = write_results_csv(dir / "results.csv", record_, evaluation_); !st) return fail(st.error().message);
  finish();
}

void JobRun::finish() {
  auto& store = host_.store();
  const auto dir = store.dir(id());
  if (auto st = models::write_model_weights(dir / "model.pt", model_->spec, model_->global); !st) {
    return fail(st.error().message);
  }
  const double seconds = record_.started_ms ? static_cast<double>(wall_ms() - record_.started_ms) / 1000.0 : 0.0;
  if (auto st = write_summary(dir / "summary.json", record_, seconds, resumed_, evaluation_, quality_, evaluation_missing_); !st) {
    return fail(st.error().message);
  }
  if (auto st = store.set_state(record_, JobState::finished); !st) log_->error("job {}: {}", id(), st.error().message);
  say_goodbye("job finished");
  phase_ = Phase::done;
  log_->info("job {} finished in {:.1f} s", id(), seconds);
}

void JobRun::fail(const std::string& why) {
  log_->error("job {} failed: {}", id(), why);
  if (auto st = host_.store().set_state(record_, JobState::failed, why); !st) log_->error("job {}: {}", id(), st.error().message);
  say_goodbye("job failed");
  phase_ = Phase::done;
}

void JobRun::stop_after_round() {
  if (abort_) {
    if (auto st = host_.store().set_state(record_, JobState::aborted, "aborted by " + stop_by_, stop_by_); !st) {
      log_->error("job {}: {}", id(), st.error().message);
    }
    log_->warn("job {}: aborted by {} after round {}", id(), stop_by_, record_.finished_round);
    say_goodbye("job aborted");
  } else {
    log_->info("job {}: stopped after round {} (resumes when the coordinator starts again)", id(), record_.finished_round);
  }
  phase_ = Phase::done;
}

void JobRun::abort(const std::string& by) {
  abort_ = true;
  stop_by_ = by;
  if (phase_ == Phase::waiting || phase_ == Phase::waiting_for_evaluation) tick();
}

void JobRun::drain() {
  drain_ = true;
  if (phase_ == Phase::waiting || phase_ == Phase::waiting_for_evaluation) tick();
}

void JobRun::say_goodbye(const std::string& reason) {
  auto encoded = make_broadcast(nullptr, protocol::encode(protocol::Header{}, protocol::Goodbye{reason}), id(), 0);
  if (!encoded) return;
  for (auto& [sid, site] : host_.sites().all()) {
    if (site.alive && uses(sid)) host_.send(site, MessageType::goodbye, id(), 0, *encoded);
  }
}

std::optional<std::string> JobRun::why_not_in(const std::string& sid, bool training) const {
  const auto* site = host_.sites().find(sid);
  const auto* p = participation_of(sid);
  if (!site || !site->alive) return "offline";
  if (!p || !p->offered) return "not offered the job yet";
  if (p->failed) return std::string("cannot run it (") + protocol::failure_code_name(p->failure_code) + ")";
  if (p->pending) return "awaiting approval at the site";
  if (!p->ready) return "preparing";
  if (training && p->samples <= 0) return "has no training samples";
  if (!training && p->evaluation_subjects <= 0) return "has no evaluation subjects";
  return std::nullopt;
}

std::vector<std::pair<std::string, std::string>> JobRun::sitting_out() const {
  std::vector<std::pair<std::string, std::string>> out;
  if (record_.definition.spec.type == JobType::evaluate) return out;
  for (const auto& sid : record_.definition.spec.sites) {
    if (auto why = why_not_in(sid, true)) out.emplace_back(sid, *why);
  }
  return out;
}

std::string JobRun::not_ready() const {
  std::string out;
  for (const auto& [sid, why] : sitting_out()) out += (out.empty() ? "" : ", ") + sid + " " + why;
  return out;
}

std::optional<RoundSites> JobRun::round_sites() const {
  if (phase_ != Phase::collecting && phase_ != Phase::evaluating) return std::nullopt;
  RoundSites out;
  out.round = round_;
  out.evaluation = phase_ == Phase::evaluating;
  for (const auto& site : expected_) (answered_.count(site) ? out.answered : out.waiting).push_back(site);
  for (const auto& site : answered_) {
    if (!expected_.count(site)) out.answered.push_back(site);
  }
  std::sort(out.answered.begin(), out.answered.end());
  return out;
}

std::string JobRun::activity() const {
  const auto& spec = record_.definition.spec;
  const std::string stopping = abort_ ? "aborting after this round (by " + stop_by_ + "): " : "";
  switch (phase_) {
    case Phase::waiting: {
      const auto missing = not_ready();
      return stopping + "waiting for sites (" + std::to_string(ready_sites(true).size()) + " of " + needed_text() +
             " ready" + (missing.empty() ? "" : "; " + missing) + ") before round " +
             std::to_string(record_.finished_round + 1);
    }
    case Phase::collecting: {
      std::string round = stopping + "round " + std::to_string(round_) + " of " + std::to_string(spec.rounds) + ": ";
      if (secure_) return round + secure_activity();
      return round + std::to_string(answered_.size()) + " of " + std::to_string(expected_.size()) + " updates in";
    }
    case Phase::waiting_for_evaluation: return "waiting for the evaluation sites";
    case Phase::evaluating:
      return "evaluating: " + std::to_string(answered_.size()) + " of " + std::to_string(expected_.size()) + " sites scored";
    case Phase::done: return "done";
  }
  return "";
}

}  // namespace fedda::coordinator
