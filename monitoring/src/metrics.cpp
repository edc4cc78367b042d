#include "fedda/monitoring/metrics.h"

#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

namespace fedda::monitoring {
namespace {

bool valid_name(const std::string& name, bool label) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!label && c == ':');
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return !(label && name.rfind("__", 0) == 0);  // reserved for Prometheus itself
}

std::string escape_help(const std::string& help) {
  std::string out;
  for (const char c : help) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

}  // namespace

std::string escape_label_value(const std::string& value) {
  std::string out;
  for (const char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

MetricsText& MetricsText::family(const std::string& name, MetricType type, const std::string& help) {
  if (!valid_name(name, false)) throw std::invalid_argument("metric name '" + name + "' is not valid");
  const bool counter = type == MetricType::counter;
  if (counter && (name.size() < 6 || name.compare(name.size() - 6, 6, "_total") != 0)) {
    throw std::invalid_argument("counter '" + name + "' must end in _total");
  }
  current_ = name;
  text_ += "# HELP " + name + " " + escape_help(help) + "\n";
  text_ += "# TYPE " + name + (counter ? " counter\n" : " gauge\n");
  return *this;
}

MetricsText& MetricsText::sample(double value, const Labels& labels) {
  if (current_.empty()) throw std::logic_error("metrics: a sample before its family");
  text_ += current_;
  if (!labels.empty()) {
    text_ += '{';
    for (std::size_t i = 0; i < labels.size(); ++i) {
      if (!valid_name(labels[i].first, true)) throw std::invalid_argument("label name '" + labels[i].first + "' is not valid");
      text_ += (i ? "," : "") + labels[i].first + "=\"" + escape_label_value(labels[i].second) + "\"";
    }
    text_ += '}';
  }
  text_ += " " + number(value) + "\n";
  return *this;
}

MetricsText& MetricsText::add(const std::string& name, MetricType type, const std::string& help, double value,
                              const Labels& labels) {
  return family(name, type, help).sample(value, labels);
}

}  // namespace fedda::monitoring
