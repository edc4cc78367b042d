#include "fedda/coordinator/coordinator.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "fedda/common/crypto.h"
#include "fedda/common/files.h"
#include "fedda/common/kit.h"
#include "fedda/common/log.h"
#include "fedda/common/tensors.h"
#include "fedda/models/federated.h"

namespace fedda::coordinator {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using protocol::MessageType;

namespace {

struct SiteState {
  std::string id;
  std::string routing;
  Clock::time_point last_seen{};
  bool alive = false;
  std::string offered_job;  // job offered on the current connection
  std::string ready_job;    // job it is prepared for
  std::string failed_job;   // job it could not run
  std::int64_t samples = 0;
  int evaluation_subjects = 0;
  std::uint64_t last_sequence = 0;
};

struct SiteRecord {
  std::string site;
  std::int64_t samples = 0;
  int steps = 0;
  double loss = 0;
  double seconds = 0;           // training at the site
  std::int64_t bytes_up = 0;    // its update's body on the wire
  double overhead_seconds = 0;  // the site's verify, decode and encode
};

// Where a round's time went, from encoding its task to its state on disk ("span"): the sites'
// training (the slowest site's) and the federation's share, split where fedda can time it.
struct RoundCost {
  double encode_s = 0;     // serialize (+ float16) and sign the task
  double aggregate_s = 0;  // decode the updates and average them
  double persist_s = 0;    // seal and write the round's weights
  double span_s = 0;
  std::int64_t task_bytes = 0;  // the task's body, sent to every site
};

struct RoundRecord {
  int round = 0;
  double seconds = 0;
  double learning_rate = 0;
  std::vector<SiteRecord> sites;
  std::vector<std::string> missing;  // asked but not counted (late, lost or failed)
  RoundCost cost;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// rounds.jsonl's "federation": the split of a round's span (see RoundCost).
nlohmann::json federation_json(const RoundRecord& r) {
  double training = 0, site = 0;
  for (const auto& s : r.sites) {
    training = std::max(training, s.seconds);
    site = std::max(site, s.overhead_seconds);
  }
  const auto& c = r.cost;
  const double overhead = std::max(0.0, c.span_s - training);
  const double transport = std::max(0.0, overhead - c.encode_s - c.aggregate_s - c.persist_s - site);
  return {{"span_s", c.span_s},       {"training_s", training},       {"overhead_s", overhead},
          {"overhead_share", c.span_s > 0 ? overhead / c.span_s : 0.0},    {"encode_s", c.encode_s},
          {"site_s", site},           {"transport_s", transport},     {"aggregate_s", c.aggregate_s},
          {"persist_s", c.persist_s}, {"task_bytes", c.task_bytes}};
}

std::string round_file(int round, const char* what) {
  char name[64];
  std::snprintf(name, sizeof name, "round-%04d.%s", round, what);
  return name;
}

std::string csv_number(double v) {
  if (!std::isfinite(v)) return "";
  std::ostringstream out;
  out.precision(6);
  out << v;
  return out.str();
}

// A round's global weights at rest: the wire encoding of the TensorSet, sealed with the
// coordinator's storage key (AES-256-GCM) when the consortium has kits.
Status save_weights(const fs::path& path, const TensorSet& weights, const std::string& key) {
  return crypto::write_sealed(path, protocol::encode(protocol::Header{}, weights).body, key);
}

Result<TensorSet> load_weights(const fs::path& path, const std::string& key) {
  auto bytes = crypto::read_sealed(path, key);
  if (!bytes) return bytes.error();
  auto weights = protocol::decode_body<TensorSet>(*bytes);
  if (!weights) return make_error(path.string() + ": " + weights.error().message);
  if (auto st = check_integrity(*weights); !st) return make_error(path.string() + ": " + st.error().message);
  return weights;
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
  return out;
}

}  // namespace

struct Coordinator::Impl {
  CoordinatorOptions o;
  zmq::context_t context{1};
  zmq::socket_t router{context, zmq::socket_type::router};
  zmq::socket_t monitor{context, zmq::socket_type::pair};  // libzmq's connection events, for the log
  std::string endpoint;
  std::shared_ptr<spdlog::logger> log = log::get("coordinator");
  std::map<std::string, SiteState> sites;
  std::map<std::string, std::string> site_of_routing;
  std::uint64_t sequence = 0;
  Clock::time_point next_heartbeat{};
  std::atomic<bool> stopping{false};
  std::optional<kit::CoordinatorKit> consortium;  // set: CurveZMQ, ZAP and model signatures
  std::thread zap;
  std::atomic<bool> zap_stop{false};

  ~Impl() {
    zap_stop = true;
    if (zap.joinable()) zap.join();
  }

  // ZAP (RFC 27) handler: admits a CURVE client only if its key was provisioned, and names it by
  // the site id in that key's manifest (the User-Id of every message it sends).
  void serve_zap(zmq::socket_t& handler) {
    while (!zap_stop) {
      zmq::pollitem_t items[] = {{handler.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 1, std::chrono::milliseconds(100));
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> request;
      if (!zmq::recv_multipart(handler, std::back_inserter(request))) continue;
      if (request.size() < 6) continue;
      const std::string version = request[0].to_string(), id = request[1].to_string();
      const std::string address = request[3].to_string(), mechanism = request[5].to_string();
      std::string status = "400", text = "not admitted", user;
      if (mechanism == "CURVE" && request.size() >= 7) {
        const auto key = crypto::z85_of_key(request[6].to_string_view());
        const auto site = consortium->sites.find(key);
        if (site != consortium->sites.end()) {
          status = "200";
          text = "OK";
          user = site->second;
        } else {
          log->warn("refused a connection from {}: CURVE key {} is not provisioned in this consortium", address, key);
        }
      } else {
        log->warn("refused a connection from {}: mechanism {} (CURVE required)", address, mechanism);
      }
      std::vector<zmq::message_t> reply;
      reply.emplace_back(version);
      reply.emplace_back(id);
      reply.emplace_back(status);
      reply.emplace_back(text);
      reply.emplace_back(user);
      reply.emplace_back();
      zmq::send_multipart(handler, reply);
    }
  }

  // Signature over what a model message means: job, round and the body's digest.
  static std::string signed_text(const std::string& job_id, int round_number, const std::string& body) {
    return "fedda-model-v1\n" + job_id + "\n" + std::to_string(round_number) + "\n" + crypto::sha256_hex(body);
  }

  // The running job.
  const JobDefinition* job = nullptr;
  protocol::Frames offer;
  zmq::message_t offer_body;
  std::string offer_signature;  // empty without a kit
  int round = 0;
  bool evaluating = false;
  protocol::RoundTask task;        // what this round sends
  protocol::Frames task_frames;    // encoded once per round
  zmq::message_t task_body;        // its body, shared by every site's send
  std::string task_signature;
  std::set<std::string> expected;  // sites asked this round and still counted on
  std::set<std::string> answered;
  std::deque<std::string> upload_queue;
  std::set<std::string> uploading;
  std::unique_ptr<RunningAverage> model_average;
  std::unique_ptr<RunningAverage> grad_average;
  RoundRecord record;
  Clock::time_point span_start;  // the current round's task began encoding
  std::vector<EvaluationRow> evaluation;

  // ---- sending ------------------------------------------------------------------------------

  protocol::Header header(MessageType type, const std::string& job_id, int round_number) {
    protocol::Header h;
    h.type = type;
    h.sender = "coordinator";
    h.job_id = job_id;
    h.round = round_number;
    return h;
  }

  // Sends an already encoded body under a fresh header (sequence moves forward per message).
  // With `shared`, the body is that message's buffer, shared by reference count: a model sent
  // to many sites is held once, not once per site waiting in its pipe.
  void send_frames(const SiteState& site, protocol::Header h, const protocol::Frames& frames,
                   zmq::message_t* shared = nullptr, const std::string* signature = nullptr) {
    h.sequence = ++sequence;
    h.body_bytes = shared ? shared->size() : frames.body.size();
    h.body_crc32 = frames.body_crc32;
    try {
      router.send(zmq::buffer(site.routing), zmq::send_flags::sndmore);
      router.send(zmq::buffer(protocol::encode_header(h)), zmq::send_flags::sndmore);
      const auto last = signature ? zmq::send_flags::sndmore : zmq::send_flags::none;
      if (shared) {
        zmq::message_t body;
        body.copy(*shared);
        router.send(body, last);
      } else {
        router.send(zmq::buffer(frames.body), last);
      }
      if (signature) router.send(zmq::buffer(*signature), zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      log->warn("site {}: cannot send {}: {}", site.id, protocol::type_name(h.type), e.what());
    }
  }

  template <typename Body>
  void send(const SiteState& site, MessageType type, const std::string& job_id, int round_number, const Body& body) {
    send_frames(site, header(type, job_id, round_number), protocol::encode(header(type, job_id, round_number), body));
  }

  void send_empty(const SiteState& site, MessageType type, const std::string& job_id, int round_number) {
    send_frames(site, header(type, job_id, round_number), protocol::encode_empty(header(type, job_id, round_number)));
  }

  void send_reject(const std::string& routing, const std::string& reason) {
    SiteState anonymous;
    anonymous.routing = routing;
    anonymous.id = "(unidentified peer)";
    send(anonymous, MessageType::reject, "", 0, protocol::Reject{reason});
  }

  // ---- job membership -----------------------------------------------------------------------

  bool in_job(const std::string& site) const {
    if (!job) return false;
    const auto& s = job->spec;
    return std::count(s.sites.begin(), s.sites.end(), site) ||
           (s.evaluate && std::count(s.evaluation_sites.begin(), s.evaluation_sites.end(), site));
  }

  bool trains(const std::string& site) const {
    return job && job->spec.type != "evaluate" && std::count(job->spec.sites.begin(), job->spec.sites.end(), site);
  }

  void offer_job(SiteState& site) {
    if (!job || !in_job(site.id) || site.offered_job == job->spec.id) return;
    site.offered_job = job->spec.id;
    site.ready_job.clear();
    site.failed_job.clear();
    send_frames(site, header(MessageType::job_offer, job->spec.id, 0), offer, &offer_body,
                consortium ? &offer_signature : nullptr);
    log->info("site {}: offered job {}", site.id, job->spec.id);
  }

  // ---- receiving ----------------------------------------------------------------------------

  void mark_lost(SiteState& site, const std::string& why) {
    if (!site.alive) return;
    site.alive = false;
    site.offered_job.clear();
    site.ready_job.clear();
    site_of_routing.erase(site.routing);
    log->warn("site {}: {}", site.id, why);
    if (expected.erase(site.id) && !answered.count(site.id)) record.missing.push_back(site.id + " (lost)");
    uploading.erase(site.id);
    upload_queue.erase(std::remove(upload_queue.begin(), upload_queue.end(), site.id), upload_queue.end());
  }

  void handle_hello(const std::string& routing, const protocol::Header& h, const std::string& body) {
    auto hello = protocol::decode_body<protocol::Hello>(body);
    if (!hello) {
      log->warn("dropped hello from an unidentified peer: {}", hello.error().message);
      return;
    }
    const auto& id = hello->site_id;
    if (id.empty() || id != h.sender) {
      log->warn("dropped hello whose site id '{}' differs from its sender '{}'", id, h.sender);
      return send_reject(routing, "site id and sender differ");
    }
    if (!o.allowed_sites.empty() && !std::count(o.allowed_sites.begin(), o.allowed_sites.end(), id)) {
      log->warn("refused site '{}': not in this consortium's registry", id);
      return send_reject(routing, "site '" + id + "' is not registered with this consortium");
    }
    auto& site = sites[id];
    if (site.alive && site.routing != routing) site_of_routing.erase(site.routing);
    if (h.sequence <= site.last_sequence) {
      log->warn("site {}: dropped hello with sequence {} (last seen {})", id, h.sequence, site.last_sequence);
      return;
    }
    const bool rejoin = site.alive;
    site.id = id;
    site.routing = routing;
    site.alive = true;
    site.last_seen = Clock::now();
    site.last_sequence = h.sequence;
    site.offered_job.clear();
    site.ready_job.clear();
    site_of_routing[routing] = id;
    if (expected.count(id) && !answered.count(id)) {  // a new session cannot answer the old task
      expected.erase(id);
      record.missing.push_back(id + " (reconnected)");
    }
    log->info("site {} {} (agent {}, device {})", id, rejoin ? "reconnected" : "joined", hello->agent_version, hello->device);
    send(site, MessageType::welcome, "", 0,
         protocol::Welcome{static_cast<std::int32_t>(o.heartbeat.count()), o.liveness});
    offer_job(site);
  }

  void handle_update(SiteState& site, const protocol::Header& h, const std::string& body) {
    if (!uploading.count(site.id) || h.round != round || !expected.count(site.id) || answered.count(site.id)) {
      log->warn("site {}: update for round {} discarded (round {} open, {})", site.id, h.round, round,
                answered.count(site.id) ? "already counted" : "not asked for or late");
      return;
    }
    uploading.erase(site.id);
    const auto received = Clock::now();
    auto update = protocol::decode_body<protocol::RoundUpdate>(body);
    if (!update) {
      log->warn("site {}: malformed update dropped: {}", site.id, update.error().message);
      expected.erase(site.id);
      record.missing.push_back(site.id + " (malformed)");
      return;
    }
    if (evaluating) {
      for (const auto& m : update->metrics) evaluation.push_back({site.id, m});
      answered.insert(site.id);
      log->info("site {}: evaluated {} subjects", site.id, update->metrics.size());
      return;
    }
    const double weight = static_cast<double>(update->samples);
    Status st = model_average->add(update->model, weight);
    if (st && grad_average) st = grad_average->add(update->discriminator_grads, weight);
    if (!st) {
      log->warn("site {}: update for round {} refused: {}", site.id, round, st.error().message);
      expected.erase(site.id);
      record.missing.push_back(site.id + " (refused)");
      return;
    }
    answered.insert(site.id);
    record.sites.push_back({site.id, update->samples, update->steps, update->loss, update->seconds,
                            static_cast<std::int64_t>(body.size()), update->overhead_seconds});
    record.cost.aggregate_s += seconds_since(received);
    log->info("site {}: round {} update in ({} samples, {} steps, loss {:.4f}, {:.1f} s)", site.id, round,
              update->samples, update->steps, update->loss, update->seconds);
  }

  void handle(const std::string& routing, const protocol::Header& h, const std::string& body) {
    if (h.type == MessageType::hello) return handle_hello(routing, h, body);
    const auto who = site_of_routing.find(routing);
    if (who == site_of_routing.end()) {
      log->warn("dropped {} from a peer that has not said hello", protocol::type_name(h.type));
      return send_reject(routing, "say hello first");
    }
    auto& site = sites[who->second];
    if (h.sender != site.id) {
      log->warn("site {}: dropped {} claiming to be from '{}'", site.id, protocol::type_name(h.type), h.sender);
      return;
    }
    if (h.sequence <= site.last_sequence) {
      log->warn("site {}: dropped {} with sequence {} (replayed or reordered; last {})", site.id,
                protocol::type_name(h.type), h.sequence, site.last_sequence);
      return;
    }
    site.last_sequence = h.sequence;
    site.last_seen = Clock::now();
    const bool current_job = job && h.job_id == job->spec.id;
    switch (h.type) {
      case MessageType::heartbeat: return;
      case MessageType::goodbye:
        mark_lost(site, "left (goodbye)");
        return;
      case MessageType::job_ready: {
        if (!current_job) break;
        auto ready = protocol::decode_body<protocol::JobReady>(body);
        if (!ready) {
          log->warn("site {}: malformed job_ready dropped: {}", site.id, ready.error().message);
          return;
        }
        site.ready_job = h.job_id;
        site.samples = ready->samples;
        site.evaluation_subjects = ready->evaluation_subjects;
        for (const auto& s : ready->skipped) log->warn("site {}: skipped subject {}: {}", site.id, s.subject, s.reason);
        log->info("site {}: ready for {} ({} training subjects, {} samples, {} evaluation subjects)", site.id,
                  h.job_id, ready->subjects, ready->samples, ready->evaluation_subjects);
        return;
      }
      case MessageType::job_failed: {
        if (!current_job) break;
        auto failed = protocol::decode_body<protocol::JobFailed>(body);
        site.failed_job = h.job_id;
        site.ready_job.clear();
        log->error("site {}: cannot run job {}: {}", site.id, h.job_id, failed ? failed->reason : "(malformed reason)");
        if (expected.erase(site.id)) record.missing.push_back(site.id + " (failed)");
        uploading.erase(site.id);
        return;
      }
      case MessageType::update_ready:
        if (!current_job) break;
        if (h.round != round || !expected.count(site.id) || answered.count(site.id)) {
          log->warn("site {}: update for round {} of {} discarded (round {} open)", site.id, h.round, h.job_id, round);
          return;
        }
        if (std::find(upload_queue.begin(), upload_queue.end(), site.id) == upload_queue.end() &&
            !uploading.count(site.id)) {
          upload_queue.push_back(site.id);
        }
        return;
      case MessageType::round_update:
        if (!current_job) break;
        return handle_update(site, h, body);
      default:
        log->warn("site {}: dropped unexpected {}", site.id, protocol::type_name(h.type));
        return;
    }
    log->warn("site {}: dropped {} for job '{}', which is not running", site.id, protocol::type_name(h.type), h.job_id);
  }

  // Connections libzmq closed or refused before any message reached fedda (a failed CurveZMQ
  // handshake, a frame that does not authenticate, an oversized frame, a peer gone).
  void log_connection_events() {
    for (;;) {
      std::vector<zmq::message_t> event;
      try {
        if (!zmq::recv_multipart(monitor, std::back_inserter(event), zmq::recv_flags::dontwait)) return;
      } catch (const zmq::error_t&) {
        return;
      }
      if (event.size() != 2 || event[0].size() < 6) continue;
      std::uint16_t id = 0;
      std::uint32_t value = 0;
      std::memcpy(&id, event[0].data(), 2);
      std::memcpy(&value, static_cast<const char*>(event[0].data()) + 2, 4);
      const std::string address = event[1].to_string();
      switch (id) {
        case ZMQ_EVENT_DISCONNECTED: log->info("connection {} closed", address); break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
          log->warn("connection {} refused: authentication failed (status {})", address, value);
          break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
          log->warn("connection {} refused: protocol error 0x{:x} (e.g. a frame that does not decrypt)", address, value);
          break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
          log->warn("connection {} refused: handshake failed (errno {})", address, value);
          break;
        default: break;
      }
    }
  }

  // Serves the socket until `deadline` or until messages were handled, whichever is first (the
  // caller looks at what changed and pumps again): messages, heartbeats, upload credits, liveness.
  void pump(Clock::time_point deadline) {
    bool handled = false;
    do {
      const auto now = Clock::now();
      if (now >= next_heartbeat) {
        for (auto& [id, site] : sites) {
          if (!site.alive) continue;
          if (now - site.last_seen > o.heartbeat * o.liveness) {
            mark_lost(site, "silent for " + std::to_string(o.liveness) + " heartbeats, counted as gone");
            continue;
          }
          send_empty(site, MessageType::heartbeat, "", 0);
        }
        next_heartbeat = now + o.heartbeat;
      }
      while (uploading.size() < static_cast<std::size_t>(o.max_concurrent_uploads) && !upload_queue.empty()) {
        const auto id = upload_queue.front();
        upload_queue.pop_front();
        uploading.insert(id);
        send_empty(sites[id], MessageType::upload, job->spec.id, round);
      }
      const auto wait = std::min<Clock::duration>(deadline - Clock::now(), next_heartbeat - Clock::now());
      const auto ms = std::max<long>(0, std::chrono::duration_cast<std::chrono::milliseconds>(wait).count());
      zmq::pollitem_t items[] = {{router.handle(), 0, ZMQ_POLLIN, 0}, {monitor.handle(), 0, ZMQ_POLLIN, 0}};
      try {
        zmq::poll(items, 2, std::chrono::milliseconds(ms));
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) log->warn("poll: {}", e.what());
      }
      if (items[1].revents & ZMQ_POLLIN) log_connection_events();
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      for (int n = 0; n < 64; ++n) {  // drain what is there, then look at the clock again
        std::vector<zmq::message_t> parts;
        try {
          if (!zmq::recv_multipart(router, std::back_inserter(parts), zmq::recv_flags::dontwait)) break;
        } catch (const zmq::error_t& e) {
          log->warn("receive: {}", e.what());
          break;
        }
        if (parts.size() != 3) {
          log->warn("dropped a message with {} frame(s) (expected header and body)", parts.size() - 1);
          continue;
        }
        const std::string routing = parts[0].to_string();
        std::string authenticated;
        if (consortium) {
          const char* user = parts[1].gets("User-Id");
          authenticated = user ? user : "";
        }
        const std::string header_frame = parts[1].to_string();
        std::string body = parts[2].to_string();
        parts.clear();
        auto h = protocol::decode_header(header_frame, body, o.max_message_bytes);
        if (!h) {
          const auto who = site_of_routing.find(routing);
          log->warn("dropped a malformed message from {}: {}",
                    who == site_of_routing.end() ? "an unidentified peer" : "site " + who->second, h.error().message);
          continue;
        }
        if (consortium && h->sender != authenticated) {
          log->warn("dropped {} claiming to be from '{}' on the connection of site '{}' (identity is the key's)",
                    protocol::type_name(h->type), h->sender, authenticated);
          continue;
        }
        handle(routing, *h, body);
        handled = true;
      }
    } while (Clock::now() < deadline && !stopping && !handled);
  }

  // ---- job state on disk --------------------------------------------------------------------

  fs::path job_dir() const { return o.out / job->spec.id; }

  Status save_state(int finished_round, const std::vector<RoundRecord>& records, bool done,
                    const models::DiscriminatorOptimizer* discriminator) {
    nlohmann::json rounds = nlohmann::json::array();
    for (const auto& r : records) {
      nlohmann::json sites_json = nlohmann::json::array();
      for (const auto& s : r.sites) {
        sites_json.push_back({{"site", s.site}, {"samples", s.samples}, {"steps", s.steps}, {"loss", s.loss},
                              {"seconds", s.seconds}, {"bytes_up", s.bytes_up}, {"overhead_seconds", s.overhead_seconds}});
      }
      rounds.push_back({{"round", r.round}, {"seconds", r.seconds}, {"learning_rate", r.learning_rate},
                        {"sites", sites_json}, {"missing", r.missing}, {"federation", federation_json(r)}});
    }
    nlohmann::json state = {{"job", nlohmann::json::parse(protocol::to_json(job->spec))},
                            {"finished_round", finished_round},
                            {"status", done ? "done" : "running"},
                            {"model", round_file(finished_round, "weights")},
                            {"discriminator", discriminator ? round_file(finished_round, "discriminator.pt") : ""},
                            {"rounds", rounds}};
    std::string jsonl;
    for (const auto& r : rounds) jsonl += r.dump() + "\n";
    if (auto st = files::write_atomically(job_dir() / "rounds.jsonl", jsonl); !st) return st;
    return files::write_atomically(job_dir() / "state.json", state.dump(2) + "\n");
  }
};

Coordinator::Coordinator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Coordinator::~Coordinator() = default;
std::string Coordinator::endpoint() const { return impl_->endpoint; }
void Coordinator::stop() { impl_->stopping = true; }

Result<std::unique_ptr<Coordinator>> Coordinator::start(const CoordinatorOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->o = options;
  if (!options.kit.empty()) {
    auto loaded = kit::load_coordinator_kit(options.kit);
    if (!loaded) return loaded.error();
    impl->consortium = std::move(*loaded);
    if (!zmq_has("curve")) return make_error("this libzmq has no CURVE support");
    // The ZAP handler must be up before the socket binds: without one libzmq admits anyone.
    auto handler = std::make_shared<zmq::socket_t>(impl->context, zmq::socket_type::rep);
    try {
      handler->bind("inproc://zeromq.zap.01");
    } catch (const zmq::error_t& e) {
      return make_error(std::string("cannot start the ZAP handler: ") + e.what());
    }
    Impl* raw = impl.get();
    impl->zap = std::thread([raw, handler] { raw->serve_zap(*handler); });
    impl->log->info("consortium {}: CurveZMQ on, {} provisioned sites", impl->consortium->consortium,
                    impl->consortium->sites.size());
  }
  try {
    if (impl->consortium) {
      impl->router.set(zmq::sockopt::curve_server, true);
      impl->router.set(zmq::sockopt::curve_secretkey, impl->consortium->curve_secret);
      impl->router.set(zmq::sockopt::zap_domain, "fedda");
    }
    const std::string monitor_endpoint = "inproc://fedda-coordinator-monitor";
    if (zmq_socket_monitor(impl->router.handle(), monitor_endpoint.c_str(),
                           ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) == 0) {
      impl->monitor.connect(monitor_endpoint);
    }
    impl->router.set(zmq::sockopt::linger, 0);
    // Frames up to twice the limit are read, logged and dropped by decode_header; libzmq cuts a
    // peer that sends anything larger before reading it, so memory stays bounded either way.
    impl->router.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(2 * options.max_message_bytes + 65536));
    impl->router.set(zmq::sockopt::router_mandatory, false);
    std::string bind = options.bind;
    if (bind.size() > 2 && bind.compare(bind.size() - 2, 2, ":0") == 0) bind.replace(bind.size() - 1, 1, "*");
    impl->router.bind(bind);
    impl->endpoint = impl->router.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return make_error("cannot bind " + options.bind + ": " + e.what());
  }
  std::error_code ec;
  fs::create_directories(options.out, ec);
  if (ec) return make_error(options.out.string() + ": cannot create: " + ec.message());
  if (!options.endpoint_file.empty()) {
    if (auto st = files::write_atomically(options.endpoint_file, impl->endpoint + "\n"); !st) return st.error();
  }
  impl->sequence = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  impl->log->info("listening on {}", impl->endpoint);
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(impl)));
}

void Coordinator::say_goodbye(const std::string& reason) {
  for (auto& [id, site] : impl_->sites) {
    if (site.alive) impl_->send(site, MessageType::goodbye, "", 0, protocol::Goodbye{reason});
  }
}

namespace {

// The model a job starts from or distils: a file, or another job's final model.
Result<models::StoredModel> resolve_model(const std::string& reference, const fs::path& out) {
  if (reference.rfind("job:", 0) == 0) {
    const auto path = out / reference.substr(4) / "model.pt";
    if (!fs::exists(path)) return make_error(reference + ": that job has not finished (no " + path.string() + ")");
    return models::read_model_weights(path);
  }
  return models::read_model_weights(reference);
}

double round_learning_rate(const protocol::JobSpec& j, int round) {
  const int decay = j.decay_round >= 0 ? j.decay_round : std::max(1, j.rounds * 3 / 8);
  return round > decay ? j.learning_rate * 0.1 : j.learning_rate;
}

}  // namespace

Result<JobOutcome> Coordinator::run(const JobDefinition& definition) {
  auto& m = *impl_;
  const auto start = Clock::now();
  m.job = &definition;
  struct Reset {
    Impl& m;
    ~Reset() {
      m.job = nullptr;
      m.expected.clear();
      m.answered.clear();
      m.upload_queue.clear();
      m.uploading.clear();
    }
  } reset{m};
  auto spec = definition.spec;
  const auto dir = m.job_dir();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return make_error(dir.string() + ": cannot create: " + ec.message());
  JobOutcome outcome;
  outcome.id = spec.id;
  outcome.model = dir / "model.pt";

  // Resume from the last finished round, if any.
  int finished = 0;
  std::vector<RoundRecord> records;
  std::string discriminator_file;
  if (fs::exists(dir / "state.json")) {
    auto text = files::read_all(dir / "state.json");
    if (!text) return text.error();
    try {
      const auto state = nlohmann::json::parse(*text);
      auto stored = protocol::job_spec_from_json(state.at("job").dump());
      if (!stored) return make_error((dir / "state.json").string() + ": " + stored.error().message);
      if (stored->type != spec.type || stored->sites != spec.sites || stored->rounds != spec.rounds) {
        return make_error((dir / "state.json").string() + ": job '" + spec.id +
                          "' ran before with different settings; use a new id or remove that folder");
      }
      finished = state.at("finished_round").get<int>();
      discriminator_file = state.at("discriminator").get<std::string>();
      for (const auto& r : state.at("rounds")) {
        RoundRecord rec;
        rec.round = r.at("round").get<int>();
        rec.seconds = r.at("seconds").get<double>();
        rec.learning_rate = r.at("learning_rate").get<double>();
        rec.missing = r.at("missing").get<std::vector<std::string>>();
        for (const auto& s : r.at("sites")) {
          rec.sites.push_back({s.at("site").get<std::string>(), s.at("samples").get<std::int64_t>(),
                               s.at("steps").get<int>(), s.at("loss").get<double>(), s.at("seconds").get<double>()});
        }
        records.push_back(rec);
      }
      if (state.at("status") == "done" && fs::exists(outcome.model)) {
        m.log->info("job {} already finished ({} rounds); results in {}", spec.id, finished, dir.string());
        outcome.rounds = finished;
        if (fs::exists(dir / "results.csv")) outcome.results_csv = dir / "results.csv";
        return outcome;
      }
    } catch (const std::exception& e) {
      return make_error((dir / "state.json").string() + ": unreadable job state: " + e.what());
    }
    outcome.resumed = finished > 0;
    if (finished > 0) m.log->info("job {}: resuming after round {} of {}", spec.id, finished, spec.rounds);
  }

  const std::string storage_key = m.consortium ? m.consortium->storage_key : std::string();
  // The model the job trains and, for kd, the teacher the sites distil.
  models::ModelSpec model_spec;
  TensorSet global;
  protocol::JobOffer offer;
  if (spec.type != "teacher" || !definition.teacher.empty()) {
    auto teacher = resolve_model(definition.teacher, m.o.out);
    if (!teacher) return make_error(definition.file.string() + ": teacher: " + teacher.error().message);
    model_spec = teacher->spec;
    global = teacher->weights;
    if (spec.type == "kd") offer.teacher = teacher->weights;
  } else {
    auto parsed = models::model_spec_from_json(spec.model_spec_json);
    if (!parsed) return parsed.error();
    model_spec = *parsed;
    auto fresh = models::new_model_weights(model_spec, spec.seed);
    if (!fresh) return fresh.error();
    global = std::move(*fresh);
  }
  model_spec.role = spec.type == "teacher" ? "teacher" : spec.type == "kd" ? "student" : spec.type;
  spec.model_spec_json = models::to_json(model_spec);
  std::unique_ptr<models::DiscriminatorOptimizer> discriminator;
  if (spec.type == "ada") {
    auto weights = models::new_discriminator_weights(model_spec, spec.seed);
    if (!weights) return weights.error();
    auto created = models::DiscriminatorOptimizer::create(model_spec, *weights, spec.learning_rate);
    if (!created) return created.error();
    discriminator = std::move(*created);
  }
  if (finished > 0) {
    auto stored = load_weights(dir / round_file(finished, "weights"), storage_key);
    if (!stored) return stored.error();
    if (auto st = check_same_layout(*stored, global); !st) return make_error(dir.string() + ": round state: " + st.error().message);
    global = std::move(*stored);
    if (discriminator) {
      if (auto st = discriminator->load(dir / discriminator_file, storage_key); !st) return st.error();
    }
  }
  offer.job = spec;
  m.offer = protocol::encode(m.header(MessageType::job_offer, spec.id, 0), offer);
  if (m.consortium) {
    auto signature = crypto::sign(m.consortium->sign_private, Impl::signed_text(spec.id, 0, m.offer.body));
    if (!signature) return make_error("signing the job offer: " + signature.error().message);
    m.offer_signature = *signature;
  }
  m.offer_body.rebuild(m.offer.body.data(), m.offer.body.size());
  m.offer.body.clear();
  m.offer.body.shrink_to_fit();
  offer = {};
  for (auto& [id, site] : m.sites) {
    if (site.alive) m.offer_job(site);
  }

  // Rounds.
  const auto ready_sites = [&](bool training) {
    std::vector<std::string> ready;
    for (const auto& [id, site] : m.sites) {
      if (!site.alive || site.ready_job != spec.id || site.failed_job == spec.id) continue;
      if (training ? (m.trains(id) && site.samples > 0)
                   : (std::count(spec.evaluation_sites.begin(), spec.evaluation_sites.end(), id) &&
                      site.evaluation_subjects > 0)) {
        ready.push_back(id);
      }
    }
    return ready;
  };
  // Asks `sites` for the current task and collects their answers until all counted-on sites
  // answered, or the deadline passed with at least `needed` answers.
  const auto collect = [&](int needed, const std::function<std::vector<std::string>()>& candidates) -> Status {
    const auto round_start = Clock::now();
    const auto deadline = round_start + std::chrono::milliseconds(static_cast<long>(spec.round_deadline_s * 1000));
    const auto give_up = deadline + m.o.start_timeout;
    m.expected.clear();
    m.answered.clear();
    m.upload_queue.clear();
    m.uploading.clear();
    if (spec.steps_by_share && !m.evaluating) {  // one centralized epoch per round, shared by sample count
      const auto sites_now = candidates();
      double total = 0;
      for (const auto& id : sites_now) total += static_cast<double>(m.sites[id].samples);
      for (const auto& id : sites_now) {
        m.task.step_sites.push_back(id);
        m.task.steps.push_back(std::max(1, static_cast<int>(std::lround(spec.local_steps * m.sites[id].samples / total))));
      }
    }
    const auto encode_start = Clock::now();
    if (spec.transfer_precision == "float16" && !m.evaluating) m.task.model = to_half(m.task.model);
    m.task_frames = protocol::encode(m.header(MessageType::round_task, spec.id, m.round), m.task);
    if (m.consortium) {
      auto signature = crypto::sign(m.consortium->sign_private, Impl::signed_text(spec.id, m.round, m.task_frames.body));
      if (!signature) return make_error("signing round " + std::to_string(m.round) + ": " + signature.error().message);
      m.task_signature = *signature;
    }
    m.task_body.rebuild(m.task_frames.body.data(), m.task_frames.body.size());
    m.record.cost.task_bytes = static_cast<std::int64_t>(m.task_body.size());
    m.record.cost.encode_s = seconds_since(encode_start);
    m.span_start = encode_start;
    m.task_frames.body.clear();
    m.task_frames.body.shrink_to_fit();
    m.task.model = TensorSet{};
    m.task.discriminator = TensorSet{};
    const auto ask = [&](const std::string& id) {
      m.expected.insert(id);
      m.send_frames(m.sites[id], m.header(MessageType::round_task, spec.id, m.round), m.task_frames, &m.task_body,
                    m.consortium ? &m.task_signature : nullptr);
    };
    for (const auto& id : candidates()) ask(id);
    while (!m.stopping) {
      const int got = static_cast<int>(m.answered.size());
      const bool all_in = got == static_cast<int>(m.expected.size()) && got > 0;
      if ((all_in && got >= needed) || (Clock::now() >= deadline && got >= needed && got > 0)) break;
      if (Clock::now() >= give_up) {
        return make_error("round " + std::to_string(m.round) + " of job " + spec.id + ": only " + std::to_string(got) +
                          " of the " + std::to_string(needed) + " sites needed answered in time");
      }
      // Sites that (re)joined and got ready may take part while the round still lacks answers.
      if (static_cast<int>(m.expected.size()) < std::max(needed, 1) || m.expected.empty()) {
        for (const auto& id : candidates()) {
          if (!m.expected.count(id) && !m.answered.count(id)) {
            m.log->info("site {}: joins round {} late", id, m.round);
            ask(id);
          }
        }
      }
      m.pump(std::min(Clock::now() + std::chrono::milliseconds(200), deadline > Clock::now() ? deadline : give_up));
    }
    if (m.stopping) return make_error("stopped");
    for (const auto& id : m.expected) {
      if (!m.answered.count(id)) {
        m.log->warn("site {}: no answer by the deadline of round {}; its late answer will be discarded", id, m.round);
        m.record.missing.push_back(id + " (late)");
      }
    }
    m.expected.clear();
    return Status::success();
  };

  for (int r = finished + 1; r <= spec.rounds && spec.type != "evaluate"; ++r) {
    const auto round_start = Clock::now();
    m.round = r;
    m.evaluating = false;
    m.record = RoundRecord{};
    m.record.round = r;
    m.record.learning_rate = round_learning_rate(spec, r);
    m.task = protocol::RoundTask{};
    m.task.learning_rate = m.record.learning_rate;
    m.task.adversarial_weight =
        spec.type == "ada" ? spec.ada_weight * std::min(1.0, (r - 1) / static_cast<double>(std::max(1, spec.ada_warmup_rounds)))
                           : 0.0;
    m.task.model = global;
    if (discriminator) {
      auto w = discriminator->weights();
      if (!w) return w.error();
      m.task.discriminator = std::move(*w);
    }
    m.model_average = std::make_unique<RunningAverage>(global);
    m.grad_average.reset();
    if (discriminator) {
      TensorSet layout;
      for (const auto& t : m.task.discriminator.tensors) {
        if (t.dtype == DType::f32 && t.name.find("running_") == std::string::npos && t.name.find("num_batches") == std::string::npos) {
          layout.tensors.push_back(t);
        }
      }
      m.grad_average = std::make_unique<RunningAverage>(layout);
    }
    // Wait for enough ready sites, and for connected sites still preparing (computing soft
    // labels, say) up to the round deadline, so that a slow start does not leave them out.
    const auto wait_until = Clock::now() + m.o.start_timeout;
    const auto grace_until = Clock::now() + std::chrono::milliseconds(static_cast<long>(spec.round_deadline_s * 1000));
    const auto preparing = [&] {
      for (const auto& [id, site] : m.sites) {
        if (site.alive && m.trains(id) && site.offered_job == spec.id && site.ready_job != spec.id &&
            site.failed_job != spec.id) {
          return true;
        }
      }
      return false;
    };
    while ((static_cast<int>(ready_sites(true).size()) < spec.min_sites || (preparing() && Clock::now() < grace_until)) &&
           !m.stopping) {
      if (Clock::now() >= wait_until) {
        return make_error("job " + spec.id + ": only " + std::to_string(ready_sites(true).size()) + " of min_sites " +
                          std::to_string(spec.min_sites) + " sites ready after " +
                          std::to_string(m.o.start_timeout.count()) + " s");
      }
      m.pump(std::min(wait_until, Clock::now() + std::chrono::milliseconds(200)));
    }
    m.log->info("job {}: round {}/{} with {} sites", spec.id, r, spec.rounds, ready_sites(true).size());
    if (auto st = collect(spec.min_sites, [&] { return ready_sites(true); }); !st) return st.error();
    const auto average_start = Clock::now();
    auto averaged = m.model_average->average();
    if (!averaged) return averaged.error();
    global = std::move(*averaged);
    m.record.cost.aggregate_s += seconds_since(average_start);
    m.task = protocol::RoundTask{};
    if (discriminator) {
      auto grads = m.grad_average->average();
      if (!grads) return grads.error();
      if (auto st = discriminator->step(*grads, m.record.learning_rate); !st) return st.error();
    }
    // Persist: round files first, then the state that points at them.
    const auto persist_start = Clock::now();
    if (auto st = save_weights(dir / round_file(r, "weights"), global, storage_key); !st) return st.error();
    if (discriminator) {
      if (auto st = discriminator->save(dir / round_file(r, "discriminator.pt"), storage_key); !st) return st.error();
    }
    m.record.cost.persist_s = seconds_since(persist_start);
    m.record.cost.span_s = seconds_since(m.span_start);
    m.record.seconds = std::chrono::duration<double>(Clock::now() - round_start).count();
    records.push_back(m.record);
    if (auto st = m.save_state(r, records, false, discriminator.get()); !st) return st.error();
    fs::remove(dir / round_file(r - 1, "weights"), ec);
    fs::remove(dir / round_file(r - 1, "discriminator.pt"), ec);
    finished = r;
    double loss = 0;
    std::int64_t samples = 0;
    for (const auto& s : m.record.sites) {
      loss += s.loss * s.samples;
      samples += s.samples;
    }
    const auto federation = federation_json(m.record);
    m.log->info("job {}: round {}/{} done in {:.1f} s: {} sites, mean loss {:.4f}, federation {:.0f} ms ({:.1f}% of {:.2f} s){}",
                spec.id, r, spec.rounds, m.record.seconds, m.record.sites.size(), samples ? loss / samples : 0.0,
                1000 * federation["overhead_s"].get<double>(), 100 * federation["overhead_share"].get<double>(),
                m.record.cost.span_s, m.record.missing.empty() ? "" : ", missing " + std::to_string(m.record.missing.size()));
  }
  m.model_average.reset();
  m.grad_average.reset();
  if (auto st = models::write_model_weights(outcome.model, model_spec, global); !st) return st.error();

  // Evaluation at the labelled sites.
  if (spec.evaluate && !spec.evaluation_sites.empty()) {
    m.round = spec.rounds + 1;
    m.evaluating = true;
    m.evaluation.clear();
    m.record = RoundRecord{};
    m.task = protocol::RoundTask{};
    m.task.evaluate = true;
    m.task.model = global;
    const auto wait_until = Clock::now() + m.o.start_timeout;
    const auto all_ready = [&] {
      std::size_t n = 0;
      for (const auto& id : spec.evaluation_sites) {
        const auto it = m.sites.find(id);
        if (it != m.sites.end() && it->second.alive && it->second.ready_job == spec.id) ++n;
      }
      return n == spec.evaluation_sites.size();
    };
    while (!all_ready() && Clock::now() < wait_until && !m.stopping) m.pump(Clock::now() + std::chrono::milliseconds(200));
    m.log->info("job {}: evaluating at {}", spec.id, joined(ready_sites(false)));
    if (auto st = collect(1, [&] { return ready_sites(false); }); !st) return st.error();
    std::string csv = "source,target,fold,method,mode,subject,dsc,h95,avd,recall,f1\n";
    for (const auto& row : m.evaluation) {
      const auto& x = row.metrics;
      csv += spec.source + "," + row.site + "," + std::to_string(spec.fold) + "," + definition.method + ",federated," +
             x.subject + "," + csv_number(x.dsc) + "," + csv_number(x.h95) + "," + csv_number(x.avd) + "," +
             csv_number(x.recall) + "," + csv_number(x.f1) + "\n";
    }
    outcome.results_csv = dir / "results.csv";
    if (auto st = files::write_atomically(outcome.results_csv, csv); !st) return st.error();
    outcome.evaluation = m.evaluation;
  }
  if (auto st = m.save_state(finished, records, true, discriminator.get()); !st) return st.error();
  outcome.rounds = finished;
  outcome.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  nlohmann::json summary = {{"job", spec.id}, {"type", spec.type}, {"method", definition.method},
                            {"rounds", finished}, {"seconds", outcome.seconds}, {"resumed", outcome.resumed}};
  std::map<std::string, std::pair<double, int>> dice;
  for (const auto& row : outcome.evaluation) {
    if (std::isfinite(row.metrics.dsc)) {
      dice[row.site].first += row.metrics.dsc;
      dice[row.site].second += 1;
    }
  }
  for (const auto& [site, d] : dice) summary["mean_dsc"][site] = d.first / d.second;
  if (auto st = files::write_atomically(dir / "summary.json", summary.dump(2) + "\n"); !st) return st.error();
  for (auto& [id, site] : m.sites) {
    if (site.alive && m.in_job(id)) m.send(site, MessageType::goodbye, spec.id, 0, protocol::Goodbye{"job finished"});
  }
  m.log->info("job {} finished in {:.1f} s", spec.id, outcome.seconds);
  return outcome;
}

}  // namespace fedda::coordinator
