#include "fedda/site_agent/agent.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <fcntl.h>
#include <unistd.h>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "fedda/common/crypto.h"
#include "fedda/common/kit.h"
#include "fedda/common/log.h"
#include "fedda/common/protocol.h"
#include "fedda/models/federated.h"
#include "fedda/models/model_spec.h"
#include "fedda/site_agent/egress.h"

namespace fedda::site_agent {
using Clock = std::chrono::steady_clock;
using protocol::MessageType;

namespace {

constexpr const char* kAgentVersion = "0.1.0";

struct Work {
  protocol::Header header;
  std::string body;
  std::string signature;  // of a model message, when the consortium signs them
  Clock::time_point arrived = Clock::now();
};

struct Outgoing {
  MessageType type;
  std::string job_id;
  int round = 0;
  protocol::Frames frames;
  std::string tensors;  // for the audit log
};

std::uint64_t now_micros() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

}  // namespace

struct Agent::Impl {
  SiteConfig config;
  std::shared_ptr<spdlog::logger> log = log::get("agent");
  std::atomic<bool> stopping{false};

  // Worker side.
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<Work> inbox;
  std::deque<Outgoing> outbox;
  bool busy = false;
  bool worker_exit = false;
  int wake_pipe[2] = {-1, -1};  // the worker writes a byte when it posts; the network loop polls it
  std::unique_ptr<models::SiteTrainer> trainer;
  std::optional<EgressGuard> guard;
  std::string trainer_job;
  protocol::JobReady trainer_ready;

  // Network side.
  std::uint64_t sequence = now_micros();  // moves forward across restarts too
  std::optional<kit::SiteKit> site_kit;

  // A model message must carry the coordinator's signature over (job, round, body digest).
  Status check_signature(const protocol::Header& h, const std::string& body, const std::string& signature) const {
    if (!site_kit) return Status::success();
    if (signature.empty()) return make_error("unsigned model refused");
    const std::string text = "fedda-model-v1\n" + h.job_id + "\n" + std::to_string(h.round) + "\n" + crypto::sha256_hex(body);
    if (auto st = crypto::verify(site_kit->coordinator_sign_public, text, signature); !st) {
      return make_error("model signature refused: " + st.error().message);
    }
    return Status::success();
  }

  protocol::Header header(MessageType type, const std::string& job_id, int round) {
    protocol::Header h;
    h.type = type;
    h.sender = config.site_id;
    h.job_id = job_id;
    h.round = round;
    return h;
  }

  void post(MessageType type, const std::string& job_id, int round, protocol::Frames frames, std::string tensors = {}) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      outbox.push_back({type, job_id, round, std::move(frames), std::move(tensors)});
    }
    // Wake the network loop now rather than at its next poll timeout (a full pipe already wakes it).
    if (wake_pipe[1] >= 0 && ::write(wake_pipe[1], "!", 1) < 0) {}
  }

  template <typename Body>
  void post(MessageType type, const std::string& job_id, int round, const Body& body) {
    post(type, job_id, round, protocol::encode(header(type, job_id, round), body));
  }

  void fail(const std::string& job_id, const std::string& reason) {
    log->error("job {}: {}", job_id, reason);
    post(MessageType::job_failed, job_id, 0, protocol::JobFailed{reason});
  }

  // ---- worker -------------------------------------------------------------------------------

  void prepare(const protocol::Header& h, const std::string& body) {
    auto offer = protocol::decode_body<protocol::JobOffer>(body);
    if (!offer) return fail(h.job_id, "malformed job offer: " + offer.error().message);
    const auto& job = offer->job;
    job_steps = job.local_steps;
    job_half = job.transfer_precision == "float16";
    if (job.id != h.job_id) return fail(h.job_id, "job offer names two different jobs");
    if (trainer && trainer_job == job.id) {  // e.g. the coordinator restarted: nothing to redo
      log->info("job {}: already prepared", job.id);
      return post(MessageType::job_ready, job.id, 0, trainer_ready);
    }
    trainer.reset();
    trainer_job.clear();
    auto spec = models::model_spec_from_json(job.model_spec_json);
    if (!spec) return fail(job.id, "model spec: " + spec.error().message);
    auto subjects = site_subjects(config);
    if (!subjects) return fail(job.id, subjects.error().message);

    const auto& id = config.site_id;
    const bool source = id == job.source;
    const bool trains = job.type != "evaluate" && std::count(job.sites.begin(), job.sites.end(), id);
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
    o.labelled = job.type == "teacher" || (job.type == "ada" && source);
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
    log->info("job {} ({}): preparing {} training and {} evaluation subjects", job.id, job.type, o.train.size(),
              o.evaluation.size());
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
      update.overhead_seconds =
          std::max(0.0, std::chrono::duration<double>(Clock::now() - arrived).count() - update.seconds);
    }
    post(MessageType::round_update, h.job_id, h.round, protocol::encode(header(MessageType::round_update, h.job_id, h.round), update),
         tensor_summary(update));
  }
  int job_steps = 32;
  bool job_half = false;  // the job's models cross the network as float16

  void worker_loop() {
    for (;;) {
      Work work;
      {
        std::unique_lock<std::mutex> lock(mutex);
        wake.wait(lock, [&] { return worker_exit || !inbox.empty(); });
        if (inbox.empty()) return;
        work = std::move(inbox.front());
        inbox.pop_front();
        busy = true;
      }
      try {
        const bool model_message = work.header.type == MessageType::job_offer || work.header.type == MessageType::round_task;
        if (auto st = model_message ? check_signature(work.header, work.body, work.signature) : Status::success(); !st) {
          fail(work.header.job_id, std::string(protocol::type_name(work.header.type)) + ": " + st.error().message);
        } else if (work.header.type == MessageType::job_offer) {
          prepare(work.header, work.body);
        } else if (work.header.type == MessageType::round_task) {
          run_task(work.header, work.body, work.arrived);
        } else if (work.header.type == MessageType::goodbye) {
          if (trainer_job == work.header.job_id) {
            trainer.reset();
            guard.reset();
            trainer_job.clear();
            log->info("job {}: finished; released its data", work.header.job_id);
          }
        }
      } catch (const std::exception& e) {  // keep the service up whatever one task does
        fail(work.header.job_id, std::string("unexpected error: ") + e.what());
      }
      std::lock_guard<std::mutex> lock(mutex);
      busy = false;
    }
  }

  // ---- network ------------------------------------------------------------------------------

  int run() {
    if (!config.kit.empty()) {
      auto loaded = kit::load_site_kit(config.kit);
      if (!loaded) {
        log->error("kit: {}", loaded.error().message);
        return 1;
      }
      if (loaded->site_id != config.site_id) {
        log->error("kit {} was issued to site '{}', not '{}'", config.kit.string(), loaded->site_id, config.site_id);
        return 1;
      }
      site_kit = std::move(*loaded);
      log->info("site {}: consortium {}, CurveZMQ with the provisioned keys", config.site_id, site_kit->consortium);
    }
    if (::pipe2(wake_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
      log->error("cannot create the worker's wake-up pipe: {}", std::strerror(errno));
      return 1;
    }
    std::thread worker([this] { worker_loop(); });
    zmq::context_t context{1};
    std::unique_ptr<zmq::socket_t> socket;
    auto heartbeat = std::chrono::milliseconds(config.heartbeat_ms);
    int liveness = protocol::kDefaultLiveness;
    auto backoff = std::chrono::milliseconds(config.reconnect_min_ms);
    Clock::time_point last_heard, next_heartbeat, last_hello, stop_requested{};
    std::uint64_t coordinator_sequence = 0;
    std::map<std::pair<std::string, int>, std::pair<protocol::Frames, std::string>> pending;  // awaiting upload credit
    AuditLog audit(config.cache_dir / "audit.jsonl");

    const auto send = [&](MessageType type, const std::string& job_id, int round, const protocol::Frames& frames,
                          const std::string& tensors = {}) {
      audit.record(type, job_id, round, frames.body, tensors);
      protocol::Header h = header(type, job_id, round);
      h.sequence = ++sequence;
      h.body_bytes = frames.body.size();
      h.body_crc32 = frames.body_crc32;
      try {
        socket->send(zmq::buffer(protocol::encode_header(h)), zmq::send_flags::sndmore);
        socket->send(zmq::buffer(frames.body), zmq::send_flags::none);
      } catch (const zmq::error_t& e) {
        log->warn("cannot send {}: {}", protocol::type_name(type), e.what());
      }
    };
    const auto send_empty = [&](MessageType type, const std::string& job_id, int round) {
      send(type, job_id, round, protocol::encode_empty(header(type, job_id, round)));
    };
    const auto hello = [&] {
      protocol::Hello body{config.site_id, kAgentVersion, config.device};
      send(MessageType::hello, "", 0, protocol::encode(header(MessageType::hello, "", 0), body));
      last_hello = Clock::now();
    };
    const auto connect = [&] {
      socket = std::make_unique<zmq::socket_t>(context, zmq::socket_type::dealer);
      socket->set(zmq::sockopt::linger, 0);
      socket->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(2 * protocol::kDefaultMaxMessageBytes + 65536));
      if (site_kit) {
        socket->set(zmq::sockopt::curve_serverkey, site_kit->coordinator_curve_public);
        socket->set(zmq::sockopt::curve_publickey, site_kit->site_curve_public);
        socket->set(zmq::sockopt::curve_secretkey, site_kit->site_curve_secret);
      }
      socket->connect(config.coordinator);
      coordinator_sequence = 0;
      pending.clear();
      hello();
      last_heard = Clock::now();
      next_heartbeat = Clock::now() + heartbeat;
    };
    try {
      connect();
    } catch (const zmq::error_t& e) {
      log->error("cannot connect to {}: {}", config.coordinator, e.what());
      {
        std::lock_guard<std::mutex> lock(mutex);
        worker_exit = true;
      }
      wake.notify_all();
      worker.join();
      ::close(wake_pipe[0]);
      ::close(wake_pipe[1]);
      return 1;
    }
    log->info("site {}: connecting to {}", config.site_id, config.coordinator);

    for (;;) {
      if (stopping && stop_requested == Clock::time_point{}) {
        stop_requested = Clock::now();
        std::lock_guard<std::mutex> lock(mutex);
        inbox.clear();  // no new work; the running task may finish
        log->info("stopping: draining the current task (up to {:.0f} s)", config.drain_timeout_s);
      }
      if (stop_requested != Clock::time_point{}) {
        bool idle;
        {
          std::lock_guard<std::mutex> lock(mutex);
          idle = !busy && outbox.empty();
        }
        const bool timed_out = Clock::now() - stop_requested > std::chrono::duration<double>(config.drain_timeout_s);
        // A finished update gets a short grace period for its upload credit.
        const bool uploaded = pending.empty() || Clock::now() - stop_requested > std::chrono::seconds(5);
        if ((idle && uploaded) || timed_out) break;
      }
      zmq::pollitem_t items[] = {{socket->handle(), 0, ZMQ_POLLIN, 0}, {nullptr, wake_pipe[0], ZMQ_POLLIN, 0}};
      try {
        zmq::poll(items, 2, std::chrono::milliseconds(50));
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) log->warn("poll: {}", e.what());
      }
      if (items[1].revents & ZMQ_POLLIN) {
        char drained[64];
        while (::read(wake_pipe[0], drained, sizeof drained) > 0) {}
      }
      if (items[0].revents & ZMQ_POLLIN) {
        for (int n = 0; n < 16; ++n) {
          std::vector<zmq::message_t> parts;
          try {
            if (!zmq::recv_multipart(*socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) break;
          } catch (const zmq::error_t& e) {
            log->warn("receive: {}", e.what());
            break;
          }
          if (parts.size() != 2 && parts.size() != 3) {
            log->warn("dropped a message of {} frames from the coordinator", parts.size());
            continue;
          }
          const auto arrived = Clock::now();
          const std::string header_frame = parts[0].to_string();
          std::string body = parts[1].to_string();
          std::string signature = parts.size() == 3 ? parts[2].to_string() : std::string();
          parts.clear();
          auto h = protocol::decode_header(header_frame, body);
          if (!h) {
            log->warn("dropped a malformed message from the coordinator: {}", h.error().message);
            continue;
          }
          if (h->sender != "coordinator" || h->sequence <= coordinator_sequence) {
            log->warn("dropped {} (sender '{}', sequence {} after {})", protocol::type_name(h->type), h->sender,
                      h->sequence, coordinator_sequence);
            continue;
          }
          coordinator_sequence = h->sequence;
          last_heard = Clock::now();
          switch (h->type) {
            case MessageType::welcome: {
              auto w = protocol::decode_body<protocol::Welcome>(body);
              if (w && w->heartbeat_ms >= 10 && w->liveness >= 2) {
                heartbeat = std::chrono::milliseconds(w->heartbeat_ms);
                liveness = w->liveness;
              }
              backoff = std::chrono::milliseconds(config.reconnect_min_ms);
              log->info("site {}: joined the consortium at {}", config.site_id, config.coordinator);
              break;
            }
            case MessageType::heartbeat: break;
            case MessageType::job_offer:
            case MessageType::round_task:
              if (stop_requested != Clock::time_point{}) {
                log->info("stopping: {} for job {} not started", protocol::type_name(h->type), h->job_id);
                break;
              }
              {
                std::lock_guard<std::mutex> lock(mutex);
                inbox.push_back({*h, std::move(body), std::move(signature), arrived});
              }
              wake.notify_one();
              break;
            case MessageType::upload: {
              const auto it = pending.find({h->job_id, h->round});
              if (it == pending.end()) {
                log->warn("upload asked for job {} round {}, which this site has no update for", h->job_id, h->round);
                break;
              }
              send(MessageType::round_update, h->job_id, h->round, it->second.first, it->second.second);
              log->info("job {}: round {} update uploaded ({:.1f} MB)", h->job_id, h->round, it->second.first.body.size() / 1e6);
              pending.erase(it);
              break;
            }
            case MessageType::reject: {
              auto r = protocol::decode_body<protocol::Reject>(body);
              const std::string reason = r ? r->reason : "(malformed)";
              log->warn("coordinator refused a message: {}", reason);
              if (reason == "say hello first" && Clock::now() - last_hello > std::chrono::seconds(1)) hello();
              break;
            }
            case MessageType::goodbye:
              if (h->job_id.empty()) {
                auto g = protocol::decode_body<protocol::Goodbye>(body);
                log->info("coordinator said goodbye: {}", g ? g->reason : "(no reason)");
              } else {
                std::lock_guard<std::mutex> lock(mutex);
                inbox.push_back({*h, std::move(body), {}});
                wake.notify_one();
              }
              break;
            default:
              log->warn("dropped unexpected {} from the coordinator", protocol::type_name(h->type));
          }
        }
      }
      // Results of the worker.
      std::deque<Outgoing> out;
      {
        std::lock_guard<std::mutex> lock(mutex);
        out.swap(outbox);
      }
      for (auto& o : out) {
        if (o.type == MessageType::round_update) {
          pending[{o.job_id, o.round}] = {std::move(o.frames), std::move(o.tensors)};
          send_empty(MessageType::update_ready, o.job_id, o.round);
        } else {
          send(o.type, o.job_id, o.round, o.frames);
        }
      }
      const auto now = Clock::now();
      if (now >= next_heartbeat) {
        send_empty(MessageType::heartbeat, "", 0);
        next_heartbeat = now + heartbeat;
      }
      if (now - last_heard > heartbeat * liveness && stop_requested == Clock::time_point{}) {
        log->warn("coordinator silent for {} ms; reconnecting in {} ms",
                  std::chrono::duration_cast<std::chrono::milliseconds>(now - last_heard).count(), backoff.count());
        socket.reset();
        const auto until = Clock::now() + backoff;
        while (Clock::now() < until && !stopping) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        backoff = std::min(backoff * 2, std::chrono::milliseconds(config.reconnect_max_ms));
        connect();
      }
    }
    if (socket) {
      send(MessageType::goodbye, "", 0,
           protocol::encode(header(MessageType::goodbye, "", 0), protocol::Goodbye{"agent stopping"}));
      socket->set(zmq::sockopt::linger, 1000);
      socket.reset();
    }
    bool abandoned;
    {
      std::lock_guard<std::mutex> lock(mutex);
      worker_exit = true;
      inbox.clear();
      abandoned = busy;
    }
    wake.notify_all();
    if (abandoned) {
      log->warn("site {}: drain timeout passed; abandoning the running task", config.site_id);
      worker.detach();
      return 3;
    }
    worker.join();
    ::close(wake_pipe[0]);
    ::close(wake_pipe[1]);
    log->info("site {}: stopped", config.site_id);
    return 0;
  }
};

Agent::Agent(SiteConfig config) : impl_(std::make_unique<Impl>()) { impl_->config = std::move(config); }
Agent::~Agent() = default;
int Agent::run() { return impl_->run(); }
void Agent::stop() { impl_->stopping = true; }

}  // namespace fedda::site_agent
