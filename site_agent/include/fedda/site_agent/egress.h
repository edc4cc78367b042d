#pragma once
// What may leave a site. The egress guard checks every update before it is sent: model weights
// with exactly the names, shapes and types of the job's model specification, discriminator
// gradients with exactly those of the discriminator's parameters (ADA only), metrics only in an
// evaluation round, and nothing else. The audit log records every outbound message (type, job,
// round, tensor names, byte count, SHA-256) as one JSON line a site administrator can read.
// Both are used by the agent's threads under its own locking; neither is thread-safe alone.

#include <filesystem>
#include <fstream>
#include <string>

#include "fedda/common/protocol.h"
#include "fedda/common/result.h"
#include "fedda/common/tensors.h"

namespace fedda::site_agent {

class EgressGuard {
 public:
  // Layouts from the job's model spec (JSON, as the job offer carries it) and job type.
  static Result<EgressGuard> for_job(const protocol::JobSpec& job);
  // Error names the first tensor or field that may not leave.
  Status check(const protocol::RoundUpdate& update, bool evaluation) const;
  // What may leave, tensor by tensor (names, dtypes and shapes; no data): the model's weights
  // and, for ADA, the discriminator's gradients.
  const TensorSet& model_layout() const { return model_; }
  const TensorSet& discriminator_layout() const { return discriminator_; }

 private:
  TensorSet model_;          // layout only
  TensorSet discriminator_;  // parameter layout, ADA only
  bool ada_ = false;
};

// One JSON line per message sent; heartbeats, which carry nothing, are counted and written as
// one line an hour ({"type": "heartbeats", "count": N, "from_ms", "to_ms"}) instead of one each.
class AuditLog {
 public:
  explicit AuditLog(std::filesystem::path file);
  ~AuditLog();
  // `tensors`: the names of the tensors carried, comma-separated (empty for control messages);
  // `detail`: what the message stands for in full where what was sent is redacted (a failure).
  void record(protocol::MessageType type, const std::string& job_id, int round, const std::string& body,
              const std::string& tensors, const std::string& detail = {});
  const std::filesystem::path& file() const { return file_; }

 private:
  void flush_heartbeats();

  std::filesystem::path file_;
  std::ofstream out_;
  long heartbeats_ = 0;
  std::int64_t heartbeats_from_ms_ = 0, heartbeats_to_ms_ = 0;
};

// "name[shape]" for each tensor of an update, for the audit log.
std::string tensor_summary(const protocol::RoundUpdate& update);

}  // namespace fedda::site_agent
