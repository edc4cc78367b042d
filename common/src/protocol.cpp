#include "fedda/common/protocol.h"

#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "fedda/common/crypto.h"
#include "fedda/common/text.h"

namespace fedda::protocol {

const char* type_name(MessageType type) {
  switch (type) {
    case MessageType::hello: return "hello";
    case MessageType::welcome: return "welcome";
    case MessageType::heartbeat: return "heartbeat";
    case MessageType::job_offer: return "job_offer";
    case MessageType::job_ready: return "job_ready";
    case MessageType::round_task: return "round_task";
    case MessageType::round_update: return "round_update";
    case MessageType::job_failed: return "job_failed";
    case MessageType::reject: return "reject";
    case MessageType::goodbye: return "goodbye";
    case MessageType::update_ready: return "update_ready";
    case MessageType::upload: return "upload";
    case MessageType::admin_request: return "admin_request";
    case MessageType::admin_reply: return "admin_reply";
    case MessageType::job_pending: return "job_pending";
    case MessageType::secagg_keys: return "secagg_keys";
    case MessageType::secagg_roster: return "secagg_roster";
    case MessageType::secagg_shares: return "secagg_shares";
    case MessageType::secagg_relay: return "secagg_relay";
    case MessageType::secagg_unmask: return "secagg_unmask";
    case MessageType::logs_request: return "logs_request";
    case MessageType::logs_reply: return "logs_reply";
  }
  return "unknown";
}

const char* job_type_name(JobType type) {
  switch (type) {
    case JobType::teacher: return "teacher";
    case JobType::kd: return "kd";
    case JobType::ada: return "ada";
    case JobType::evaluate: return "evaluate";
  }
  return "unknown";
}

Result<JobType> parse_job_type(const std::string& name) {
  for (auto t : {JobType::teacher, JobType::kd, JobType::ada, JobType::evaluate}) {
    if (name == job_type_name(t)) return t;
  }
  return make_error("type '" + name + "' is not one of teacher, kd, ada, evaluate");
}

const char* operator_role_name(OperatorRole role) {
  switch (role) {
    case OperatorRole::viewer: return "viewer";
    case OperatorRole::member: return "member";
    case OperatorRole::lead: return "lead";
  }
  return "unknown";
}

Result<OperatorRole> parse_operator_role(const std::string& name) {
  for (auto r : {OperatorRole::lead, OperatorRole::member, OperatorRole::viewer}) {
    if (name == operator_role_name(r)) return r;
  }
  return make_error("role '" + name + "' is not lead, member or viewer");
}

const std::vector<AdminCommandInfo>& admin_commands() {
  using C = AdminCommand;
  using R = OperatorRole;
  static const std::vector<AdminCommandInfo> commands = {
      {C::submit, "submit", R::member, "queue a job file"},
      {C::clone, "clone", R::member, "queue a copy of a job with changes"},
      {C::remove, "delete", R::lead, "forget an ended job (its folder archived)"},
      {C::jobs, "jobs", R::viewer, "list the jobs"},
      {C::status, "status", R::viewer, "one job, round by round"},
      {C::abort, "abort", R::member, "stop a job after its round"},
      {C::resume, "resume", R::member, "take an aborted or failed job up again"},
      {C::download, "download", R::viewer, "a job's files"},
      {C::sites, "sites", R::viewer, "the consortium's sites"},
      {C::admit, "admit", R::lead, "admit a site's or an operator's kit"},
      {C::revoke, "revoke", R::lead, "revoke a site or an operator"},
      // What leaves is the site's to decide (its policy share_logs), so every role may ask.
      {C::logs, "logs", R::viewer, "a site's recent log lines, as its policy allows"},
  };
  return commands;
}

const char* admin_command_name(AdminCommand command) {
  const auto& all = admin_commands();
  const auto i = static_cast<std::size_t>(command);
  return i < all.size() ? all[i].name : "unknown";
}

Result<AdminCommand> parse_admin_command(const std::string& name) {
  std::string names;
  for (const auto& c : admin_commands()) {
    if (name == c.name) return c.command;
    names += std::string(names.empty() ? "" : ", ") + c.name;
  }
  return make_error("unknown command '" + name + "' (" + names + ")");
}

const char* reject_code_name(RejectCode code) {
  switch (code) {
    case RejectCode::unspecified: return "unspecified";
    case RejectCode::say_hello_first: return "say_hello_first";
    case RejectCode::not_registered: return "not_registered";
    case RejectCode::sender_mismatch: return "sender_mismatch";
    case RejectCode::revoked: return "revoked";
    case RejectCode::not_an_operator: return "not_an_operator";
    case RejectCode::duplicate_session: return "duplicate_session";
  }
  return "unknown";
}

const char* failure_code_name(FailureCode code) {
  switch (code) {
    case FailureCode::unspecified: return "unspecified";
    case FailureCode::policy: return "policy";
    case FailureCode::refused: return "refused";
    case FailureCode::signature: return "signature";
    case FailureCode::malformed: return "malformed";
    case FailureCode::no_data: return "no_data";
    case FailureCode::not_prepared: return "not_prepared";
    case FailureCode::training: return "training";
    case FailureCode::egress: return "egress";
    case FailureCode::internal: return "internal";
    case FailureCode::secure_aggregation: return "secure_aggregation";
  }
  return "unknown";
}

std::string model_signed_text(const std::string& job_id, int round, const std::string& body) {
  return "fedda-model-v1\n" + job_id + "\n" + std::to_string(round) + "\n" + crypto::sha256_hex(body);
}

bool is_parameter(const std::string& name) {
  return name.find("running_") == std::string::npos && name.find("num_batches_tracked") == std::string::npos;
}

bool is_pseudonym(const std::string& subject) {
  return subject.size() == 18 && subject.compare(0, 2, "s-") == 0 &&
         std::all_of(subject.begin() + 2, subject.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

TensorSet parameters_only(const TensorSet& set) {
  TensorSet out;
  for (const auto& t : set.tensors) {
    if (is_parameter(t.name)) out.tensors.push_back(t);
  }
  return out;
}

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string csv_number(double v) {
  if (!std::isfinite(v)) return "";
  char text[32];
  std::snprintf(text, sizeof text, "%.6g", v);
  return text;
}

namespace {
double csv_value(const std::string& cell) {
  if (cell.empty()) return NAN;
  std::size_t used = 0;
  const double v = std::stod(cell, &used);
  if (used != cell.size()) throw std::invalid_argument("'" + cell + "' is not a number");
  return v;
}
}  // namespace

std::string csv_line(const ResultRow& r) {
  return csv_field(r.source) + "," + csv_field(r.target) + "," + std::to_string(r.fold) + "," + csv_field(r.method) +
         "," + csv_field(r.mode) + "," + csv_field(r.subject) + "," + csv_number(r.dsc) + "," + csv_number(r.h95) + "," +
         csv_number(r.avd) + "," + csv_number(r.recall) + "," + csv_number(r.f1) + "\n";
}

std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        fields.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        fields.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else if (c != '\r') {
      fields.back() += c;
    }
  }
  return fields;
}

Result<std::vector<ResultRow>> parse_results_csv(const std::string& csv) {
  std::vector<ResultRow> rows;
  std::size_t start = 0, number = 0;
  while (start < csv.size()) {
    // A quoted field may hold a line break: a record ends at a break outside quotes.
    std::size_t end = start;
    bool quoted = false;
    while (end < csv.size() && (quoted || csv[end] != '\n')) {
      if (csv[end] == '"') quoted = !quoted;
      ++end;
    }
    const std::string line = csv.substr(start, end - start);
    start = end + 1;
    if (++number == 1 || line.empty()) continue;  // the header
    const auto f = csv_fields(line);
    if (f.size() != 11) return make_error("results.csv line " + std::to_string(number) + ": " + std::to_string(f.size()) + " fields, 11 expected");
    try {
      ResultRow r;
      r.source = f[0];
      r.target = f[1];
      r.fold = std::stoi(f[2]);
      r.method = f[3];
      r.mode = f[4];
      r.subject = f[5];
      r.dsc = csv_value(f[6]);
      r.h95 = csv_value(f[7]);
      r.avd = csv_value(f[8]);
      r.recall = csv_value(f[9]);
      r.f1 = csv_value(f[10]);
      rows.push_back(std::move(r));
    } catch (const std::exception& e) {
      return make_error("results.csv line " + std::to_string(number) + ": " + e.what());
    }
  }
  return rows;
}

const char* text_kind_name(TextKind kind) {
  switch (kind) {
    case TextKind::id: return "name";
    case TextKind::line: return "one-line text";
    case TextKind::reason: return "reason";
    case TextKind::document: return "document";
  }
  return "text";
}

namespace detail {

namespace {
thread_local std::istream* decoding_stream = nullptr;
thread_local std::size_t decoding_bytes = 0;
}  // namespace

void begin_decoding(std::istream* in, std::size_t frame_bytes) {
  decoding_stream = in;
  decoding_bytes = frame_bytes;
}

std::string text_fault(const std::string& value, TextKind kind) {
  if (value.size() > max_text_bytes(kind)) {
    return std::string("a ") + text_kind_name(kind) + " of " + std::to_string(value.size()) + " bytes (at most " +
           std::to_string(max_text_bytes(kind)) + ")";
  }
  if (!text::valid_utf8(value)) return std::string("a ") + text_kind_name(kind) + " that is not valid UTF-8";
  if ((kind == TextKind::id || kind == TextKind::line) && text::has_control(value)) {
    return std::string("a ") + text_kind_name(kind) + " holding a control character";
  }
  return {};
}

void check_text(const std::string& value, TextKind kind) {
  if (auto fault = text_fault(value, kind); !fault.empty()) throw std::invalid_argument(fault);
}

std::string repaired_text(const std::string& value, TextKind kind) {
  std::string out = value;
  if (kind == TextKind::id) return out;  // ids are checked where they are made; never rewritten
  if (!text::valid_utf8(out) || (kind == TextKind::line && text::has_control(out))) out = text::printable(out);
  if (out.size() > max_text_bytes(kind)) out = text::utf8_prefix(out, max_text_bytes(kind));
  return out;
}

void check_size(std::uint64_t count, std::size_t element_bytes) {
  std::size_t left = decoding_bytes;
  if (decoding_stream != nullptr) {
    const auto position = decoding_stream->tellg();
    if (position >= 0) left = decoding_bytes - std::min<std::size_t>(decoding_bytes, static_cast<std::size_t>(position));
  }
  if (element_bytes == 0 || count > left / element_bytes) {
    throw std::length_error("a size of " + std::to_string(count) + " does not fit in the " + std::to_string(left) +
                            " bytes left");
  }
}

void finish_encoding(Header& header, std::string body, Frames& frames) {
  header.version = kVersion;
  header.body_bytes = body.size();
  header.body_crc32 = crc32_of(body);
  frames.header = encode_header(header);
  frames.body_crc32 = header.body_crc32;
  frames.body = std::move(body);
}

Error decode_failure(const char* what, const std::exception& e) {
  return make_error(std::string("malformed ") + what + ": " + e.what());
}

}  // namespace detail

std::string encode_header(const Header& header) {
  std::ostringstream out;
  {
    cereal::PortableBinaryOutputArchive ar(out);
    ar(header);
  }
  return out.str();
}

Frames encode_empty(Header header) {
  Frames frames;
  detail::finish_encoding(header, std::string(), frames);
  return frames;
}

Result<Header> decode_header(const std::string& header_frame, const std::string& body_frame,
                             std::size_t max_message_bytes) {
  if (header_frame.size() > 4096) return make_error("header frame of " + std::to_string(header_frame.size()) + " bytes");
  if (body_frame.size() > max_message_bytes) {
    return make_error("message of " + std::to_string(body_frame.size()) + " bytes exceeds the limit of " +
                      std::to_string(max_message_bytes));
  }
  Header header;
  try {
    std::istringstream in(header_frame);
    detail::begin_decoding(&in, header_frame.size());
    cereal::PortableBinaryInputArchive ar(in);
    ar(header);
    if (in.peek() != std::char_traits<char>::eof()) return make_error("header has trailing bytes");
  } catch (const std::exception& e) {
    return detail::decode_failure("header", e);
  }
  if (header.version != kVersion) {
    return make_error("protocol version " + std::to_string(header.version) + " (this build speaks " +
                      std::to_string(kVersion) + ")");
  }
  const auto t = static_cast<int>(header.type);
  if (t < static_cast<int>(MessageType::hello) || t > static_cast<int>(kLastMessageType)) {
    return make_error("unknown message type " + std::to_string(t));
  }
  if (header.body_bytes != body_frame.size()) {
    return make_error("body is " + std::to_string(body_frame.size()) + " bytes, header says " +
                      std::to_string(header.body_bytes));
  }
  if (crc32_of(body_frame) != header.body_crc32) return make_error("body checksum mismatch");
  return header;
}

namespace {

// A setting as JSON: a setting enum or the job type by name, anything else as it is.
template <class T>
nlohmann::json json_of(const T& value) {
  if constexpr (std::is_same_v<T, JobType>) {
    return job_type_name(value);
  } else if constexpr (is_setting_v<T>) {
    return setting_name(value);
  } else {
    return value;
  }
}

// Read `value` from `o[key]`: absent leaves the default (Error when `required`), a wrong type or
// an unknown name throws, naming the key.
template <class T>
void read_json(const nlohmann::json& o, const std::string& key, T& value, bool required) {
  if (!o.contains(key)) {
    if (required) throw std::invalid_argument("'" + key + "' is missing");
    return;
  }
  if constexpr (std::is_same_v<T, JobType>) {
    auto parsed = parse_job_type(o.at(key).get<std::string>());
    if (!parsed) throw std::invalid_argument(parsed.error().message);
    value = *parsed;
  } else if constexpr (is_setting_v<T>) {
    auto parsed = parse_setting<T>(o.at(key).get<std::string>(), key);
    if (!parsed) throw std::invalid_argument(parsed.error().message);
    value = *parsed;
  } else {
    value = o.at(key).get<T>();
  }
}

}  // namespace

std::string to_json(const JobSpec& j) {
  nlohmann::json o = nlohmann::json::object();
  for_each_job_setting(j, [&](const JobSetting& s, const auto& field) {
    using T = std::decay_t<decltype(field)>;
    if constexpr (std::is_same_v<T, DpSpec>) {
      if (!field.enabled()) return;  // a job without DP has no dp object
      auto& dp = o[s.name] = nlohmann::json::object();
      for_each_dp_setting(field, [&](const JobSetting& d, const auto& value) { dp[d.name] = value; });
    } else {
      o[s.name] = json_of(field);
    }
  });
  return o.dump(2);
}

std::string job_file_settings(const JobSpec& j) {
  std::string out;
  for_each_job_setting(j, [&](const JobSetting& s, const auto& field) {
    using T = std::decay_t<decltype(field)>;
    if (!s.in_job_file) return;
    if constexpr (std::is_same_v<T, DpSpec>) {
      if (!field.enabled()) return;
      nlohmann::json dp = nlohmann::json::object();
      for_each_dp_setting(field, [&](const JobSetting& d, const auto& value) { dp[d.name] = value; });
      out += std::string(s.name) + ": " + dp.dump() + "\n";
    } else {
      out += std::string(s.name) + ": " + json_of(field).dump() + "\n";
    }
  });
  return out;
}

// Every setting of version 1 must be there (records written since then have them all); a later
// one absent takes JobSpec's default, as a job written before that setting existed.
Result<JobSpec> job_spec_from_json(const std::string& text) {
  try {
    const auto o = nlohmann::json::parse(text);
    JobSpec j;
    for_each_job_setting(j, [&](const JobSetting& s, auto& field) {
      using T = std::decay_t<decltype(field)>;
      if constexpr (std::is_same_v<T, DpSpec>) {
        if (!o.contains(s.name)) return;  // absent before version 10, and for a job without DP
        const auto& dp = o.at(s.name);
        for_each_dp_setting(field, [&](const JobSetting& d, auto& value) {
          read_json(dp, d.name, value, d.name == std::string("clip_norm"));
        });
      } else {
        read_json(o, s.name, field, s.since == 1);
      }
    });
    return j;
  } catch (const std::exception& e) {
    return make_error(std::string("job spec: ") + e.what());
  }
}

}  // namespace fedda::protocol
