#pragma once
// The wire codec of protocol.h's messages (included at its end; include protocol.h): the bounded
// readers that check every size against the bytes left before allocating, each message's
// versioned Cereal serialize(), encode / decode_body, and the wire version of every struct
// (CEREAL_CLASS_VERSION, at the end: bump it with a change and keep reading older versions).

#include "fedda/common/protocol.h"

namespace fedda::protocol {

// ---- serialization ------------------------------------------------------------------------
namespace detail {

// The frame being decoded on this thread; sizes read from the wire are checked against the
// bytes left in it before anything is allocated.
void begin_decoding(std::istream* in, std::size_t frame_bytes);
// Throws when `count` elements of at least `element_bytes` each cannot fit in what is left.
void check_size(std::uint64_t count, std::size_t element_bytes);

template <typename T>
struct Bounded {
  T& value;
};
template <typename T>
Bounded<T> bounded(T& value) { return Bounded<T>{value}; }

template <class Archive>
void save(Archive& ar, const Bounded<std::string>& b) {
  ar(static_cast<std::uint64_t>(b.value.size()));
  ar(cereal::binary_data(b.value.data(), b.value.size()));
}
template <class Archive>
void load(Archive& ar, Bounded<std::string>& b) {
  std::uint64_t n = 0;
  ar(n);
  check_size(n, 1);
  b.value.resize(n);
  ar(cereal::binary_data(b.value.data(), n));
}

// A string held to its TextKind when read (see TextKind); written as a Bounded string is.
struct Text {
  std::string& value;
  TextKind kind;
};
inline Text text(std::string& value, TextKind kind) { return Text{value, kind}; }
struct TextList {
  std::vector<std::string>& value;
  TextKind kind;
};
inline TextList text_list(std::vector<std::string>& value, TextKind kind) { return TextList{value, kind}; }
// Empty when `value` is of `kind`, else what is wrong with it; check_text throws that.
std::string text_fault(const std::string& value, TextKind kind);
void check_text(const std::string& value, TextKind kind);
// What a sender writes for a line, reason or document that is not of its kind (a file name in
// Latin-1 in an error, say): its printable form, cut to the kind's length, so an honest peer's
// message is never refused for it. An id is written as it is.
std::string repaired_text(const std::string& value, TextKind kind);

template <class Archive>
void save(Archive& ar, const Text& t) {
  if (text_fault(t.value, t.kind).empty()) {
    ar(bounded(t.value));
  } else {
    std::string repaired = repaired_text(t.value, t.kind);
    ar(bounded(repaired));
  }
}
template <class Archive>
void load(Archive& ar, Text& t) {
  std::uint64_t n = 0;
  ar(n);
  if (n > max_text_bytes(t.kind)) {
    throw std::invalid_argument(std::string("a ") + text_kind_name(t.kind) + " of " + std::to_string(n) + " bytes (at most " +
                                std::to_string(max_text_bytes(t.kind)) + ")");
  }
  check_size(n, 1);
  t.value.resize(n);
  ar(cereal::binary_data(t.value.data(), n));
  check_text(t.value, t.kind);
}
template <class Archive>
void save(Archive& ar, const TextList& t) {
  ar(static_cast<std::uint64_t>(t.value.size()));
  for (auto& v : t.value) ar(Text{v, t.kind});
}
template <class Archive>
void load(Archive& ar, TextList& t) {
  std::uint64_t n = 0;
  ar(n);
  check_size(n, 8);
  t.value.clear();
  t.value.reserve(std::min<std::uint64_t>(n, 64));
  for (std::uint64_t i = 0; i < n; ++i) {
    std::string v;
    Text item{v, t.kind};
    ar(item);
    t.value.push_back(std::move(v));
  }
}

template <class Archive, typename T>
void save(Archive& ar, const Bounded<std::vector<T>>& b) {
  ar(static_cast<std::uint64_t>(b.value.size()));
  if constexpr (std::is_arithmetic_v<T>) {
    for (const T& v : b.value) ar(v);
  } else if constexpr (std::is_same_v<T, std::string>) {
    for (const auto& v : b.value) ar(bounded(const_cast<std::string&>(v)));
  } else {
    for (const auto& v : b.value) ar(v);
  }
}
template <class Archive, typename T>
void load(Archive& ar, Bounded<std::vector<T>>& b) {
  std::uint64_t n = 0;
  ar(n);
  check_size(n, std::is_arithmetic_v<T> ? sizeof(T) : 8);
  b.value.clear();
  if constexpr (std::is_arithmetic_v<T>) {
    b.value.resize(n);
    for (auto& v : b.value) ar(v);
  } else {
    // Grown element by element: a forged count fails on the bytes that are not there.
    b.value.reserve(std::min<std::uint64_t>(n, 64));
    for (std::uint64_t i = 0; i < n; ++i) {
      T v{};
      if constexpr (std::is_same_v<T, std::string>) {
        ar(bounded(v));
      } else {
        ar(v);
      }
      b.value.push_back(std::move(v));
    }
  }
}

// Raw tensor bytes: one bulk copy each way.
template <class Archive>
void save_bytes(Archive& ar, const std::vector<std::uint8_t>& data) {
  ar(static_cast<std::uint64_t>(data.size()));
  ar(cereal::binary_data(data.data(), data.size()));
}
template <class Archive>
void load_bytes(Archive& ar, std::vector<std::uint8_t>& data) {
  std::uint64_t n = 0;
  ar(n);
  check_size(n, 1);
  data.resize(n);
  ar(cereal::binary_data(data.data(), n));
}

// A reader refuses a struct version newer than it knows (a newer peer's field would otherwise
// be read as the next field).
template <typename T>
void check_known_version(std::uint32_t version) {
  if (version > cereal::detail::Version<T>::version) {
    throw std::invalid_argument("a newer version (" + std::to_string(version) + ") of a message this build knows up to version " +
                                std::to_string(cereal::detail::Version<T>::version));
  }
}

// A JobType travels as its name (the same bytes as the string it was before it was an enum).
struct JobTypeText {
  JobType& value;
};
inline JobTypeText job_type_text(JobType& value) { return JobTypeText{value}; }
template <class Archive>
void save(Archive& ar, const JobTypeText& t) {
  std::string name = job_type_name(t.value);
  ar(text(name, TextKind::id));
}
template <class Archive>
void load(Archive& ar, JobTypeText& t) {
  std::string name;
  ar(text(name, TextKind::id));
  auto parsed = parse_job_type(name);
  if (!parsed) throw std::invalid_argument(parsed.error().message);
  t.value = *parsed;
}

// A setting enum (StudentInit, KdLoss, ...) travels as its name, as JobType does.
template <class E>
struct SettingText {
  E& value;
};
template <class Archive, class E>
void save(Archive& ar, const SettingText<E>& t) {
  std::string name = setting_name(t.value);
  ar(text(name, TextKind::id));
}
template <class Archive, class E>
void load(Archive& ar, SettingText<E>& t) {
  std::string name;
  ar(text(name, TextKind::id));
  auto parsed = parse_setting<E>(name, "setting");
  if (!parsed) throw std::invalid_argument(parsed.error().message);
  t.value = *parsed;
}

// What a JobSpec member is written as (for_each_job_setting): text held to its kind, a setting
// by name, a number or flag as it is.
inline Text wire(std::string& value, TextKind kind) { return text(value, kind); }
inline TextList wire(std::vector<std::string>& value, TextKind kind) { return text_list(value, kind); }
inline JobTypeText wire(JobType& value, TextKind) { return job_type_text(value); }
inline DpSpec& wire(DpSpec& value, TextKind) { return value; }
template <class E, std::enable_if_t<is_setting_v<E>, int> = 0>
SettingText<E> wire(E& value, TextKind) {
  return SettingText<E>{value};
}
template <class T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>
T& wire(T& value, TextKind) {
  return value;
}

}  // namespace detail

template <class Archive>
void save(Archive& ar, const Header& h, std::uint32_t) {
  ar(h.version, static_cast<std::uint8_t>(h.type), detail::text(const_cast<std::string&>(h.sender), TextKind::id),
     detail::text(const_cast<std::string&>(h.job_id), TextKind::id), h.round, h.sequence, h.body_bytes, h.body_crc32);
}
template <class Archive>
void load(Archive& ar, Header& h, std::uint32_t version) {
  detail::check_known_version<Header>(version);
  std::uint8_t type = 0;
  ar(h.version, type, detail::text(h.sender, TextKind::id), detail::text(h.job_id, TextKind::id), h.round, h.sequence,
     h.body_bytes, h.body_crc32);
  h.type = static_cast<MessageType>(type);
}

}  // namespace fedda::protocol

namespace fedda {
template <class Archive>
void save(Archive& ar, const WireTensor& t, std::uint32_t) {
  ar(protocol::detail::text(const_cast<std::string&>(t.name), protocol::TextKind::id), static_cast<std::uint8_t>(t.dtype),
     protocol::detail::bounded(const_cast<std::vector<std::int64_t>&>(t.shape)), t.crc32);
  protocol::detail::save_bytes(ar, t.data);
}
template <class Archive>
void load(Archive& ar, WireTensor& t, std::uint32_t version) {
  protocol::detail::check_known_version<WireTensor>(version);
  std::uint8_t dtype = 0;
  ar(protocol::detail::text(t.name, protocol::TextKind::id), dtype, protocol::detail::bounded(t.shape), t.crc32);
  t.dtype = static_cast<DType>(dtype);
  protocol::detail::load_bytes(ar, t.data);
}
template <class Archive>
void serialize(Archive& ar, TensorSet& s, std::uint32_t version) {
  protocol::detail::check_known_version<TensorSet>(version);
  ar(protocol::detail::bounded(s.tensors));
}
}  // namespace fedda

namespace fedda::secagg {
#define FEDDA_SECAGG_BYTES(field) protocol::detail::bounded(m.field)
#define FEDDA_SECAGG_ID(field) protocol::detail::text(m.field, protocol::TextKind::id)
template <class Archive>
void serialize(Archive& ar, PublicKeys& m, std::uint32_t version) {
  protocol::detail::check_known_version<PublicKeys>(version);
  ar(FEDDA_SECAGG_ID(site), FEDDA_SECAGG_BYTES(share_key), FEDDA_SECAGG_BYTES(mask_key), FEDDA_SECAGG_BYTES(signature),
     FEDDA_SECAGG_BYTES(manifest), FEDDA_SECAGG_BYTES(manifest_signature));
}
template <class Archive>
void serialize(Archive& ar, Roster& m, std::uint32_t version) {
  protocol::detail::check_known_version<Roster>(version);
  ar(FEDDA_SECAGG_BYTES(keys), m.threshold, m.degree, m.all_pairs_up_to, m.graph_seed, m.weight_total);
}
template <class Archive>
void serialize(Archive& ar, EncryptedShares& m, std::uint32_t version) {
  protocol::detail::check_known_version<EncryptedShares>(version);
  ar(FEDDA_SECAGG_ID(from), FEDDA_SECAGG_ID(to), FEDDA_SECAGG_BYTES(sealed));
}
template <class Archive>
void serialize(Archive& ar, ShareRelay& m, std::uint32_t version) {
  protocol::detail::check_known_version<ShareRelay>(version);
  ar(FEDDA_SECAGG_BYTES(shared), FEDDA_SECAGG_BYTES(shares));
}
template <class Archive>
void serialize(Archive& ar, RevealedShare& m, std::uint32_t version) {
  protocol::detail::check_known_version<RevealedShare>(version);
  auto kind = static_cast<std::uint8_t>(m.kind);
  ar(FEDDA_SECAGG_ID(owner), kind, m.x, FEDDA_SECAGG_BYTES(y));
  m.kind = static_cast<SecretKind>(kind);
}
#undef FEDDA_SECAGG_BYTES
#undef FEDDA_SECAGG_ID
}  // namespace fedda::secagg

namespace fedda::protocol {

#define FEDDA_ID(field) detail::text(m.field, TextKind::id)
#define FEDDA_IDS(field) detail::text_list(m.field, TextKind::id)
#define FEDDA_LINE(field) detail::text(m.field, TextKind::line)
#define FEDDA_REASON(field) detail::text(m.field, TextKind::reason)
#define FEDDA_DOCUMENT(field) detail::text(m.field, TextKind::document)
#define FEDDA_BYTES(field) detail::bounded(m.field)
#define FEDDA_LIST(field) detail::bounded(m.field)

template <class Archive>
void serialize(Archive& ar, JobSpec& m, std::uint32_t version) {
  detail::check_known_version<JobSpec>(version);
  for_each_job_setting(m, [&](const JobSetting& s, auto& field) {
    if (version >= s.since) ar(detail::wire(field, s.text));
  });
}
template <class Archive>
void serialize(Archive& ar, DpSpec& m, std::uint32_t version) {
  detail::check_known_version<DpSpec>(version);
  for_each_dp_setting(m, [&](const JobSetting& s, auto& field) { ar(detail::wire(field, s.text)); });
}
template <class Archive>
void serialize(Archive& ar, Hello& m, std::uint32_t version) {
  detail::check_known_version<Hello>(version);
  ar(FEDDA_ID(site_id), FEDDA_ID(agent_version), FEDDA_LINE(device));
  if (version >= 2) ar(m.threads);
  if (version >= 3) ar(m.instance);
  if (version >= 4) ar(m.resources);
}
template <class Archive>
void serialize(Archive& ar, SiteResources& m, std::uint32_t version) {
  detail::check_known_version<SiteResources>(version);
  ar(m.cores, m.memory_bytes, m.cache_free_bytes, detail::text_list(m.gpus, TextKind::line), FEDDA_ID(precision));
}
template <class Archive>
void serialize(Archive& ar, Welcome& m, std::uint32_t version) {
  detail::check_known_version<Welcome>(version);
  ar(m.heartbeat_ms, m.liveness);
}
template <class Archive>
void serialize(Archive& ar, JobOffer& m, std::uint32_t version) {
  detail::check_known_version<JobOffer>(version);
  ar(m.job, m.teacher);
  if (version >= 2) ar(FEDDA_BYTES(quality_estimator));
}
template <class Archive>
void serialize(Archive& ar, SkippedSubject& m, std::uint32_t version) {
  detail::check_known_version<SkippedSubject>(version);
  ar(FEDDA_ID(subject), FEDDA_REASON(reason));
}
template <class Archive>
void serialize(Archive& ar, JobReady& m, std::uint32_t version) {
  detail::check_known_version<JobReady>(version);
  ar(m.samples, m.subjects, m.evaluation_subjects, FEDDA_LIST(skipped));
}
template <class Archive>
void serialize(Archive& ar, RoundTask& m, std::uint32_t version) {
  detail::check_known_version<RoundTask>(version);
  ar(m.evaluate, m.learning_rate, m.adversarial_weight, m.model, m.discriminator, FEDDA_IDS(step_sites),
     FEDDA_LIST(steps));
}
template <class Archive>
void serialize(Archive& ar, SubjectMetrics& m, std::uint32_t version) {
  detail::check_known_version<SubjectMetrics>(version);
  ar(FEDDA_ID(subject), m.dsc, m.h95, m.avd, m.recall, m.f1);
}
template <class Archive>
void serialize(Archive& ar, RoundUpdate& m, std::uint32_t version) {
  detail::check_known_version<RoundUpdate>(version);
  ar(m.model, m.discriminator_grads, m.samples, m.steps, m.loss, m.seconds, FEDDA_LIST(metrics));
  if (version >= 2) ar(m.overhead_seconds);
  if (version >= 3) ar(FEDDA_LINE(precision));
  if (version >= 4) ar(FEDDA_BYTES(masked));
  if (version >= 5) {
    ar(m.has_quality);
    if (m.has_quality) ar(m.quality);
  }
  if (version >= 6) ar(m.epsilon, m.noise_multiplier);
}
template <class Archive>
void serialize(Archive& ar, QualitySummary& m, std::uint32_t version) {
  detail::check_known_version<QualitySummary>(version);
  ar(m.scans, m.flagged, m.drifted, m.site_drifted, m.estimated, m.median, m.q1, m.q3);
}
template <class Archive>
void serialize(Archive& ar, SecaggShares& m, std::uint32_t version) {
  detail::check_known_version<SecaggShares>(version);
  ar(FEDDA_LIST(shares));
}
template <class Archive>
void serialize(Archive& ar, SecaggUnmask& m, std::uint32_t version) {
  detail::check_known_version<SecaggUnmask>(version);
  ar(FEDDA_LIST(masked), FEDDA_LIST(shares));
}
template <class Archive>
void serialize(Archive& ar, JobFailed& m, std::uint32_t version) {
  detail::check_known_version<JobFailed>(version);
  ar(FEDDA_REASON(reason));
  if (version >= 2) {
    auto code = static_cast<std::uint16_t>(m.code);
    ar(code, FEDDA_LINE(rule));
    m.code = static_cast<FailureCode>(code);
  }
}
template <class Archive>
void serialize(Archive& ar, JobPending& m, std::uint32_t version) {
  detail::check_known_version<JobPending>(version);
  ar(FEDDA_REASON(reason));
}
template <class Archive>
void serialize(Archive& ar, LogsRequest& m, std::uint32_t version) {
  detail::check_known_version<LogsRequest>(version);
  ar(FEDDA_ID(request), FEDDA_ID(job), m.tail);
}
template <class Archive>
void serialize(Archive& ar, LogsReply& m, std::uint32_t version) {
  detail::check_known_version<LogsReply>(version);
  ar(FEDDA_ID(request), FEDDA_ID(policy), FEDDA_REASON(refused), detail::text_list(m.lines, TextKind::line));
}
template <class Archive>
void serialize(Archive& ar, Reject& m, std::uint32_t version) {
  detail::check_known_version<Reject>(version);
  if (version >= 2) {
    auto code = static_cast<std::uint16_t>(m.code);
    ar(code);
    m.code = static_cast<RejectCode>(code);
  }
  ar(FEDDA_REASON(reason));
}
template <class Archive>
void serialize(Archive& ar, NamedFile& m, std::uint32_t version) {
  detail::check_known_version<NamedFile>(version);
  ar(FEDDA_ID(name), FEDDA_BYTES(bytes));
}
template <class Archive>
void serialize(Archive& ar, AdminRequest& m, std::uint32_t version) {
  detail::check_known_version<AdminRequest>(version);
  ar(FEDDA_ID(command), FEDDA_ID(target), FEDDA_DOCUMENT(job_yaml), FEDDA_LINE(job_file), FEDDA_LIST(files));
}
template <class Archive>
void serialize(Archive& ar, AdminReply& m, std::uint32_t version) {
  detail::check_known_version<AdminReply>(version);
  ar(m.ok, FEDDA_DOCUMENT(error), FEDDA_DOCUMENT(json), FEDDA_LIST(files), FEDDA_REASON(notice));
  if (version >= 2) {  // a kind this build does not know reads as internal
    auto kind = static_cast<std::uint8_t>(m.kind);
    ar(kind);
    m.kind = kind <= kLastErrorKind ? static_cast<ErrorKind>(kind) : ErrorKind::internal;
  }
}
template <class Archive>
void serialize(Archive& ar, Goodbye& m, std::uint32_t version) {
  detail::check_known_version<Goodbye>(version);
  ar(FEDDA_REASON(reason));
}

#undef FEDDA_ID
#undef FEDDA_IDS
#undef FEDDA_LINE
#undef FEDDA_REASON
#undef FEDDA_DOCUMENT
#undef FEDDA_BYTES
#undef FEDDA_LIST

namespace detail {
void finish_encoding(Header& header, std::string body, Frames& frames);
Error decode_failure(const char* what, const std::exception& e);
}  // namespace detail

template <typename Body>
Frames encode(Header header, const Body& body) {
  std::ostringstream out;
  {
    cereal::PortableBinaryOutputArchive ar(out);
    ar(body);
  }
  Frames frames;
  detail::finish_encoding(header, out.str(), frames);
  return frames;
}

template <typename Body>
Result<Body> decode_body(const std::string& body_frame) {
  try {
    std::istringstream in(body_frame);
    detail::begin_decoding(&in, body_frame.size());
    cereal::PortableBinaryInputArchive ar(in);
    Body body;
    ar(body);
    if (in.peek() != std::char_traits<char>::eof()) return make_error("message body has trailing bytes");
    return body;
  } catch (const std::exception& e) {
    return detail::decode_failure("message body", e);
  }
}

}  // namespace fedda::protocol

// Versions of every struct on the wire; bump with a change and keep reading older versions.
CEREAL_CLASS_VERSION(fedda::protocol::Header, 1)
CEREAL_CLASS_VERSION(fedda::WireTensor, 1)
CEREAL_CLASS_VERSION(fedda::TensorSet, 1)
CEREAL_CLASS_VERSION(fedda::protocol::JobSpec, 11)
CEREAL_CLASS_VERSION(fedda::protocol::DpSpec, 1)
CEREAL_CLASS_VERSION(fedda::protocol::Hello, 4)
CEREAL_CLASS_VERSION(fedda::protocol::SiteResources, 1)
CEREAL_CLASS_VERSION(fedda::protocol::Welcome, 1)
CEREAL_CLASS_VERSION(fedda::protocol::JobOffer, 2)
CEREAL_CLASS_VERSION(fedda::protocol::SkippedSubject, 1)
CEREAL_CLASS_VERSION(fedda::protocol::JobReady, 1)
CEREAL_CLASS_VERSION(fedda::protocol::RoundTask, 1)
CEREAL_CLASS_VERSION(fedda::protocol::SubjectMetrics, 1)
CEREAL_CLASS_VERSION(fedda::protocol::RoundUpdate, 6)
CEREAL_CLASS_VERSION(fedda::protocol::QualitySummary, 1)
CEREAL_CLASS_VERSION(fedda::protocol::SecaggShares, 1)
CEREAL_CLASS_VERSION(fedda::protocol::SecaggUnmask, 1)
CEREAL_CLASS_VERSION(fedda::secagg::PublicKeys, 1)
CEREAL_CLASS_VERSION(fedda::secagg::Roster, 1)
CEREAL_CLASS_VERSION(fedda::secagg::EncryptedShares, 1)
CEREAL_CLASS_VERSION(fedda::secagg::ShareRelay, 1)
CEREAL_CLASS_VERSION(fedda::secagg::RevealedShare, 1)
CEREAL_CLASS_VERSION(fedda::protocol::JobFailed, 2)
CEREAL_CLASS_VERSION(fedda::protocol::JobPending, 1)
CEREAL_CLASS_VERSION(fedda::protocol::LogsRequest, 1)
CEREAL_CLASS_VERSION(fedda::protocol::LogsReply, 1)
CEREAL_CLASS_VERSION(fedda::protocol::Reject, 2)
CEREAL_CLASS_VERSION(fedda::protocol::Goodbye, 1)
CEREAL_CLASS_VERSION(fedda::protocol::NamedFile, 1)
CEREAL_CLASS_VERSION(fedda::protocol::AdminRequest, 1)
CEREAL_CLASS_VERSION(fedda::protocol::AdminReply, 2)
