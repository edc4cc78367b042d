#pragma once
// The closed vocabularies of a job's settings (protocol::JobSpec), apart from protocol.h so that
// the training engine's options can use them without the wire codec: each an enum whose
// enumerators are numbered from 0 in the order of detail::SettingNames<E>::names, named on the
// wire, in JSON, in job files and on command lines by setting_name / parse_setting.

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <type_traits>
#include <vector>

#include "fedda/common/result.h"

namespace fedda::protocol {

// The string-valued settings of a job (JobSpec): each a closed vocabulary. On the wire, in JSON
// and in job files each travels as its name (the bytes the string was before it was an enum).
enum class StudentInit : std::uint8_t { teacher, scratch };            // kd: the teacher's weights, or a fresh U-Net
enum class KdLoss : std::uint8_t { hinton, paper };                     // see models::TrainConfig::kd_loss
// Batch norm's running statistics: shared by every site (one model), or each site's own (local:
// FedBN in a federated job, each site's tensors kept across rounds; AdaBN in the centralized
// harness, the statistics recomputed on the target clinic's scans after training).
enum class BnStatistics : std::uint8_t { shared, local };
enum class ServerOptimizer : std::uint8_t { fedavg, fedadam, fedyogi }; // the coordinator's step
enum class TransferPrecision : std::uint8_t { float32, float16 };       // models crossing the network
// What sites compute in (models/precision.h): auto (each site's own setting and hardware decide),
// float32 or bfloat16.
enum class Precision : std::uint8_t { automatic, float32, bfloat16 };

namespace detail {
template <class E>
struct SettingNames;  // names[i] is the name of the enumerator of value i
template <>
struct SettingNames<StudentInit> {
  static constexpr const char* names[] = {"teacher", "scratch"};
};
template <>
struct SettingNames<KdLoss> {
  static constexpr const char* names[] = {"hinton", "paper"};
};
template <>
struct SettingNames<BnStatistics> {
  static constexpr const char* names[] = {"shared", "local"};
};
template <>
struct SettingNames<ServerOptimizer> {
  static constexpr const char* names[] = {"fedavg", "fedadam", "fedyogi"};
};
template <>
struct SettingNames<TransferPrecision> {
  static constexpr const char* names[] = {"float32", "float16"};
};
template <>
struct SettingNames<Precision> {
  static constexpr const char* names[] = {"auto", "float32", "bfloat16"};
};
template <class E, class = void>
struct IsSetting : std::false_type {};
template <class E>
struct IsSetting<E, std::void_t<decltype(SettingNames<E>::names)>> : std::true_type {};
}  // namespace detail
template <class E>
inline constexpr bool is_setting_v = detail::IsSetting<E>::value;

template <class E, std::enable_if_t<is_setting_v<E>, int> = 0>
const char* setting_name(E value) {
  return detail::SettingNames<E>::names[static_cast<std::size_t>(value)];
}
// "hinton or paper", "fedavg, fedadam or fedyogi": for errors and --help.
template <class E, std::enable_if_t<is_setting_v<E>, int> = 0>
std::string setting_choices() {
  const auto& names = detail::SettingNames<E>::names;
  const std::size_t n = std::size(names);
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out += std::string(i == 0 ? "" : i + 1 == n ? " or " : ", ") + names[i];
  return out;
}
// Every name, in order (a command line's choices).
template <class E, std::enable_if_t<is_setting_v<E>, int> = 0>
std::vector<std::string> setting_names() {
  return {std::begin(detail::SettingNames<E>::names), std::end(detail::SettingNames<E>::names)};
}
// Error: "KEY must be A or B (got 'x')".
template <class E, std::enable_if_t<is_setting_v<E>, int> = 0>
Result<E> parse_setting(const std::string& name, const std::string& key) {
  const auto& names = detail::SettingNames<E>::names;
  for (std::size_t i = 0; i < std::size(names); ++i) {
    if (name == names[i]) return static_cast<E>(i);
  }
  return make_error(key + " must be " + setting_choices<E>() + " (got '" + name + "')");
}

}  // namespace fedda::protocol
