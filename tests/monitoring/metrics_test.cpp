#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "fedda/monitoring/http_server.h"
#include "fedda/monitoring/metrics.h"
#include "status_api.h"

namespace fedda::monitoring {
namespace {

TEST(Metrics, FamiliesCarryHelpTypeAndEscapedLabels) {
  MetricsText m;
  m.add("fedda_sites_connected", MetricType::gauge, "Sites connected now.", 3);
  m.family("fedda_bytes_sent_total", MetricType::counter, "Bytes sent.\nBy endpoint \\ plane.");
  m.sample(12, {{"plane", "sites"}});
  m.sample(1.5e9, {{"plane", "a \"quoted\"\nback\\slash"}});
  EXPECT_EQ(m.text(),
            "# HELP fedda_sites_connected Sites connected now.\n"
            "# TYPE fedda_sites_connected gauge\n"
            "fedda_sites_connected 3\n"
            "# HELP fedda_bytes_sent_total Bytes sent.\\nBy endpoint \\\\ plane.\n"
            "# TYPE fedda_bytes_sent_total counter\n"
            "fedda_bytes_sent_total{plane=\"sites\"} 12\n"
            "fedda_bytes_sent_total{plane=\"a \\\"quoted\\\"\\nback\\\\slash\"} 1500000000\n");
}

TEST(Metrics, BadNamesAreProgrammingErrors) {
  MetricsText m;
  EXPECT_THROW(m.add("2fast", MetricType::gauge, "x", 1), std::invalid_argument);
  EXPECT_THROW(m.add("fedda_rounds", MetricType::counter, "a counter without _total", 1), std::invalid_argument);
  EXPECT_THROW(m.add("fedda_x", MetricType::gauge, "x", 1, {{"__name__", "y"}}), std::invalid_argument);
  EXPECT_THROW(m.add("fedda_x", MetricType::gauge, "x", 1, {{"site-id", "y"}}), std::invalid_argument);
  EXPECT_THROW(MetricsText().sample(1), std::logic_error);
}

TEST(Metrics, NonFiniteValuesUseTheFormatsSpelling) {
  MetricsText m;
  m.family("fedda_x", MetricType::gauge, "x").sample(std::nan("")).sample(HUGE_VAL).sample(-HUGE_VAL);
  EXPECT_NE(m.text().find("fedda_x NaN\nfedda_x +Inf\nfedda_x -Inf\n"), std::string::npos) << m.text();
}

TEST(StatusPage, JsonInsideTheScriptElementCannotCloseIt) {
  const std::string hostile = R"({"device": "</script><script>alert(1)</script> & <!--"})";
  const auto safe = coordinator::json_for_script(hostile);
  EXPECT_EQ(safe.find('<'), std::string::npos);
  EXPECT_EQ(safe.find('>'), std::string::npos);
  EXPECT_EQ(safe.find('&'), std::string::npos);
  EXPECT_EQ(safe, R"({"device": "\u003c/script\u003e\u003cscript\u003ealert(1)\u003c/script\u003e \u0026 \u003c!--"})");
}

TEST(HttpServer, ListensOnLoopbackOnlyWithoutAToken) {
  EXPECT_TRUE(loopback_listen("127.0.0.1:8470"));
  EXPECT_TRUE(loopback_listen("localhost:0"));
  EXPECT_TRUE(loopback_listen("[::1]:8470"));
  EXPECT_FALSE(loopback_listen("0.0.0.0:8470"));
  EXPECT_FALSE(loopback_listen("10.1.2.3:8470"));
  EXPECT_FALSE(loopback_listen("8470"));
  const auto open = HttpServer::start("0.0.0.0:0", {});
  ASSERT_FALSE(open);
  EXPECT_NE(open.error().message.find("loopback only"), std::string::npos) << open.error().message;
  for (const char* bad : {"127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", ":8470"}) {
    const auto r = HttpServer::start(bad, {});
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message.find(bad), std::string::npos) << r.error().message;
  }
}

}  // namespace
}  // namespace fedda::monitoring
