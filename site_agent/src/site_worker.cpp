#include "site_worker.h"

#include <algorithm>

#include "fedda/common/crypto.h"
#include "fedda/common/log.h"
#include "fedda/models/federated.h"
#include "fedda/models/model_spec.h"
#include "fedda/site_agent/egress.h"

namespace fedda::site_agent {
using protocol::JobType;
using protocol::MessageType;

struct SiteWorker::Impl {
  SiteConfig config;
  std::optional<kit::SiteKit> site_kit;
  std::shared_ptr<spdlog::logger> log = log::get("agent");
  std::unique_ptr<models::SiteTrainer> trainer;
  std::optional<EgressGuard> guard;
  std::string trainer_job;
  protocol::JobReady trainer_ready;
  int job_steps = 32;
  bool job_half = false;  // the job's models cross the network as float16
  std::vector<Outgoing> out;

  protocol::Header header(MessageType type, const std::string& job_id, int round) const {
    protocol::Header h;
    h.type = type;
    h.sender = config.site_id;
    h.job_id = job_id;
    h.round = round;
    return h;
  }

  template <typename Body>
  void post(MessageType type, const std::string& job_id, int round, const Body& body, std::string tensors = {}) {
    out.push_back({type, job_id, round, protocol::encode(header(type, job_id, round), body), std::move(tensors)});
  }

  void fail(const std::string& job_id, const std::string& reason) {
    log->error("job {}: {}", job_id, reason);
    post(MessageType::job_failed, job_id, 0, protocol::JobFailed{reason});
  }

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

  void prepare(const protocol::Header& h, const std::string& body) {
    auto offer = protocol::decode_body<protocol::JobOffer>(body);
    if (!offer) return fail(h.job_id, "malformed job offer: " + offer.error().message);
    const auto& job = offer->job;
    if (job.id != h.job_id) return fail(h.job_id, "job offer names two different jobs");
    if (trainer && trainer_job == job.id) {  // e.g. the coordinator restarted: nothing to redo
      log->info("job {}: already prepared", job.id);
      return post(MessageType::job_ready, job.id, 0, trainer_ready);
    }
    trainer.reset();
    trainer_job.clear();
    job_steps = job.local_steps;
    job_half = job.transfer_precision == "float16";
    auto spec = models::model_spec_from_json(job.model_spec_json);
    if (!spec) return fail(job.id, "model spec: " + spec.error().message);
    auto subjects = site_subjects(config);
    if (!subjects) return fail(job.id, subjects.error().message);

    const auto& id = config.site_id;
    const bool source = id == job.source;
    const bool trains = job.type != JobType::evaluate && std::count(job.sites.begin(), job.sites.end(), id);
    const bool evaluates = job.evaluate && std::count(job.evaluation_sites.begin(), job.evaluation_sites.end(), id);
    models::SiteJobOptions o;
    o.type = job.type;
    o.spec = *spec;
    if (source) {
      if (trains) o.train = *subjects;
      if (evaluates) o.evaluation = *subjects;
    } else {
      auto split = imaging::split_fold(*subjects, job.fold);
      if (!job.subjects.empty()) {  // on the fly: only the named subjects, adapted and scored
        std::vector<imaging::SubjectFiles> chosen;
        for (const auto& s : *subjects) {
          if (std::count(job.subjects.begin(), job.subjects.end(), s.subject)) chosen.push_back(s);
        }
        split.adapt = chosen;
        split.test = chosen;
      }
      if (trains) o.train = split.adapt;
      if (evaluates) o.evaluation = split.test;
    }
    o.labelled = job.type == JobType::teacher || (job.type == JobType::ada && source);
    o.domain = source ? 0 : 1;
    o.batch_size = job.batch_size;
    o.lesion_slice_fraction = job.lesion_slice_fraction;
    o.augment = job.augment;
    o.dice_weight = job.dice_weight;
    o.temperature = job.temperature;
    o.seed = job.seed ^ std::hash<std::string>{}(id);
    o.device = config.device;
    o.threads = config.threads;
    o.cache_dir = config.cache_dir;
    if (site_kit) o.storage_key = site_kit->storage_key;
    log->info("job {} ({}): preparing {} training and {} evaluation subjects", job.id, protocol::job_type_name(job.type),
              o.train.size(), o.evaluation.size());
    auto egress = EgressGuard::for_job(job);
    if (!egress) return fail(job.id, "egress guard: " + egress.error().message);
    auto opened = models::SiteTrainer::open(o, offer->teacher);
    if (!opened) return fail(job.id, opened.error().message);
    guard = std::move(*egress);
    trainer = std::move(*opened);
    trainer_job = job.id;
    trainer_ready = protocol::JobReady{};
    trainer_ready.samples = trainer->samples();
    trainer_ready.subjects = trainer->training_subjects();
    trainer_ready.evaluation_subjects = trainer->evaluation_subjects();
    for (const auto& s : trainer->skipped()) {
      log->warn("job {}: subject {} skipped: {}", job.id, s.subject, s.reason);
      trainer_ready.skipped.push_back({s.subject, "failed validation at the site (see the site's log)"});
    }
    log->info("job {}: ready ({} samples)", job.id, trainer_ready.samples);
    post(MessageType::job_ready, job.id, 0, trainer_ready);
  }

  void run_task(const protocol::Header& h, const std::string& body, Clock::time_point arrived) {
    if (!trainer || trainer_job != h.job_id) return fail(h.job_id, "round task for a job this site has not prepared");
    auto task = protocol::decode_body<protocol::RoundTask>(body);
    if (!task) return fail(h.job_id, "malformed round task: " + task.error().message);
    if (job_half) task->model = to_full(task->model);  // a float16 transfer arrives at half precision
    protocol::RoundUpdate update;
    if (task->evaluate) {
      auto scores = trainer->evaluate(task->model);
      if (!scores) return fail(h.job_id, "evaluation: " + scores.error().message);
      for (const auto& s : *scores) {
        update.metrics.push_back({s.subject, s.metrics.dsc, s.metrics.h95, s.metrics.avd, s.metrics.recall, s.metrics.f1});
      }
      log->info("job {}: evaluated {} subjects", h.job_id, update.metrics.size());
    } else {
      int steps = job_steps;
      for (std::size_t i = 0; i < task->step_sites.size() && i < task->steps.size(); ++i) {
        if (task->step_sites[i] == config.site_id) steps = task->steps[i];
      }
      auto local = trainer->train(h.round, task->model, task->discriminator, steps, task->learning_rate,
                                  task->adversarial_weight);
      if (!local) return fail(h.job_id, "round " + std::to_string(h.round) + ": " + local.error().message);
      update.model = std::move(local->model);
      update.discriminator_grads = std::move(local->discriminator_grads);
      update.samples = local->samples;
      update.steps = local->steps;
      update.loss = local->loss;
      update.seconds = local->seconds;
      log->info("job {}: round {} trained ({} steps, loss {:.4f}, {:.1f} s)", h.job_id, h.round, local->steps,
                local->loss, local->seconds);
    }
    if (auto st = guard->check(update, task->evaluate); !st) {
      return fail(h.job_id, "egress guard refused the update of round " + std::to_string(h.round) + ": " + st.error().message);
    }
    if (job_half) update.model = to_half(update.model);
    // Everything since the task arrived but the training itself (the update's own encoding
    // below cannot time itself; the coordinator's decode of it is of the same size).
    if (!task->evaluate) {
      update.overhead_seconds = std::max(0.0, std::chrono::duration<double>(Clock::now() - arrived).count() - update.seconds);
    }
    post(MessageType::round_update, h.job_id, h.round, update, tensor_summary(update));
  }

  void release(const std::string& job_id) {
    if (trainer_job != job_id) return;
    trainer.reset();
    guard.reset();
    trainer_job.clear();
    log->info("job {}: ended; released its data", job_id);
  }
};

SiteWorker::SiteWorker(SiteConfig config, std::optional<kit::SiteKit> kit) : impl_(std::make_unique<Impl>()) {
  impl_->config = std::move(config);
  impl_->site_kit = std::move(kit);
}
SiteWorker::~SiteWorker() = default;

std::vector<Outgoing> SiteWorker::handle(const Inbound& work) {
  auto& m = *impl_;
  m.out.clear();
  const auto& h = work.header;
  try {
    const bool model_message = h.type == MessageType::job_offer || h.type == MessageType::round_task;
    if (auto st = model_message ? m.check_signature(h, work.body, work.signature) : Status::success(); !st) {
      m.fail(h.job_id, std::string(protocol::type_name(h.type)) + ": " + st.error().message);
    } else if (h.type == MessageType::job_offer) {
      m.prepare(h, work.body);
    } else if (h.type == MessageType::round_task) {
      m.run_task(h, work.body, work.arrived);
    } else if (h.type == MessageType::goodbye) {
      m.release(h.job_id);
    }
  } catch (const std::exception& e) {  // keep the service up whatever one task does
    m.fail(h.job_id, std::string("unexpected error: ") + e.what());
  }
  return std::move(m.out);
}

}  // namespace fedda::site_agent
