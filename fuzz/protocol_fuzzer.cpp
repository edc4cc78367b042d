// libFuzzer target: the protocol decoder on arbitrary frames. The first input byte splits the
// rest into a header frame and a body frame; every body type is tried. The decoder must return
// (a value or an error) for every input, without crashing, leaking or allocating beyond it; and
// what it returns must be safe to use: every text field dumps as JSON (valid UTF-8, the
// wire-string rule) and an update's tensors can be checked and read without allocating more
// than their bytes (a forged shape once allocated 4 TiB in the coordinator).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "fedda/common/protocol.h"

using namespace fedda::protocol;

namespace {
// Aborts (a finding) when a decoded text field is not valid UTF-8: json::dump throws on one.
void dumps(const nlohmann::json& j) {
  try {
    (void)j.dump();
  } catch (const std::exception&) {
    std::abort();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t split = std::min<std::size_t>(data[0], size - 1);
  const std::string header(reinterpret_cast<const char*>(data) + 1, split);
  const std::string body(reinterpret_cast<const char*>(data) + 1 + split, size - 1 - split);
  if (auto h = decode_header(header, body)) dumps({h->sender, h->job_id});
  if (auto hello = decode_body<Hello>(body)) dumps({hello->site_id, hello->agent_version, hello->device});
  (void)decode_body<Welcome>(body);
  (void)decode_body<JobOffer>(body);
  (void)decode_body<JobReady>(body);
  (void)decode_body<RoundTask>(body);
  if (auto failed = decode_body<JobFailed>(body)) dumps({failed->reason, failed->rule});
  (void)decode_body<Reject>(body);
  if (auto request = decode_body<AdminRequest>(body)) dumps({request->command, request->target, request->job_yaml, request->job_file});
  (void)decode_body<AdminReply>(body);
  (void)decode_body<SecaggShares>(body);
  (void)decode_body<SecaggUnmask>(body);
  (void)decode_body<fedda::secagg::PublicKeys>(body);
  (void)decode_body<fedda::secagg::Roster>(body);
  (void)decode_body<fedda::secagg::ShareRelay>(body);
  (void)parse_results_csv(body);
  if (auto update = decode_body<RoundUpdate>(body)) {
    (void)fedda::check_integrity(update->model);
    (void)fedda::check_finite(update->model);  // reads values: bounded by the bytes there
    nlohmann::json names = nlohmann::json::array();
    for (const auto& t : update->model.tensors) names.push_back(t.name);
    for (const auto& m : update->metrics) names.push_back(m.subject);
    names.push_back(update->precision);
    dumps(names);
  }
  return 0;
}
