#include "site_worker.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <regex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fedda/common/crypto.h"
#include "fedda/common/files.h"
#include "fedda/common/log.h"
#include "fedda/common/privacy.h"
#include "fedda/common/text.h"
#include "fedda/models/federated.h"
#include "fedda/models_core/model_spec.h"
#include "fedda/site_agent/approvals.h"
#include "fedda/site_agent/egress.h"
#include "fedda/site_agent/monitor.h"
#include "privacy_ledger.h"
#include "fedda/models_core/weights.h"

namespace fedda::site_agent {
namespace fs = std::filesystem;
using protocol::FailureCode;
using protocol::JobType;
using protocol::MessageType;

// A figure for a policy message: as short as it reads (8, 0.5, 1e-05).
using text::number;

std::string redact(const std::string& text, const std::vector<std::string>& subjects, const std::string& data_dir) {
  std::string out = text;
  if (!data_dir.empty()) {
    for (std::size_t at; (at = out.find(data_dir)) != std::string::npos;) out.replace(at, data_dir.size(), "<data>");
  }
  // Absolute paths, and clinic/subject forms.
  out = std::regex_replace(out, std::regex(R"((/[^\s:'",;()]+)+)"), "<path>");
  for (const auto& s : subjects) {
    if (s.empty()) continue;
    out = std::regex_replace(out, std::regex("([A-Za-z0-9_.-]+/)" + std::regex_replace(s, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)") +
                                             R"((?![A-Za-z0-9_.-]))"), "<subject>");
  }
  return out;
}

struct SiteWorker::Impl {
  SiteConfig config;
  std::optional<kit::SiteKit> site_kit;
  std::string pseudonym_key;
  std::shared_ptr<spdlog::logger> log = log::get("agent");
  std::unique_ptr<models::SiteTrainer> trainer;
  std::optional<EgressGuard> guard;
  std::string trainer_job;
  protocol::JobReady trainer_ready;
  int job_steps = 32;
  int job_rounds = 1;
  bool job_half = false;  // the job's models cross the network as float16
  bool job_secure = false;  // secure aggregation: training updates leave masked
  struct HeldOffer {
    Inbound offer;
    std::string digest;  // offer_digest, computed once: the teacher is hashed when the offer comes
  };
  std::map<std::string, HeldOffer> held;  // offers waiting for the administrator, by job
  std::vector<std::string> subject_ids;  // this site's, for redaction
  std::vector<Outgoing> out;
  // What the job's quality report needs (evaluation rounds): the scans evaluated, the model's
  // spec, the teacher and the estimator the job's model file carries.
  struct QualityInputs {
    std::vector<imaging::SubjectFiles> scans;
    models::ModelSpec spec;
    TensorSet teacher;
    std::string estimator;
    int final_round = 0;  // the evaluation after the last round (interim ones make no report)
  } quality_inputs;

  template <typename Body>
  void post(MessageType type, const std::string& job_id, int round, const Body& body, std::string tensors = {},
            std::string detail = {}) {
    out.push_back(make_outgoing(config.site_id, type, job_id, round, body, std::move(tensors), std::move(detail)));
  }

  // The full reason stays here (log, audit log); what leaves is the code, the rule and the
  // reason with local paths and subject ids taken out.
  void fail(const std::string& job_id, FailureCode code, const std::string& reason, const std::string& rule = {}) {
    log->error("job {}: {}", job_id, reason);
    protocol::JobFailed failed;
    failed.code = code;
    failed.rule = rule;
    failed.reason = redact(reason, subject_ids, config.data.string());
    post(MessageType::job_failed, job_id, 0, failed, {}, reason);
  }

  std::string pseudonym_of(const std::string& subject) const { return site_agent::pseudonym(pseudonym_key, subject); }

  // A model message must carry the coordinator's signature over (job, round, body digest).
  Status check_signature(const protocol::Header& h, const std::string& body, const std::string& signature) const {
    if (!site_kit) return Status::success();
    if (signature.empty()) return make_error("unsigned model refused");
    if (auto st = crypto::verify(site_kit->coordinator_sign_public, protocol::model_signed_text(h.job_id, h.round, body),
                                 signature);
        !st) {
      return make_error("model signature refused: " + st.error().message);
    }
    return Status::success();
  }

  // The first rule of the site's policy the job breaks, as (rule, why); empty when none.
  std::pair<std::string, std::string> policy_breach(const protocol::JobSpec& job) const {
    const auto& p = config.policy;
    const std::string type = protocol::job_type_name(job.type);
    if (!std::count(p.job_types.begin(), p.job_types.end(), type)) {
      return {"job_types", "this site does not run " + type + " jobs"};
    }
    if (!p.trusted_sources.empty() && !job.source.empty() &&
        !std::count(p.trusted_sources.begin(), p.trusted_sources.end(), job.source)) {
      return {"trusted_sources", "source '" + job.source + "' is not among this site's trusted sources"};
    }
    if (p.require_secure_aggregation && job.type != JobType::evaluate && !job.secure_aggregation) {
      return {"require_secure_aggregation", "this site sends training updates only under secure aggregation"};
    }
    if (job.type != JobType::evaluate && job.batch_size < p.min_batch_size) {
      return {"min_batch_size", "batch size " + std::to_string(job.batch_size) + " is below this site's minimum of " +
                                    std::to_string(p.min_batch_size)};
    }
    if (job.type != JobType::evaluate && !job.steps_by_share && job.local_steps < p.min_local_steps) {
      return {"min_local_steps", std::to_string(job.local_steps) + " local steps are below this site's minimum of " +
                                     std::to_string(p.min_local_steps)};
    }
    if (!(job.temperature > 0 && job.temperature <= 100)) return {"temperature", "temperature out of (0, 100]"};
    const bool trains_here = job.type != JobType::evaluate && std::count(job.sites.begin(), job.sites.end(), config.site_id);
    if (trains_here && p.max_epsilon > 0 && !job.dp.enabled()) {
      return {"max_epsilon", "this site trains only under differential privacy (dp) of at most epsilon " +
                                 number(p.max_epsilon) + "; the job has none"};
    }
    if (trains_here && p.max_epsilon > 0 && job.dp.delta > p.max_delta) {
      return {"max_delta", "the job's delta " + number(job.dp.delta) + " is above this site's " + number(p.max_delta) +
                               " (a larger delta buys a smaller epsilon)"};
    }
    if (trains_here && p.max_epsilon > 0 && job.dp.target_epsilon > p.max_epsilon) {
      return {"max_epsilon", "the job's target epsilon " + number(job.dp.target_epsilon) + " is above this site's " +
                                 number(p.max_epsilon)};
    }
    if (trains_here && job.dp.enabled() && job.dp.noise_multiplier > 0 &&
        job.dp.noise_multiplier < p.min_noise_multiplier) {
      return {"min_noise_multiplier", "the job's noise multiplier " + number(job.dp.noise_multiplier) +
                                          " is below this site's minimum of " + number(p.min_noise_multiplier)};
    }
    return {};
  }

  // The guarantee this site's trainer resolved, against the site's ceiling: (rule, why) or empty.
  std::pair<std::string, std::string> dp_breach(const models::DpGuarantee& dp) const {
    const auto& p = config.policy;
    if (!dp.on) return {};
    if (p.max_epsilon > 0 && dp.planned_epsilon > p.max_epsilon) {
      return {"max_epsilon", "the job would spend epsilon " + number(dp.planned_epsilon) + " (noise multiplier " +
                                 number(dp.noise_multiplier) + ") on this site's patients, above its " +
                                 number(p.max_epsilon)};
    }
    if (dp.noise_multiplier < p.min_noise_multiplier) {
      return {"min_noise_multiplier", "noise multiplier " + number(dp.noise_multiplier) +
                                          " is below this site's minimum of " + number(p.min_noise_multiplier)};
    }
    return {};
  }

  // What the job will send from this site, for the administrator deciding on it.
  std::string description(const protocol::JobSpec& job) const {
    nlohmann::json d = {{"job", job.id},
                        {"type", protocol::job_type_name(job.type)},
                        {"source", job.source},
                        {"sites", job.sites},
                        {"rounds", job.rounds},
                        {"local_steps", job.local_steps},
                        {"batch_size", job.batch_size},
                        {"learning_rate", job.learning_rate},
                        {"transfer_precision", protocol::setting_name(job.transfer_precision)}};
    if (job.dp.enabled()) {
      d["differential_privacy"] = {{"unit", "patient"},
                                   {"clip_norm", job.dp.clip_norm},
                                   {"noise_multiplier", job.dp.noise_multiplier > 0 ? nlohmann::json(job.dp.noise_multiplier)
                                                                                    : nlohmann::json("chosen at the site")},
                                   {"target_epsilon", job.dp.target_epsilon > 0 ? nlohmann::json(job.dp.target_epsilon)
                                                                                : nlohmann::json()},
                                   {"delta", job.dp.delta},
                                   {"planned_steps", static_cast<long long>(job.rounds) * job.local_steps}};
    } else if (job.type != JobType::evaluate) {
      d["differential_privacy"] = "none: the model updates carry no stated guarantee";
    }
    const auto& id = config.site_id;
    const bool trains = job.type != JobType::evaluate && std::count(job.sites.begin(), job.sites.end(), id);
    const bool evaluates = job.evaluate && std::count(job.evaluation_sites.begin(), job.evaluation_sites.end(), id);
    nlohmann::json per_round = nlohmann::json::array();
    std::size_t bytes = 0;
    if (trains) {
      if (auto layouts = EgressGuard::for_job(job)) {
        const auto add = [&](const TensorSet& set, const std::string& what, bool half) {
          for (const auto& t : set.tensors) {
            std::size_t n = std::max<std::int64_t>(0, t.elements()) * dtype_size(t.dtype);
            if (half && t.dtype == DType::f32) n /= 2;
            bytes += n;
            per_round.push_back({{"what", what}, {"tensor", t.name}, {"shape", t.shape}, {"bytes", n}});
          }
        };
        add(layouts->model_layout(), "model weights", job.transfer_precision == protocol::TransferPrecision::float16);
        add(layouts->discriminator_layout(), "discriminator gradients", false);
      }
    }
    d["sends_per_round"] = per_round;
    d["bytes_per_round"] = bytes;
    d["also_per_round"] = trains ? nlohmann::json{"sample count", "step count", "mean loss", "seconds"} : nlohmann::json::array();
    d["evaluation"] = evaluates ? nlohmann::json{{"per_subject", {"dsc", "h95", "avd", "recall", "f1"}},
                                                 {"subjects_named_by", "pseudonym"}}
                                : nlohmann::json();
    if (evaluates && config.policy.quality_reports) {
      d["quality_report"] = {{"kept_here", "cache_dir/reports/" + job.id + "/ (per scan)"},
                             {"sent", {"scans", "flagged", "drifted", "site_drifted", "estimated Dice median and IQR"}}};
    }
    return d.dump();
  }

  // Manual approval: true when the offer may go on (approved now or before); otherwise it has
  // been refused or put before the administrator, and answered.
  bool approved_by_administrator(const protocol::Header& h, const std::string& body, const std::string& signature,
                                 const protocol::JobOffer& offer) {
    const auto& job = offer.job;
    const auto digest = offer_digest(offer);
    const auto decided = decision(config.cache_dir, job.id, digest);
    if (decided && !*decided) {
      settle_pending(config.cache_dir, job.id);
      fail(job.id, FailureCode::refused, "refused by this site's administrator");
      return false;
    }
    if (!decided) {
      if (auto st = write_pending(config.cache_dir, {job.id, digest, description(job)}); !st) {
        fail(job.id, FailureCode::internal, st.error().message);
        return false;
      }
      held[job.id] = HeldOffer{Inbound{h, body, signature, Clock::now()}, digest};
      log->warn("job {}: waits for this site's administrator (fedda-agent pending; fedda-agent approve {})", job.id, job.id);
      post(MessageType::job_pending, job.id, 0, protocol::JobPending{"approval by the site's administrator"});
      return false;
    }
    settle_pending(config.cache_dir, job.id);  // the approval stays: the same job offered again runs
    log->info("job {}: approved by this site's administrator", job.id);
    return true;
  }

  // The trainer's options for `job` at this site: which of its subjects it trains and scores on
  // (the source: all; a target: the fold's halves, or on the fly only the subjects named), and
  // the job's settings with this site's device, precision and cache.
  models::SiteJobOptions trainer_options(const protocol::JobSpec& job, const models::ModelSpec& spec, const models::Recipe& recipe,
                                         const std::vector<imaging::SubjectFiles>& subjects) const {
    const auto& id = config.site_id;
    const bool source = id == job.source;
    const bool trains = job.type != JobType::evaluate && std::count(job.sites.begin(), job.sites.end(), id);
    const bool evaluates = job.evaluate && std::count(job.evaluation_sites.begin(), job.evaluation_sites.end(), id);
    models::SiteJobOptions o;
    static_cast<models::LearningSettings&>(o) = models::learning_settings(job);
    o.type = job.type;
    o.spec = spec;
    if (source) {
      if (trains) o.train = subjects;
      if (evaluates) o.evaluation = subjects;
    } else {
      auto split = imaging::split_fold(subjects, job.fold);
      if (!job.subjects.empty()) {  // on the fly: only the named subjects (by pseudonym), adapted and scored
        std::vector<imaging::SubjectFiles> chosen;
        for (const auto& s : subjects) {
          if (std::count(job.subjects.begin(), job.subjects.end(), pseudonym_of(s.subject))) chosen.push_back(s);
        }
        split.adapt = chosen;
        split.test = chosen;
      }
      if (trains) o.train = split.adapt;
      if (evaluates) o.evaluation = split.test;
    }
    o.labelled = job.type == JobType::teacher || (job.type == JobType::ada && source);
    o.domain = source ? 0 : 1;
    o.recipe = recipe;
    o.seed = job.seed ^ std::hash<std::string>{}(id);
    o.device = config.device;
    o.precision = models::precision_request(protocol::setting_name(job.precision), config.precision);
    o.threads = config.threads;
    o.cache_dir = config.cache_dir;
    o.dp = job.dp;
    o.planned_steps = static_cast<long long>(job.rounds) * job.local_steps;
    if (site_kit) o.storage_key = site_kit->storage_key;
    return o;
  }

  // What job_ready will say of the trainer just opened: its samples and subjects, and the
  // subjects it skipped by pseudonym (why stays in this site's log).
  void record_ready(const protocol::JobSpec& job) {
    trainer_ready = protocol::JobReady{};
    trainer_ready.samples = trainer->samples();
    trainer_ready.subjects = trainer->training_subjects();
    trainer_ready.evaluation_subjects = trainer->evaluation_subjects();
    for (const auto& s : trainer->skipped()) {
      log->warn("job {}: subject {} skipped: {}", job.id, s.subject, s.reason);
      const auto slash = s.subject.rfind('/');
      trainer_ready.skipped.push_back({pseudonym_of(slash == std::string::npos ? s.subject : s.subject.substr(slash + 1)),
                                       "failed validation at the site (see the site's log)"});
    }
  }

  void prepare(const protocol::Header& h, const std::string& body, const std::string& signature, bool approved) {
    auto offer = protocol::decode_body<protocol::JobOffer>(body);
    if (!offer) return fail(h.job_id, FailureCode::malformed, "malformed job offer: " + offer.error().message);
    const auto& job = offer->job;
    if (job.id != h.job_id) return fail(h.job_id, FailureCode::malformed, "job offer names two different jobs");
    if (!approved) {
      log->info("job {}: offered ({} from {}, {} rounds of {} steps)", job.id, protocol::job_type_name(job.type), job.source,
                job.rounds, job.local_steps);
    }
    if (const auto [rule, why] = policy_breach(job); !rule.empty()) {
      return fail(job.id, FailureCode::policy, "refused by this site's policy: " + why, rule);
    }
    if (config.policy.approval == "manual" && !approved && !approved_by_administrator(h, body, signature, *offer)) return;
    if (trainer && trainer_job == job.id) {  // e.g. the coordinator restarted: nothing to redo
      log->info("job {}: already prepared", job.id);
      return post_ready(job);
    }
    trainer.reset();
    trainer_job.clear();
    job_steps = job.local_steps;
    job_rounds = job.rounds;
    job_half = job.transfer_precision == protocol::TransferPrecision::float16;
    job_secure = job.secure_aggregation;
    auto spec = models::model_spec_from_json(job.model_spec_json);
    if (!spec) return fail(job.id, FailureCode::malformed, "model spec: " + spec.error().message);
    auto recipe = job.recipe.empty() ? Result<models::Recipe>(models::Recipe{}) : models::recipe_from_json(job.recipe);
    if (!recipe) return fail(job.id, FailureCode::malformed, "recipe: " + recipe.error().message);
    auto index = site_subject_index(config);
    if (!index) return fail(job.id, FailureCode::no_data, index.error().message);
    // What the data layout left out stays in this site's log (fedda-agent check lists it too).
    for (const auto& i : index->ignored) log->warn("job {}: left out {}: {}", job.id, i.path.string(), i.reason);
    subject_ids.clear();
    for (const auto& s : index->subjects) subject_ids.push_back(s.subject);
    const auto o = trainer_options(job, *spec, *recipe, index->subjects);
    log->info("job {} ({}): preparing {} training and {} evaluation subjects", job.id, protocol::job_type_name(job.type),
              o.train.size(), o.evaluation.size());
    auto egress = EgressGuard::for_job(job);
    if (!egress) return fail(job.id, FailureCode::malformed, "egress guard: " + egress.error().message);
    quality_inputs = QualityInputs{o.evaluation, *spec, offer->teacher, offer->quality_estimator, job.rounds + 1};
    auto opened = models::SiteTrainer::open(o, offer->teacher);
    if (!opened) return fail(job.id, FailureCode::no_data, opened.error().message);
    if (const auto [rule, why] = dp_breach((*opened)->dp()); !rule.empty()) {
      return fail(job.id, FailureCode::policy, "refused by this site's policy: " + why, rule);
    }
    guard = std::move(*egress);
    trainer = std::move(*opened);
    trainer_job = job.id;
    record_ready(job);
    log->info("job {}: ready ({} samples)", job.id, trainer_ready.samples);
    post_ready(job);
  }

  // The job's job_ready, carrying its sites for the network thread's secure rounds (they check
  // their rosters against them) and how they weigh its updates.
  void post_ready(const protocol::JobSpec& job) {
    post(MessageType::job_ready, job.id, 0, trainer_ready);
    out.back().training_sites = job.sites;
    out.back().steps_by_share = job.steps_by_share;
  }

  // The label-free quality report of the evaluated model on the evaluated scans, written to
  // cache_dir/reports/<job>/ (per-scan values stay there); its aggregates go with the evaluation.
  // The site's first report is its drift baseline (cache_dir/reports/site-profile.json). A report
  // that cannot be made is logged and the evaluation goes on without it.
  std::optional<protocol::QualitySummary> quality_report(const std::string& job_id, const TensorSet& model) {
    std::optional<protocol::QualitySummary> q;
    try {
      q = make_quality_report(job_id, model);
    } catch (const std::exception& e) {  // LibTorch and JSON throw; the evaluation must not go with them
      log->warn("job {}: no quality report: {}", job_id, e.what());
    }
    // The evaluated weights are written only for the report; they are not kept with it.
    std::error_code ec;
    std::filesystem::remove(config.cache_dir / "reports" / job_id / "model.pt", ec);
    std::filesystem::remove(config.cache_dir / "reports" / job_id / "teacher.pt", ec);
    return q;
  }

  std::optional<protocol::QualitySummary> make_quality_report(const std::string& job_id, const TensorSet& model) {
    const auto& in = quality_inputs;
    if (in.scans.empty()) return std::nullopt;
    MonitorOptions options;
    options.out = config.cache_dir / "reports" / job_id;
    options.model = options.out / "model.pt";
    options.device = config.device;
    options.precision = config.precision;
    options.site_baseline = config.cache_dir / "reports" / "site-profile.json";
    std::error_code ec;
    std::filesystem::create_directories(options.out, ec);
    Status st = models::write_model_weights(options.model, in.spec, model, in.estimator);
    if (st && !in.teacher.tensors.empty()) {
      options.teacher = options.out / "teacher.pt";
      st = models::write_model_weights(*options.teacher, in.spec, in.teacher);
    }
    if (!st) {
      log->warn("job {}: no quality report: {}", job_id, st.error().message);
      return std::nullopt;
    }
    auto summary = run_monitor(options, in.scans);
    if (!summary) {
      log->warn("job {}: no quality report: {}", job_id, summary.error().message);
      return std::nullopt;
    }
    if (!summary->baseline_problem.empty()) log->warn("job {}: drift baseline not used: {}", job_id, summary->baseline_problem);
    log->info("job {}: quality report {} ({} scans, {} flagged{})", job_id, (options.out / "report.html").string(),
              summary->scans, summary->flagged, summary->compared ? ", " + std::to_string(summary->drifted) + " drifted" : "");
    protocol::QualitySummary q;
    q.scans = summary->scans;
    q.flagged = summary->flagged;
    q.drifted = summary->drifted;
    q.site_drifted = summary->site_drifted;
    q.estimated = summary->has_estimator && std::isfinite(summary->median);
    if (q.estimated) {
      q.median = summary->median;
      q.q1 = summary->q1;
      q.q3 = summary->q3;
    }
    return q;
  }

  // At least evaluation_interval_s between two evaluation answers, across restarts.
  bool evaluation_allowed(std::string& why) {
    const double interval = config.policy.evaluation_interval_s;
    if (interval <= 0) return true;
    const auto file = config.cache_dir / "last-evaluation";
    const auto now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    if (auto text = files::read_all(file)) {
      const double last = std::atof(text->c_str());
      if (now - last < interval) {
        why = "an evaluation was answered " + std::to_string(static_cast<long>(now - last)) +
              " s ago; this site answers one every " + std::to_string(static_cast<long>(interval)) + " s at most";
        return false;
      }
    }
    if (auto st = files::write_atomically(file, std::to_string(now) + "\n"); !st) log->warn("{}", st.error().message);
    return true;
  }

  // fail(), for a round's helpers that say whether they succeeded: always false.
  bool failed_task(const std::string& job_id, FailureCode code, const std::string& reason, const std::string& rule = {}) {
    fail(job_id, code, reason, rule);
    return false;
  }

  // An evaluation round: the scores under the subjects' pseudonyms, and the label-free quality
  // report where the policy allows it. False when it failed (the coordinator was told why).
  bool evaluate_round(const protocol::Header& h, const protocol::RoundTask& task, protocol::RoundUpdate& update) {
    if (std::string why; !evaluation_allowed(why)) {
      return failed_task(h.job_id, FailureCode::policy, "refused by this site's policy: " + why, "evaluation_interval_s");
    }
    auto scores = trainer->evaluate(task.model);
    if (!scores) return failed_task(h.job_id, FailureCode::training, "evaluation: " + scores.error().message);
    for (const auto& s : *scores) {
      update.metrics.push_back({pseudonym_of(s.subject), s.metrics.dsc, s.metrics.h95, s.metrics.avd, s.metrics.recall,
                                s.metrics.f1});
    }
    log->info("job {}: evaluated {} subjects", h.job_id, update.metrics.size());
    if (config.policy.quality_reports && h.round == quality_inputs.final_round) {
      // The model as this site evaluated it (under FedBN, with its own batch-norm tensors).
      auto evaluated = trainer->as_evaluated(task.model);
      std::optional<protocol::QualitySummary> q;
      if (evaluated) {
        q = quality_report(h.job_id, *evaluated);
      } else {
        log->warn("job {}: no quality report: {}", h.job_id, evaluated.error().message);
      }
      if (q) {
        // Checked on its own: a report the guard refuses is dropped, the evaluation goes out.
        protocol::RoundUpdate alone;
        alone.has_quality = true;
        alone.quality = *q;
        if (auto st = guard->check(alone, true); st) {
          update.has_quality = true;
          update.quality = *q;
        } else {
          log->warn("job {}: quality report not sent: {}", h.job_id, st.error().message);
        }
      }
    }
    return true;
  }

  // A training round: the steps asked (within the site's policy and, under dp, within what the
  // job's privacy guarantee covers, counted on disk before anything leaves). False when it
  // failed (the coordinator was told why).
  bool train_round(const protocol::Header& h, const protocol::RoundTask& task, protocol::RoundUpdate& update) {
    int steps = job_steps;
    for (std::size_t i = 0; i < task.step_sites.size() && i < task.steps.size(); ++i) {
      if (task.step_sites[i] == config.site_id) steps = task.steps[i];
    }
    if (steps < config.policy.min_local_steps) {
      return failed_task(h.job_id, FailureCode::policy,
                         "refused by this site's policy: a round of " + std::to_string(steps) +
                             " steps is below this site's minimum of " + std::to_string(config.policy.min_local_steps),
                         "min_local_steps");
    }
    // dp: the steps already released on this job, kept on disk (privacy_ledger.h), bound what
    // this round may add; a round trained again after a restart counts again.
    long long released = 0;
    if (trainer->dp().on) {
      auto ledger = read_privacy_ledger(config.cache_dir, h.job_id, trainer->dp());
      if (!ledger) return failed_task(h.job_id, FailureCode::policy, "refused by this site's policy: " + ledger.error().message, "max_epsilon");
      released = *ledger;
      const long long planned = static_cast<long long>(job_rounds) * job_steps;
      if (released + steps > planned) {
        return failed_task(h.job_id, FailureCode::policy,
                           "refused by this site's policy: " + std::to_string(steps) + " more steps after the " +
                               std::to_string(released) + " released go beyond the job's planned " + std::to_string(planned) +
                               ", which its privacy guarantee covers",
                           "max_epsilon");
      }
    }
    auto local = trainer->train(h.round, task.model, task.discriminator, steps, task.learning_rate,
                                task.adversarial_weight);
    if (!local) return failed_task(h.job_id, FailureCode::training, "round " + std::to_string(h.round) + ": " + local.error().message);
    update.model = std::move(local->model);
    update.discriminator_grads = std::move(local->discriminator_grads);
    update.samples = local->samples;
    update.steps = local->steps;
    // Under dp the loss stays here: it is computed from the patients' slices and carries no noise.
    update.loss = trainer->dp().on ? 0 : local->loss;
    update.seconds = local->seconds;
    update.precision = trainer->precision().name() + " (" + trainer->precision().reason + ")";
    if (trainer->dp().on) {  // counted on disk before anything of the round leaves
      const auto& dp = trainer->dp();
      auto spent = privacy::epsilon({dp.noise_multiplier, dp.sample_rate, released + local->steps}, dp.delta);
      if (!spent) return failed_task(h.job_id, FailureCode::internal, "privacy accountant: " + spent.error().message);
      if (auto st = write_privacy_ledger(config.cache_dir, h.job_id, dp, released + local->steps, spent->epsilon); !st) {
        return failed_task(h.job_id, FailureCode::internal, st.error().message);
      }
      update.epsilon = spent->epsilon;
      update.noise_multiplier = dp.noise_multiplier;
      log->info("job {}: round {}: epsilon {:.3f} at delta {} spent on this site's patients so far ({} steps)",
                h.job_id, h.round, spent->epsilon, dp.delta, released + local->steps);
    }
    log->info("job {}: round {} trained ({} steps, loss {:.4f}, {:.1f} s)", h.job_id, h.round, local->steps,
              local->loss, local->seconds);
    return true;
  }

  void run_task(const protocol::Header& h, const std::string& body, Clock::time_point arrived) {
    if (!trainer || trainer_job != h.job_id) {
      return fail(h.job_id, FailureCode::not_prepared, "round task for a job this site has not prepared");
    }
    auto task = protocol::decode_body<protocol::RoundTask>(body);
    if (!task) return fail(h.job_id, FailureCode::malformed, "malformed round task: " + task.error().message);
    if (job_half) task->model = to_full(task->model);  // a float16 transfer arrives at half precision
    protocol::RoundUpdate update;
    if (task->evaluate ? !evaluate_round(h, *task, update) : !train_round(h, *task, update)) return;
    if (auto st = guard->check(update, task->evaluate); !st) {
      return fail(h.job_id, FailureCode::egress,
                  "egress guard refused the update of round " + std::to_string(h.round) + ": " + st.error().message);
    }
    if (job_half) update.model = to_half(update.model);
    // Everything since the task arrived but the training itself (the update's own encoding
    // below cannot time itself; the coordinator's decode of it is of the same size).
    if (!task->evaluate) {
      update.overhead_seconds = std::max(0.0, std::chrono::duration<double>(Clock::now() - arrived).count() - update.seconds);
    }
    post(MessageType::round_update, h.job_id, h.round, update, tensor_summary(update));
    out.back().secure = job_secure && !task->evaluate;
    out.back().evaluation = task->evaluate;
  }

  void release(const std::string& job_id) {
    held.erase(job_id);
    clear_pending(config.cache_dir, job_id);
    if (trainer_job != job_id) return;
    trainer.reset();
    guard.reset();
    trainer_job.clear();
    log->info("job {}: ended; released its data", job_id);
  }

  void dispatch(const Inbound& work, bool approved) {
    const auto& h = work.header;
    try {
      const bool model_message = h.type == MessageType::job_offer || h.type == MessageType::round_task;
      if (auto st = model_message ? check_signature(h, work.body, work.signature) : Status::success(); !st) {
        fail(h.job_id, FailureCode::signature, std::string(protocol::type_name(h.type)) + ": " + st.error().message);
      } else if (h.type == MessageType::job_offer) {
        prepare(h, work.body, work.signature, approved);
      } else if (h.type == MessageType::round_task) {
        run_task(h, work.body, work.arrived);
      } else if (h.type == MessageType::goodbye) {
        release(h.job_id);
      }
    } catch (const std::exception& e) {  // keep the service up whatever one task does
      fail(h.job_id, FailureCode::internal, std::string("unexpected error: ") + e.what());
    }
  }
};

SiteWorker::SiteWorker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SiteWorker::~SiteWorker() = default;

Result<std::unique_ptr<SiteWorker>> SiteWorker::create(SiteConfig config, std::optional<kit::SiteKit> kit) {
  auto impl = std::make_unique<Impl>();
  auto key = pseudonym_key(config);
  if (!key) return make_error("subject pseudonyms: " + key.error().message);
  impl->pseudonym_key = std::move(*key);
  impl->config = std::move(config);
  impl->site_kit = std::move(kit);
  return std::unique_ptr<SiteWorker>(new SiteWorker(std::move(impl)));
}

std::vector<Outgoing> SiteWorker::handle(const Inbound& work) {
  impl_->out.clear();
  impl_->dispatch(work, false);
  return std::move(impl_->out);
}

std::vector<Outgoing> SiteWorker::check_approvals() {
  auto& m = *impl_;
  m.out.clear();
  for (auto it = m.held.begin(); it != m.held.end();) {
    const auto decided = decision(m.config.cache_dir, it->first, it->second.digest);  // polled once a second
    if (!decided) {
      ++it;
      continue;
    }
    const Inbound work = std::move(it->second.offer);
    it = m.held.erase(it);
    settle_pending(m.config.cache_dir, work.header.job_id);
    if (*decided) {
      log::get("agent")->info("job {}: approved by this site's administrator", work.header.job_id);
      m.dispatch(work, true);
    } else {
      m.fail(work.header.job_id, FailureCode::refused, "refused by this site's administrator");
    }
  }
  return std::move(m.out);
}

}  // namespace fedda::site_agent
