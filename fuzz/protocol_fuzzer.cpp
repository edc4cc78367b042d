// libFuzzer target: the protocol decoder on arbitrary frames. The first input byte splits the
// rest into a header frame and a body frame; every body type is tried. The decoder must return
// (a value or an error) for every input, without crashing, leaking or allocating beyond it.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fedda/common/protocol.h"

using namespace fedda::protocol;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t split = std::min<std::size_t>(data[0], size - 1);
  const std::string header(reinterpret_cast<const char*>(data) + 1, split);
  const std::string body(reinterpret_cast<const char*>(data) + 1 + split, size - 1 - split);
  (void)decode_header(header, body);
  (void)decode_body<Hello>(body);
  (void)decode_body<Welcome>(body);
  (void)decode_body<JobOffer>(body);
  (void)decode_body<JobReady>(body);
  (void)decode_body<RoundTask>(body);
  (void)decode_body<JobFailed>(body);
  (void)decode_body<Reject>(body);
  (void)decode_body<AdminRequest>(body);
  (void)decode_body<AdminReply>(body);
  (void)decode_body<SecaggShares>(body);
  (void)decode_body<SecaggUnmask>(body);
  (void)decode_body<fedda::secagg::PublicKeys>(body);
  (void)decode_body<fedda::secagg::Roster>(body);
  (void)decode_body<fedda::secagg::ShareRelay>(body);
  (void)parse_results_csv(body);
  if (auto update = decode_body<RoundUpdate>(body)) (void)fedda::check_integrity(update->model);
  return 0;
}
