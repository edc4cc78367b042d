#pragma once
// A coordinator holding a consortium's real keys (its channel admitted, its offers and tasks
// signed with the coordinator's key), under a test's control: FakeCoordinator plus what a site
// checks, for tests of what an agent does with a coordinator's messages.

#include <filesystem>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "fedda/common/crypto.h"
#include "fedda/common/protocol.h"
#include "fedda/common/tensors.h"
#include "fedda/models_core/model_spec.h"
#include "fedda/models_core/weights.h"
#include "support/fake_coordinator.h"
#include "support/process.h"

namespace fedda::testing {

inline std::string line_of(const std::filesystem::path& file) {
  auto t = read_text(file);
  return t.substr(0, t.find('\n'));
}

// A coordinator holding the consortium's real keys (its offers signed, its channel admitted),
// under the test's control.
struct KeyedFakeCoordinator {
  KeyedFakeCoordinator(zmq::context_t& context, const std::filesystem::path& kit, const std::filesystem::path& teacher)
      : fake(context, line_of(kit / "coordinator" / "coordinator.curve.secret")),
        sign_key(read_text(kit / "coordinator" / "coordinator.sign.key")),
        teacher_model(models::read_model_weights(teacher).value()) {}
  // Waits for the agent's hello and answers with `welcome`; false when no hello came.
  bool greet(const protocol::Welcome& welcome) {
    if (!next(protocol::MessageType::hello)) return false;
    send(protocol::MessageType::welcome, "", 0, protocol::encode(protocol::Header{}, welcome).body, false);
    return true;
  }
  // The next message of `type` from the agent (everything it sends is kept in fake.received()).
  std::optional<FakeCoordinator::Message> next(protocol::MessageType type, std::chrono::seconds wait = std::chrono::seconds(120)) {
    return fake.next(type, wait);
  }
  void send(protocol::MessageType type, const std::string& job, int round, std::string body, bool sign) {
    protocol::Header h;
    h.type = type;
    h.sender = protocol::kCoordinatorSender;
    h.job_id = job;
    h.round = round;
    h.sequence = ++sequence;
    h.body_bytes = body.size();
    h.body_crc32 = crc32_of(body);
    std::vector<std::string> frames = {fake.routing(), protocol::encode_header(h), body};
    if (sign) frames.push_back(crypto::sign(sign_key, protocol::model_signed_text(job, round, body)).value());
    fake.send(frames);
  }
  std::string offer(const std::string& id, protocol::JobType type, int batch, int steps, bool secure = false,
                    const std::string& quality_estimator = {}) const {
    protocol::JobOffer o;
    o.quality_estimator = quality_estimator;
    o.job.id = id;
    o.job.type = type;
    o.job.source = "utrecht";
    o.job.sites = {"utrecht", "amsterdam"};
    o.job.evaluation_sites = {"amsterdam"};
    o.job.batch_size = batch;
    o.job.local_steps = steps;
    o.job.secure_aggregation = secure;
    o.job.model_spec_json = models::to_json(teacher_model.spec);
    if (type == protocol::JobType::kd) o.teacher = teacher_model.weights;
    return protocol::encode(protocol::Header{}, o).body;
  }
  FakeCoordinator fake;
  std::string sign_key;
  models::StoredModel teacher_model;
  std::uint64_t sequence = 0;
};

}  // namespace fedda::testing
