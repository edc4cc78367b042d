#pragma once
// The fedda wire protocol: every message between the coordinator and site agents, its
// constants, and the codec: the messages here, their encoding in protocol_codec.h (included at
// the end), apart from the coordinator and the agent as ZeroMQ's Majordomo keeps mdp.h apart
// from broker and worker.
//
// A message is two ZeroMQ frames (after the ROUTER's routing id):
//   frame 0  Header: protocol version, message type, sender, job id, round, per-sender
//            sequence number, byte count and CRC-32 of frame 1
//   frame 1  Body: the message struct of that type (may be empty for heartbeats)
// Both are Cereal portable-binary archives (little-endian on every host). Every struct has a
// versioned serialize() (CEREAL_CLASS_VERSION in protocol_codec.h); a reader refuses versions
// newer than it knows (detail::check_known_version), and reads every older one. Tensors travel as
// WireTensor (named, typed, shaped raw buffers with a CRC each).
//
// Two planes use this framing: the data plane (sites <-> coordinator: hello ... upload) and the
// admin plane (operators <-> coordinator: admin_request / admin_reply), each on its own
// endpoint; the coordinator's ZAP handler admits site keys on the first and operator keys on
// the second only.
//
// Decoding never trusts a length: every string and array size is checked against the bytes
// that are actually left before anything is allocated, so a malformed or hostile frame costs
// at most its own size and yields an Error, never a crash. The security layer wraps these two
// frames (authentication, replay refusal) without reshaping them: `sequence` already moves
// forward per sender, and (job, round) already name what a message belongs to.

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <sstream>
#include <type_traits>
#include <string>
#include <vector>

// Cereal's registry of class versions is one map for the whole process; without its lock two
// threads encoding at once (an agent's worker and its network loop, a test's fake sites and
// fuzzer) race on it, and the coordinator fuzzer found the heap use-after-free that follows.
// Every file that includes cereal includes it here, so the setting is the same everywhere.
#ifndef CEREAL_THREAD_SAFE
#define CEREAL_THREAD_SAFE 1
#endif
#include <cereal/archives/portable_binary.hpp>

#include "fedda/common/result.h"
#include "fedda/common/secagg.h"
#include "fedda/common/settings.h"
#include "fedda/common/tensors.h"

// A bool on the wire is one byte that must be 0 or 1. Cereal loads any byte into the bool, which
// is undefined behaviour for the others (the protocol fuzzer found it: "load of value 182, which
// is not a valid value for type 'bool'"); a message holding one is refused as malformed. Found by
// argument-dependent lookup on the archive, so it serves every bool field of every message.
namespace cereal {
inline void CEREAL_LOAD_FUNCTION_NAME(PortableBinaryInputArchive& ar, bool& value) {
  std::uint8_t byte = 0;
  ar(byte);
  if (byte > 1) throw Exception("a boolean field holds " + std::to_string(byte) + ", not 0 or 1");
  value = byte == 1;
}
}  // namespace cereal

namespace fedda::protocol {

inline constexpr std::uint32_t kVersion = 1;
inline constexpr std::size_t kDefaultMaxMessageBytes = std::size_t{512} << 20;  // a frame larger is dropped
inline constexpr int kDefaultHeartbeatMs = 1000;
inline constexpr int kDefaultLiveness = 5;  // heartbeats missed before a peer counts as gone

// Every string on the wire that a person reads (ids, names, reasons, job files, JSON answers)
// is valid UTF-8 of at most its kind's length, checked when it is decoded, so nothing later
// (a JSON dump, a page, a log) meets one that is not; a message holding a string outside its
// kind is refused as malformed and names the kind. Ids and lines also hold no control character
// (a newline in an id would forge a log line). Keys, signatures, masked vectors and file
// contents are bytes and are not text.
enum class TextKind : std::uint8_t {
  id,        // a site, job, subject or tensor name, or an enumerated setting: one line
  line,      // a device's description, what a site computed in: one line
  reason,    // why something failed or waits: may span lines
  document,  // a job file, a model spec, a JSON answer: may span lines
};
inline constexpr std::size_t max_text_bytes(TextKind kind) {
  switch (kind) {
    case TextKind::id: return 256;
    case TextKind::line: return 1024;
    case TextKind::reason: return std::size_t{64} << 10;
    case TextKind::document: return kDefaultMaxMessageBytes;
  }
  return 0;
}
const char* text_kind_name(TextKind kind);

enum class MessageType : std::uint8_t {
  hello = 1,         // agent -> coordinator: who I am (first message after every connect)
  welcome = 2,       // coordinator -> agent: accepted, heartbeat settings
  heartbeat = 3,     // both ways, body empty
  job_offer = 4,     // coordinator -> agent: a job to prepare for (spec + starting weights)
  job_ready = 5,     // agent -> coordinator: prepared; how many training samples it holds
  round_task = 6,    // coordinator -> agent: train one round (or evaluate) from these weights
  round_update = 7,  // agent -> coordinator: new weights, discriminator gradients, metrics
  job_failed = 8,    // agent -> coordinator: could not prepare or run the job, and why
  reject = 9,        // coordinator -> agent: message refused, and why
  goodbye = 10,      // agent -> coordinator: leaving (drained), or coordinator -> agent: job over
  update_ready = 11, // agent -> coordinator: a round's update is ready to upload (body empty)
  upload = 12,       // coordinator -> agent: send that update now (credit-based flow control:
                     // a few uploads at a time, so coordinator memory does not grow with sites)
  admin_request = 13,  // operator -> coordinator, on the admin endpoint only
  admin_reply = 14,    // coordinator -> operator
  job_pending = 15,    // agent -> coordinator: the offer waits for the site administrator's approval
  // Secure aggregation (secagg.h), one round's four stages; the coordinator only relays:
  secagg_keys = 16,    // coordinator -> agent: make round keys (empty); agent -> coordinator: PublicKeys
  secagg_roster = 17,  // coordinator -> agent: every site's keys (Roster)
  secagg_shares = 18,  // agent -> coordinator: its encrypted shares (SecaggShares)
  secagg_relay = 19,   // coordinator -> agent: the shares addressed to it (ShareRelay)
  secagg_unmask = 20,  // coordinator -> agent: who sent a masked update; agent -> coordinator: shares (SecaggUnmask)
  logs_request = 21,   // coordinator -> agent: an operator asks for the site's recent log lines (LogsRequest)
  logs_reply = 22,     // agent -> coordinator: what the site's policy lets leave of them (LogsReply)
};
inline constexpr MessageType kLastMessageType = MessageType::logs_reply;
const char* type_name(MessageType type);

// What a job asks of its sites. On the wire and in files it is its name.
enum class JobType : std::uint8_t { teacher = 1, kd = 2, ada = 3, evaluate = 4 };
const char* job_type_name(JobType type);
// Error lists the known types.
Result<JobType> parse_job_type(const std::string& name);


// Why the coordinator refused a message (Reject.code): agents act on the code, never on text.
enum class RejectCode : std::uint16_t {
  unspecified = 0,
  say_hello_first = 1,   // a message from a connection that has not said hello
  not_registered = 2,    // the site id is not in this consortium's registry
  sender_mismatch = 3,   // the hello's site id differs from the header's sender
  revoked = 4,           // this site's key was revoked by an operator
  not_an_operator = 5,   // an admin request on the data endpoint, or from a key that is not an operator's
  duplicate_session = 6, // a second agent with a site's key while the first is still connected
};
const char* reject_code_name(RejectCode code);

// Why a site did not prepare or run a job (JobFailed.code); the coordinator and operators act on
// the code, the text is for people and has been through the site's egress guard.
enum class FailureCode : std::uint16_t {
  unspecified = 0,
  policy = 1,          // the site's policy does not allow the job (JobFailed.rule names the rule)
  refused = 2,         // the site's administrator refused it
  signature = 3,       // a model message without the coordinator's valid signature
  malformed = 4,       // an offer or task that does not decode or names two jobs
  no_data = 5,         // no usable scans for the job at this site
  not_prepared = 6,    // a task for a job this site has not prepared
  training = 7,        // training or evaluation failed at the site
  egress = 8,          // the egress guard refused what the round would send
  internal = 9,        // anything else (details in the site's log and audit log)
  secure_aggregation = 10,  // a secure-aggregation stage failed (a relayed key not signed by its site, ...)
};
const char* failure_code_name(FailureCode code);

// The text the coordinator signs (Ed25519) for every message that carries a model (job offer,
// round task): job, round and the SHA-256 of the exact body, so a signature cannot be moved to
// another job, round or body. Sites verify it against the coordinator key in their kit.
std::string model_signed_text(const std::string& job_id, int round, const std::string& body);

// Parameters, not buffers: batch-norm statistics and counters (running_mean, running_var,
// num_batches_tracked) have no gradient. The one filter the egress guard (what a site may send
// as discriminator gradients) and the coordinator (what it averages) both use.
bool is_parameter(const std::string& tensor_name);

// A subject leaves a site only as its pseudonym: "s-" and 16 lowercase hex digits (the site
// agent's HMAC of the id). The coordinator takes no other subject from the wire.
bool is_pseudonym(const std::string& subject);
TensorSet parameters_only(const TensorSet& set);

// One row of a results.csv: a subject's metrics under one method. Written through csv_line,
// which quotes a field holding a comma, quote or line break (RFC 4180), so a subject id from
// the wire can never add a row or a column.
inline constexpr const char* kResultsCsvHeader = "source,target,fold,method,mode,subject,dsc,h95,avd,recall,f1";
struct ResultRow {
  std::string source, target;
  int fold = 0;
  std::string method, mode, subject;
  double dsc = 0, h95 = 0, avd = 0, recall = 0, f1 = 0;  // NaN = undefined: an empty cell
};
std::string csv_line(const ResultRow& row);  // with its line break
std::string csv_field(const std::string& text);
// A number as results files write it: 6 significant digits, empty for NaN or infinity.
std::string csv_number(double v);
// Fields of one CSV line (quoted fields unquoted). `line` has no line break.
std::vector<std::string> csv_fields(const std::string& line);
// The rows of a results.csv's text; error names the line that does not parse.
Result<std::vector<ResultRow>> parse_results_csv(const std::string& csv);

struct Header {
  std::uint32_t version = kVersion;
  MessageType type = MessageType::heartbeat;
  std::string sender;        // site id or "coordinator"; the security layer binds it to a key
  std::string job_id;        // empty for control messages
  std::int32_t round = 0;    // 0 outside rounds (job offer, evaluation uses rounds + 1)
  std::uint64_t sequence = 0;  // per sender, strictly increasing
  std::uint64_t body_bytes = 0;
  std::uint32_t body_crc32 = 0;
};

// What a job asks of the sites. The coordinator reads it from a job file; sites receive it in
// the job offer. Names follow the paper.
// Differential privacy of a training job (JobSpec version 10): DP-SGD at every site with the
// patient as the unit (models/src/dp_sgd.h), accounted in RDP (fedda/common/privacy.h). Off when
// clip_norm is 0.
struct DpSpec {
  double clip_norm = 0;          // C: each patient's gradient of a step is clipped to this L2 norm
  double noise_multiplier = 0;   // sigma (noise standard deviation over C); or 0 with a target:
  double target_epsilon = 0;     // each site picks the smallest sigma that keeps its planned steps within this
  double delta = 1e-5;
  std::int32_t slices_per_subject = 4;  // a joined patient's slices in one step
  bool enabled() const { return clip_norm > 0; }
};

struct JobSpec {
  std::string id;                  // unique per consortium; names the job's output folder
  JobType type = JobType::teacher;
  std::vector<std::string> sites;  // participating site ids
  std::string source;              // the labelled source clinic (teacher, ada); its scans all train
  int fold = 0;                    // target sites train on one half of their subjects, test on the other
  int rounds = 1;
  int local_steps = 32;            // optimiser steps per site per round
  bool steps_by_share = false;     // instead: local_steps per round in all, shared out by sample count
                                   // (one centralized epoch per round, the FedAvg twin of centralized training)
  int batch_size = 8;
  double learning_rate = 1e-3;
  int decay_round = -1;            // lr *= 0.1 after this round; -1: 3/8 of the rounds
  double dice_weight = 1.0;
  double lesion_slice_fraction = 0.5;
  bool augment = true;
  double temperature = 2.0;
  double ada_weight = 0.1;
  int ada_warmup_rounds = 5;
  std::uint64_t seed = 1;
  int min_sites = 1;
  double round_deadline_s = 600;   // after this, a round closes with the sites that answered
  bool evaluate = true;            // score the final model at the evaluation sites
  std::vector<std::string> evaluation_sites;  // default: every participating site but the source
  std::vector<std::string> subjects;          // if set: target sites use only these (on-the-fly)
  std::string model_spec_json;     // architecture + grid of the model being trained
  TransferPrecision transfer_precision = TransferPrecision::float32;  // float16: models cross the network at half precision
  // Sampling of the round's sites (jobs naming many sites): at most this many train per round,
  // drawn afresh every round from the ready sites by (seed, round); 0: every ready site.
  int sites_per_round = 0;
  double fraction = 0;             // or this share of the ready sites (0 < fraction <= 1); 0: off
  // A site's update is refused when its L2 distance from the round's global model (parameters and
  // buffers, float tensors) exceeds this; 0: no bound. Non-finite updates are always refused.
  double max_update_norm = 0;
  // No site's declared sample count may exceed this share of the round's declared total: a site
  // over it is left out of the round and named in it (0 < share <= 1; 0: no bound). Checked on
  // the counts sites declare in the clear, so it holds under secure aggregation too (version 9).
  double max_sample_share = 0;
  // Knowledge distillation (kd jobs): where the student starts, what it learns from.
  StudentInit student_init = StudentInit::teacher;  // or scratch (a fresh U-Net of the teacher's architecture)
  KdLoss kd_loss = KdLoss::hinton;       // hinton (T on both sides) | paper (eq. 3 as written: student at T = 1)
  double kd_hard_weight = 0;             // + this x supervised loss on the teacher's confident voxels
  double kd_confidence = 0.5;            // confident: teacher p(WMH) >= c or <= 1 - c
  // Federated learning across scanners: batch-norm layers averaged like the rest (shared), or kept
  // at each site (local: FedBN, Li et al. 2021); the coordinator's step on the averaged update:
  // fedavg (take it), fedadam or fedyogi (Reddi et al. 2021) with server_lr.
  BnStatistics bn_statistics = BnStatistics::shared;
  ServerOptimizer server_optimizer = ServerOptimizer::fedavg;
  double server_lr = 1.0;
  int evaluate_every = 0;  // > 0: the evaluation sites also score the model after every this many rounds
  Precision precision = Precision::automatic;  // what sites compute in (version 6); auto leaves it to each
                                               // site's own setting (site.yaml precision) and hardware
  // Secure aggregation (version 7): the coordinator learns only the sum of the round's updates.
  bool secure_aggregation = false;
  int secagg_threshold = 0;        // shares needed to unmask one site's secrets: at least a majority of its neighbourhood (0: that)
  double secagg_timeout_s = 60;    // how long each key and share stage waits for the round's sites
  // How sites train (version 8): a recipe as models/recipe.h writes it (JSON: augmentation,
  // patches, optimiser, schedule); empty: the classic recipe, as before recipes.
  std::string recipe;
  DpSpec dp;  // version 10
  // Scoring (evaluation sites): p(WMH) the mean of the model's on the scan and on its left-right
  // mirror image, mirrored back (nnU-Net's test-time mirroring; version 11).
  bool test_time_mirroring = false;
};

// Every setting of a job, once, in wire order: its name in JSON and job files, the JobSpec
// version that brought it, and what its text is held to. The wire form (serialize below), JSON
// (to_json, job_spec_from_json), job files (coordinator/job_file.h, read and written) all walk
// this table, so a new setting is a member, a row and its use.
struct JobSetting {
  const char* name;
  std::uint32_t since = 1;             // JobSpec version; a newer setting is absent from older peers
  TextKind text = TextKind::id;        // strings and lists of them
  bool in_job_file = true;             // false: job files spell it another way (model:, recipe: mappings)
};
template <class Spec, class Visit>  // Spec: JobSpec or const JobSpec; visit(const JobSetting&, member&)
void for_each_job_setting(Spec& j, Visit&& visit) {
  visit(JobSetting{"id"}, j.id);
  visit(JobSetting{"type"}, j.type);
  visit(JobSetting{"sites"}, j.sites);
  visit(JobSetting{"source"}, j.source);
  visit(JobSetting{"fold"}, j.fold);
  visit(JobSetting{"rounds"}, j.rounds);
  visit(JobSetting{"local_steps"}, j.local_steps);
  visit(JobSetting{"steps_by_share"}, j.steps_by_share);
  visit(JobSetting{"batch_size"}, j.batch_size);
  visit(JobSetting{"learning_rate"}, j.learning_rate);
  visit(JobSetting{"decay_round"}, j.decay_round);
  visit(JobSetting{"dice_weight"}, j.dice_weight);
  visit(JobSetting{"lesion_slice_fraction"}, j.lesion_slice_fraction);
  visit(JobSetting{"augment"}, j.augment);
  visit(JobSetting{"temperature"}, j.temperature);
  visit(JobSetting{"ada_weight"}, j.ada_weight);
  visit(JobSetting{"ada_warmup_rounds"}, j.ada_warmup_rounds);
  visit(JobSetting{"seed"}, j.seed);
  visit(JobSetting{"min_sites"}, j.min_sites);
  visit(JobSetting{"round_deadline_s"}, j.round_deadline_s);
  visit(JobSetting{"evaluate"}, j.evaluate);
  visit(JobSetting{"evaluation_sites"}, j.evaluation_sites);
  visit(JobSetting{"subjects"}, j.subjects);
  visit(JobSetting{"model_spec", 1, TextKind::document, false}, j.model_spec_json);
  visit(JobSetting{"transfer_precision", 2}, j.transfer_precision);
  visit(JobSetting{"sites_per_round", 3}, j.sites_per_round);
  visit(JobSetting{"fraction", 3}, j.fraction);
  visit(JobSetting{"max_update_norm", 4}, j.max_update_norm);
  visit(JobSetting{"student_init", 5}, j.student_init);
  visit(JobSetting{"kd_loss", 5}, j.kd_loss);
  visit(JobSetting{"kd_hard_weight", 5}, j.kd_hard_weight);
  visit(JobSetting{"kd_confidence", 5}, j.kd_confidence);
  visit(JobSetting{"bn_statistics", 5}, j.bn_statistics);
  visit(JobSetting{"server_optimizer", 5}, j.server_optimizer);
  visit(JobSetting{"server_lr", 5}, j.server_lr);
  visit(JobSetting{"evaluate_every", 5}, j.evaluate_every);
  visit(JobSetting{"precision", 6}, j.precision);
  visit(JobSetting{"secure_aggregation", 7}, j.secure_aggregation);
  visit(JobSetting{"secagg_threshold", 7}, j.secagg_threshold);
  visit(JobSetting{"secagg_timeout_s", 7}, j.secagg_timeout_s);
  visit(JobSetting{"recipe", 8, TextKind::document, false}, j.recipe);
  visit(JobSetting{"max_sample_share", 9}, j.max_sample_share);
  visit(JobSetting{"dp", 10}, j.dp);
  visit(JobSetting{"test_time_mirroring", 11}, j.test_time_mirroring);
}
// The same for DpSpec (a job's `dp` mapping), in wire order.
template <class Spec, class Visit>
void for_each_dp_setting(Spec& dp, Visit&& visit) {
  visit(JobSetting{"clip_norm"}, dp.clip_norm);
  visit(JobSetting{"noise_multiplier"}, dp.noise_multiplier);
  visit(JobSetting{"target_epsilon"}, dp.target_epsilon);
  visit(JobSetting{"delta"}, dp.delta);
  visit(JobSetting{"slices_per_subject"}, dp.slices_per_subject);
}

// What a site's machine offers, read by its agent at each hello (Hello version 4): `fedda-admin
// sites` and the status page show it, so an operator sizes a job for the consortium's sites.
// A figure the agent could not read is -1; `gpus` lists models as the driver names them
// ("NVIDIA H200"), empty where none is seen.
struct SiteResources {
  std::int32_t cores = -1;              // logical processors the agent may run on
  std::int64_t memory_bytes = -1;       // the machine's physical memory
  std::int64_t cache_free_bytes = -1;   // free space where the agent keeps its cache
  std::vector<std::string> gpus;
  std::string precision;                // what the agent computes in: float32 | bfloat16
};

struct Hello {
  std::string site_id;
  std::string agent_version;
  std::string device;
  std::int32_t threads = 0;  // LibTorch threads the agent trains with (version 2)
  // Random per agent process (version 3), the same on every connection it makes: a hello with
  // another instance while a session lives is a restart or a second agent with the same kit
  // (coordinator/src/duplicate_sessions.h). 0 from agents before version 3.
  std::uint64_t instance = 0;
  SiteResources resources;  // version 4; default (all unknown) from older agents
};

struct Welcome {
  std::int32_t heartbeat_ms = kDefaultHeartbeatMs;
  std::int32_t liveness = kDefaultLiveness;
};

struct JobOffer {
  JobSpec job;
  TensorSet teacher;  // kd: the teacher whose soft labels the site computes; else empty
  // The label-free quality estimator (models/quality.h, JSON) the job's teacher or starting model
  // file carries, for the sites' quality reports in evaluation rounds; empty when none (version 2).
  std::string quality_estimator;
};

struct SkippedSubject {
  std::string subject;  // id only, never content
  std::string reason;
};

struct JobReady {
  std::int64_t samples = 0;       // training slices at the site (the FedAvg weight)
  std::int32_t subjects = 0;
  std::int32_t evaluation_subjects = 0;
  std::vector<SkippedSubject> skipped;
};

struct RoundTask {
  bool evaluate = false;     // true: score `model` on the evaluation subjects, do not train
  double learning_rate = 0;
  double adversarial_weight = 0;  // ada
  TensorSet model;           // student / segmenter / teacher
  TensorSet discriminator;   // ada only
  std::vector<std::string> step_sites;  // per-site step counts (steps_by_share); a site not
  std::vector<std::int32_t> steps;      // listed runs the job's local_steps
};

struct SubjectMetrics {
  std::string subject;
  double dsc = 0, h95 = 0, avd = 0, recall = 0, f1 = 0;  // NaN = undefined
};

// A site's label-free quality report on the evaluated model (site_agent/monitor.h): aggregates
// over its scans only; the per-scan report stays at the site.
struct QualitySummary {
  std::int32_t scans = 0, flagged = 0, drifted = 0;
  bool site_drifted = false;
  bool estimated = false;                 // whether an estimator gave the Dice figures below
  double median = 0, q1 = 0, q3 = 0;      // of the estimated Dice (0 when not estimated)
};

struct RoundUpdate {
  TensorSet model;
  TensorSet discriminator_grads;  // ada: mean gradient of the discriminator loss at this site
  std::int64_t samples = 0;
  std::int32_t steps = 0;
  double loss = 0;
  double seconds = 0;                   // training (load, steps, export)
  std::vector<SubjectMetrics> metrics;  // evaluation rounds
  double overhead_seconds = 0;          // the site's own federation work: verify, decode, encode
  std::string precision;                // what the site computed in, and why ("bfloat16: auto: ...") (version 3)
  // Secure aggregation (version 4): model and discriminator_grads empty; instead the masked
  // fixed-point vector (secagg.h), little-endian 64-bit words.
  std::string masked;
  // Evaluation rounds (version 5): the site's label-free quality report, when it made one.
  bool has_quality = false;
  QualitySummary quality;
  // Differential privacy (version 6): the (epsilon, delta) this site has spent on the job so far
  // (every step of every round up to this one counted) and the noise it trains with; epsilon -1
  // without DP.
  double epsilon = -1;
  double noise_multiplier = 0;
};

// Secure aggregation's bodies (the fields are secagg.h's).
struct SecaggShares {
  std::vector<secagg::EncryptedShares> shares;
};
struct SecaggUnmask {
  std::vector<std::string> masked;             // coordinator -> agent: U3
  std::vector<secagg::RevealedShare> shares;   // agent -> coordinator
};

struct JobFailed {
  std::string reason;                              // redacted by the site's egress guard
  FailureCode code = FailureCode::unspecified;     // version 2
  std::string rule;                                // policy: the rule the job broke (version 2)
};

struct JobPending {
  std::string reason;  // what the site waits for ("approval by the site's administrator")
};

// `fedda-admin logs SITE`: the coordinator asks, the site answers with what its policy
// (share_logs: none | errors | job) lets leave, redacted as failure texts are.
struct LogsRequest {
  std::string request;      // the coordinator's id for the operator's request, echoed in the reply
  std::string job;          // only the lines about this job; empty: any
  std::int32_t tail = 100;  // at most this many lines, the latest
};
struct LogsReply {
  std::string request;
  std::string policy;              // the site's share_logs
  std::string refused;             // why nothing was sent; empty when the lines are what the policy allows
  std::vector<std::string> lines;  // oldest first, one log line each
};

struct Reject {
  RejectCode code = RejectCode::unspecified;  // version 2
  std::string reason;                         // for the log
};

struct Goodbye {
  std::string reason;
};

// ---- admin plane (operators <-> coordinator, request / reply) -------------------------------

struct NamedFile {
  std::string name;   // a plain file name, no folders
  std::string bytes;
};

// An operator's role, as its signed manifest names it: a viewer reads, a member also queues
// jobs and stops or resumes its own, a lead does everything (each includes the one before).
enum class OperatorRole : std::uint8_t { viewer, member, lead };
const char* operator_role_name(OperatorRole role);
Result<OperatorRole> parse_operator_role(const std::string& name);  // error: "role 'x' is not lead, member or viewer"

// What an operator asks of the coordinator. On the wire (AdminRequest::command) a command
// travels as its name; admin_commands() is the one list of them: name, the least role that may
// use it, and what it does (the admin service dispatches on it; errors list its names).
enum class AdminCommand : std::uint8_t { submit, clone, remove, jobs, status, abort, resume, download, sites, admit, revoke, logs };
struct AdminCommandInfo {
  AdminCommand command;
  const char* name;
  OperatorRole needs;  // a member may abort or resume only the jobs it submitted
  const char* what;
};
const std::vector<AdminCommandInfo>& admin_commands();  // in enum order
const char* admin_command_name(AdminCommand command);
// Error: "unknown command 'x' (submit, clone, ...)".
Result<AdminCommand> parse_admin_command(const std::string& name);

// The sender id the coordinator signs its messages with; sites accept nothing else as from it.
inline constexpr const char* kCoordinatorSender = "coordinator";

struct AdminRequest {
  std::string command;
  std::string target;              // the job or site the command is about
  std::string job_yaml;            // submit: the job file's text; clone: the changes (YAML);
                                   // logs: `job` and `tail` (YAML)
  std::string job_file;            // submit: its file name, for messages
  std::vector<NamedFile> files;    // submit: the teacher model the job file names;
                                   // admit: the site's manifest.json and manifest.sig
};

struct AdminReply {
  bool ok = false;
  std::string error;               // what failed, naming the job, site or key
  ErrorKind kind = ErrorKind::invalid;  // of the failure (version 2; older replies: invalid)
  std::string json;                // the answer: one JSON document
  std::vector<NamedFile> files;    // download: the job's files
  std::string notice;              // a warning every answer carries (a coordinator without a kit)
};

// Encoded frames of one message: {header, body}.
struct Frames {
  std::string header;
  std::string body;
  std::uint32_t body_crc32 = 0;
};

// Serialises a header as given (body_bytes and body_crc32 already set): one body can then be
// sent to many peers under per-peer sequence numbers without re-encoding it.
std::string encode_header(const Header& header);

template <typename Body>
Frames encode(Header header, const Body& body);
Frames encode_empty(Header header);  // heartbeat

// Checks version, type, body length and CRC. Error says what is wrong.
Result<Header> decode_header(const std::string& header_frame, const std::string& body_frame,
                             std::size_t max_message_bytes = kDefaultMaxMessageBytes);
template <typename Body>
Result<Body> decode_body(const std::string& body_frame);

// Job specs as JSON (the job state file keeps one); error names the field.
std::string to_json(const JobSpec& job);
// The settings as a job file writes them (coordinator/job_file.h reads them back): one
// "name: value" line each (values in JSON, which is YAML), `dp` only when on; not model_spec or
// recipe, which job files spell as the `model:` and `recipe:` mappings.
std::string job_file_settings(const JobSpec& job);
Result<JobSpec> job_spec_from_json(const std::string& json);

}  // namespace fedda::protocol

// How the messages above travel: their Cereal serialize() functions, the codec's templates and
// every struct's wire version.
#include "fedda/common/protocol_codec.h"
