#include "fedda/common/log.h"

#include "fedda/common/recent_log.h"
#include "fedda/common/text.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace fedda::log {
namespace {

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}

// The latest lines (recent_log.h), once kept; guarded by registry_mutex().
std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt>& recent_sink() {
  static std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink;
  return sink;
}

spdlog::level::level_enum& current_level() {
  static spdlog::level::level_enum level = spdlog::level::info;
  return level;
}

// "<N>", the syslog priority journald reads at the start of a line (sd-daemon(3)).
class SyslogPriority : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    const char* priority = "<6>";
    switch (msg.level) {
      case spdlog::level::trace:
      case spdlog::level::debug: priority = "<7>"; break;     // debug
      case spdlog::level::info: priority = "<6>"; break;      // info
      case spdlog::level::warn: priority = "<4>"; break;      // warning
      case spdlog::level::err: priority = "<3>"; break;       // err
      case spdlog::level::critical: priority = "<2>"; break;  // crit
      default: break;
    }
    dest.append(priority, priority + 3);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<SyslogPriority>(); }
};

// The message as text::printable writes it: a newline or an escape sequence in a string from
// the wire cannot forge a log line or drive a terminal. Takes the place of spdlog's own %v.
class PrintablePayload : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    const std::string_view payload(msg.payload.data(), msg.payload.size());
    const auto clean = text::printable(payload);
    dest.append(clean.data(), clean.data() + clean.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<PrintablePayload>(); }
};

}  // namespace

bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (!stream || !*stream) return false;
  struct stat st {};
  if (::fstat(STDERR_FILENO, &st) != 0) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
  return dev == static_cast<unsigned long long>(st.st_dev) && ino == static_cast<unsigned long long>(st.st_ino);
}

std::shared_ptr<spdlog::logger> get(const std::string& component) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  if (auto existing = spdlog::get(component)) return existing;
  static const bool journal = stderr_is_journal();
  std::shared_ptr<spdlog::logger> logger;
  if (journal) {
    // journald stamps each line itself and reads its priority from the "<N>" prefix.
    logger = spdlog::stderr_logger_mt(component);
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<SyslogPriority>('*').add_flag<PrintablePayload>('v').set_pattern("%*[%n] %v");
    logger->set_formatter(std::move(formatter));
  } else {
    logger = spdlog::stderr_color_mt(component);
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<PrintablePayload>('v').set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] [%n] %v");
    logger->set_formatter(std::move(formatter));
  }
  logger->set_level(current_level());
  if (recent_sink()) logger->sinks().push_back(recent_sink());
  return logger;
}

std::string RecentLine::text() const { return "[" + time + "] [" + level + "] [" + component + "] " + message; }

void keep_recent_lines(std::size_t capacity) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  if (recent_sink()) return;
  recent_sink() = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(capacity);
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& l) { l->sinks().push_back(recent_sink()); });
}

std::vector<RecentLine> recent_lines() {
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    sink = recent_sink();
  }
  std::vector<RecentLine> out;
  if (!sink) return out;
  for (const auto& m : sink->last_raw()) {
    RecentLine line;
    const auto t = std::chrono::system_clock::to_time_t(m.time);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(m.time.time_since_epoch()).count() % 1000;
    std::tm utc{};
    gmtime_r(&t, &utc);
    char stamp[40];
    std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02d %02d:%02d:%02d.%03d", utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday,
                  utc.tm_hour, utc.tm_min, utc.tm_sec, static_cast<int>(ms));
    line.time = stamp;
    const auto level = spdlog::level::to_string_view(m.level);
    line.level.assign(level.data(), level.size());
    line.component.assign(m.logger_name.data(), m.logger_name.size());
    line.message = text::printable(std::string_view(m.payload.data(), m.payload.size()));
    out.push_back(std::move(line));
  }
  return out;
}

Status set_level(const std::string& level) {
  const auto parsed = spdlog::level::from_str(level);
  // from_str maps unknown names to "off"; only accept "off" when it was asked for.
  if (parsed == spdlog::level::off && level != "off") {
    return make_error("unknown log level '" + level +
                      "' (choose trace, debug, info, warn, error, critical or off)");
  }
  std::lock_guard<std::mutex> lock(registry_mutex());
  current_level() = parsed;
  spdlog::set_level(parsed);
  spdlog::apply_all([parsed](const std::shared_ptr<spdlog::logger>& l) { l->set_level(parsed); });
  return Status::success();
}

Budget::Budget(int per_key, int total, std::size_t max_keys) : per_key_(per_key), total_(total), max_keys_(max_keys) {}

std::size_t Budget::remembered() {
  std::lock_guard<std::mutex> lock(mutex_);
  return keys_.size();
}

std::optional<int> Budget::take(const std::string& key, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto minute = std::chrono::minutes(1);
  if (now - all_.start >= minute) all_ = Window{now};
  auto it = keys_.find(key);
  if (it == keys_.end()) {
    if (keys_.size() >= max_keys_) {
      for (auto k = keys_.begin(); k != keys_.end();) k = now - k->second.start >= minute ? keys_.erase(k) : std::next(k);
    }
    if (keys_.size() >= max_keys_) keys_.clear();  // a flood of keys within a minute: start over
    it = keys_.emplace(key, Window{now}).first;
  }
  auto& w = it->second;
  if (now - w.start >= minute) w = Window{now, 0, w.held};
  if (w.written >= per_key_ || all_.written >= total_) {
    ++w.held;
    ++all_.held;
    return std::nullopt;
  }
  ++w.written;
  ++all_.written;
  const int held = w.held;
  w.held = 0;
  return held;
}

}  // namespace fedda::log

