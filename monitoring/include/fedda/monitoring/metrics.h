#pragma once
// Prometheus metrics in the text exposition format (version 0.0.4): what a hospital's existing
// monitoring scrapes from `/metrics`. A family is written once with its HELP and TYPE lines and
// then its samples; label values are escaped as the format asks (backslash, double quote, line
// feed), so a site's own strings cannot break the document. Names are checked: a name outside
// [a-zA-Z_:][a-zA-Z0-9_:]* is a programming error and throws.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace fedda::monitoring {

using Labels = std::vector<std::pair<std::string, std::string>>;

enum class MetricType { counter, gauge };

class MetricsText {
 public:
  // Starts a family. Counters' names end in _total (checked).
  MetricsText& family(const std::string& name, MetricType type, const std::string& help);
  // One sample of the family last started.
  MetricsText& sample(double value, const Labels& labels = {});
  // A family with one sample.
  MetricsText& add(const std::string& name, MetricType type, const std::string& help, double value,
                   const Labels& labels = {});

  const std::string& text() const { return text_; }

 private:
  std::string text_;
  std::string current_;
};

// A label value as the exposition format writes it (without the quotes).
std::string escape_label_value(const std::string& value);

}  // namespace fedda::monitoring
