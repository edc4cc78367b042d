#include "fedda/site_agent/egress.h"

#include <chrono>

#include <nlohmann/json.hpp>

#include "fedda/common/crypto.h"
#include "fedda/models_core/weights.h"

namespace fedda::site_agent {

Result<EgressGuard> EgressGuard::for_job(const protocol::JobSpec& job) {
  auto spec = models::model_spec_from_json(job.model_spec_json);
  if (!spec) return spec.error();
  EgressGuard guard;
  auto model = models::new_model_weights(*spec, 0);
  if (!model) return model.error();
  guard.model_ = std::move(*model);
  guard.ada_ = job.type == protocol::JobType::ada;
  if (guard.ada_) {
    auto discriminator = models::new_discriminator_weights(*spec, 0);
    if (!discriminator) return discriminator.error();
    guard.discriminator_ = protocol::parameters_only(*discriminator);  // gradients exist for parameters, not buffers
  }
  for (auto* set : {&guard.model_, &guard.discriminator_}) {
    for (auto& t : set->tensors) t.data.clear();
  }
  return guard;
}

Status EgressGuard::check(const protocol::RoundUpdate& u, bool evaluation) const {
  if (evaluation) {
    if (!u.model.tensors.empty() || !u.discriminator_grads.tensors.empty()) {
      return make_error("an evaluation answer carries tensors");
    }
    if (u.has_quality) {
      // Aggregates only, and consistent ones: a count never exceeds the scans, figures are Dice values.
      const auto& q = u.quality;
      if (q.scans < 1 || q.flagged < 0 || q.drifted < 0 || q.flagged > q.scans || q.drifted > q.scans) {
        return make_error("a quality report's counts are inconsistent");
      }
      for (double v : {q.median, q.q1, q.q3}) {
        if (!(v >= 0 && v <= 1)) return make_error("a quality report's figures are not Dice values in [0, 1]");
      }
      if (!(q.q1 <= q.median && q.median <= q.q3)) return make_error("a quality report's quartiles are out of order");
    }
    return Status::success();
  }
  if (!u.metrics.empty()) return make_error("a training update carries per-subject metrics");
  if (u.has_quality) return make_error("a training update carries a quality report");
  if (auto st = check_same_layout(u.model, model_); !st) return make_error("model: " + st.error().message);
  if (ada_) {
    if (auto st = check_same_layout(u.discriminator_grads, discriminator_); !st) {
      return make_error("discriminator gradients: " + st.error().message);
    }
  } else if (!u.discriminator_grads.tensors.empty()) {
    return make_error("discriminator gradients outside an ADA job");
  }
  return Status::success();
}

AuditLog::AuditLog(std::filesystem::path file) : file_(std::move(file)) {
  std::error_code ec;
  std::filesystem::create_directories(file_.parent_path(), ec);
  out_.open(file_, std::ios::app);
}

AuditLog::~AuditLog() { flush_heartbeats(); }

void AuditLog::flush_heartbeats() {
  if (!out_ || heartbeats_ == 0) return;
  const nlohmann::json line = {{"time_ms", heartbeats_to_ms_}, {"type", "heartbeats"}, {"count", heartbeats_},
                               {"from_ms", heartbeats_from_ms_}, {"to_ms", heartbeats_to_ms_}};
  out_ << line.dump() << "\n";
  out_.flush();
  heartbeats_ = 0;
}

void AuditLog::record(protocol::MessageType type, const std::string& job_id, int round, const std::string& body,
                      const std::string& tensors, const std::string& detail) {
  if (!out_) return;
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch()).count();
  if (type == protocol::MessageType::heartbeat) {
    if (heartbeats_ == 0) heartbeats_from_ms_ = now;
    heartbeats_to_ms_ = now;
    if (++heartbeats_ >= 1 && now - heartbeats_from_ms_ >= 3600 * 1000) flush_heartbeats();
    return;
  }
  nlohmann::json line = {{"time_ms", now},        {"type", protocol::type_name(type)}, {"job", job_id},
                         {"round", round},         {"bytes", body.size()},            {"sha256", crypto::sha256_hex(body)},
                         {"tensors", tensors}};
  if (!detail.empty()) line["detail"] = detail;
  out_ << line.dump() << "\n";
  out_.flush();
}

std::string tensor_summary(const protocol::RoundUpdate& update) {
  std::string out;
  for (const auto* set : {&update.model, &update.discriminator_grads}) {
    for (const auto& t : set->tensors) {
      out += (out.empty() ? "" : ",") + t.name + "[";
      for (std::size_t i = 0; i < t.shape.size(); ++i) out += (i ? "x" : "") + std::to_string(t.shape[i]);
      out += "]";
    }
  }
  return out;
}

}  // namespace fedda::site_agent
