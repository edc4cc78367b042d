// The coordinator's status page, JSON API and /metrics, on a real fedda-coordinator process with
// fake sites speaking the real protocol on loopback: the page as headless Chromium renders it
// (its DOM and a screenshot kept under build/artefacts/), the metrics as Prometheus' own parser
// (promtool) reads them, and the bearer token a coordinator with a kit asks for.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "fedda/common/kit.h"
#include "support/fake_sites.h"
#include "support/process.h"
#include "support/test_support.h"

namespace fedda {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;
using testing::Process;

// What a hostile site puts in its hello: the page must show it as text and never run it.
constexpr const char* kHostileDevice = "<script>document.title='owned'</script><img src=x onerror=alert(1)>";

struct Answer {
  int status = 0;
  std::string body;
  httplib::Headers headers;
  std::string header(const std::string& name) const {
    const auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

// One GET, redirects not followed; `token` as a bearer header, `headers` added.
Answer get(const std::string& url, const std::string& path, const std::string& token = {}, httplib::Headers headers = {}) {
  httplib::Client client(url);
  client.set_read_timeout(20, 0);
  if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
  auto res = client.Get(path.c_str(), headers);
  if (!res) return {};
  return {res->status, res->body, res->headers};
}

// Headless Chromium: the DOM after the page's scripts ran (`--dump-dom`), or a screenshot.
testing::CommandResult chromium(const fs::path& profile, const std::string& what, const std::string& url) {
  return testing::run_command("timeout 120 chromium --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage "
                              "--no-first-run --hide-scrollbars --user-data-dir=" + profile.string() +
                              " --window-size=1280,1100 --virtual-time-budget=5000 " + what + " '" + url +
                              "' 2>/dev/null");
}

class StatusPage : public ::testing::Test {
 protected:
  // Starts a coordinator with --http and a job of `rounds` rounds over `sites` fake sites.
  void start_coordinator(const std::vector<std::string>& extra, int rounds = 0, int sites = 3) {
    std::vector<std::string> argv = {testing::bin("fedda-coordinator").string(), "serve", "--bind", "tcp://127.0.0.1:0",
                                     "--http", "127.0.0.1:0", "--endpoint-file", (dir_ / "endpoints").string(),
                                     "--state", (dir_ / "state").string(), "--heartbeat-ms", "500"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    if (rounds) {
      std::string list;
      for (int i = 0; i < sites; ++i) list += (i ? ", " : "") + ("site" + std::to_string(i));
      std::ofstream(dir_ / "job.yaml") << "id: page-demo\ntype: teacher\nsource: site0\nsites: [" << list << "]\nrounds: "
                                      << rounds << "\nmin_sites: " << sites << "\nevaluate: false\n"
                                      << "model: {width: 8, depth: 3}\n";
      argv.insert(argv.end(), {"--job", (dir_ / "job.yaml").string()});
    }
    coordinator_ = std::make_unique<Process>(argv, dir_ / "coordinator.log");
    ASSERT_TRUE(testing::wait_for_text(dir_ / "endpoints", "http://", 30s)) << testing::read_text(dir_ / "coordinator.log");
    std::istringstream lines(testing::read_text(dir_ / "endpoints"));
    std::getline(lines, sites_endpoint_);
    std::getline(lines, admin_endpoint_);
    std::getline(lines, url_);
  }

  std::string log() const { return testing::read_text(dir_ / "coordinator.log"); }

  testing::ScratchDir dir_;
  std::unique_ptr<Process> coordinator_;
  std::string sites_endpoint_, admin_endpoint_, url_;
};

TEST_F(StatusPage, ChromiumShowsSitesAndJobProgressAndShowsWhatSitesSendAsText) {
  ASSERT_EQ(testing::run_command("command -v chromium").exit_code, 0) << "chromium is not installed (scripts/install-deps.sh)";
  start_coordinator({"--insecure"}, 400);
  // site2 trains under differential privacy: its updates say what epsilon it spent. site3 is in no
  // job of the coordinator's: it runs a one-round job that ends while page-demo trains (with an
  // update of its own: the honest fakes share one, made for the job they train).
  testing::FakeSites fakes(sites_endpoint_, 4, "site", 300ms,
                           [](int i) {
                             return i == 2   ? testing::Behaviour::reports_epsilon
                                    : i == 3 ? testing::Behaviour::steady_steps
                                             : testing::Behaviour::honest;
                           },
                           [](int i) { return i == 1 ? std::string(kHostileDevice) : std::string("cpu"); });
  // Wait until the job has finished a few rounds, as the API says.
  json job;
  const auto deadline = std::chrono::steady_clock::now() + 90s;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto a = get(url_, "/api/jobs/page-demo");
    if (a.status == 200) {
      job = json::parse(a.body);
      if (job.value("round", 0) >= 3) break;
    }
    std::this_thread::sleep_for(200ms);
  }
  ASSERT_GE(job.value("round", 0), 3) << job.dump() << log();
  EXPECT_EQ(job["rounds_done"].size(), static_cast<std::size_t>(job["round"].get<int>()));
  // A job that ends (first-month issue: ended jobs fold below running and queued ones).
  std::ofstream(dir_ / "tiny.yaml") << "id: tiny-done\ntype: teacher\nsource: site3\nsites: [site3]\nrounds: 1\n"
                                    << "min_sites: 1\nevaluate: false\nmodel: {width: 4, depth: 2}\n";
  const auto submitted = testing::run_command(testing::bin("fedda-admin").string() + " --coordinator " + admin_endpoint_ +
                                              " submit " + (dir_ / "tiny.yaml").string());
  ASSERT_EQ(submitted.exit_code, 0) << submitted.output;
  // The open round's sites, answered or awaited (first-month issue: a running round shows who answered).
  json open;
  for (int i = 0; i < 100 && !open.is_object(); ++i) {
    open = json::parse(get(url_, "/api/jobs/page-demo").body)["round_sites"];
    if (!open.is_object()) std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(open.is_object()) << "no round open in 5 s\n" << log();
  EXPECT_EQ(open["answered"].size() + open["waiting"].size(), 3u) << open.dump();
  EXPECT_FALSE(open["evaluation"].get<bool>());
  testing::CommandResult status;
  for (int i = 0; i < 5 && status.output.find(": answered ") == std::string::npos; ++i) {  // a round may be closing
    status = testing::run_command(testing::bin("fedda-admin").string() + " --coordinator " + admin_endpoint_ +
                                  " status page-demo");
  }
  EXPECT_NE(status.output.find("  round "), std::string::npos) << status.output;
  EXPECT_NE(status.output.find(": answered "), std::string::npos) << status.output;
  for (int i = 0; i < 150; ++i) {
    if (json::parse(get(url_, "/api/jobs/tiny-done").body).value("state", "") == "finished") break;
    std::this_thread::sleep_for(200ms);
  }
  ASSERT_EQ(json::parse(get(url_, "/api/jobs/tiny-done").body).value("state", ""), "finished") << log();

  const auto sites = json::parse(get(url_, "/api/sites").body);
  ASSERT_EQ(sites.size(), 4u);
  EXPECT_EQ(sites[1]["device"], kHostileDevice);  // the API gives the string as sent (JSON-escaped)
  EXPECT_TRUE(sites[1]["online"].get<bool>());
  EXPECT_EQ(sites[1]["resources"]["cores"], 4) << sites[1].dump();
  EXPECT_EQ(sites[1]["resources"]["gpus"], json::array({"Fake GPU 80GB"})) << sites[1].dump();

  // The overview, rendered by a browser.
  const auto overview = chromium(dir_ / "profile", "--dump-dom", url_ + "/");
  ASSERT_EQ(overview.exit_code, 0) << overview.output;
  const auto& dom = overview.output;
  for (const char* site : {">site0<", ">site1<", ">site2<"}) EXPECT_NE(dom.find(site), std::string::npos) << site << "\n" << dom;
  EXPECT_NE(dom.find("Sites (4 of 4 online)"), std::string::npos) << dom;
  EXPECT_NE(dom.find(">4 cores, 8.0 GiB, 50 GiB free, float32, GPU Fake GPU 80GB<"), std::string::npos) << dom;
  EXPECT_NE(dom.find(">page-demo</a>"), std::string::npos) << dom;
  EXPECT_NE(dom.find("<details id=\"ended-jobs\"><summary>Ended jobs (1)</summary>"), std::string::npos) << dom;
  EXPECT_LT(dom.find(">page-demo</a>"), dom.find(">tiny-done</a>")) << "the ended job is listed below the running one";
  std::smatch progress;
  ASSERT_TRUE(std::regex_search(dom, progress, std::regex("<progress max=\"400\" value=\"([0-9]+)\">"))) << dom;
  EXPECT_GE(std::stoi(progress[1]), 3);
  // The hostile string is text: escaped in the DOM, no element made of it, the title untouched.
  EXPECT_NE(dom.find("&lt;script&gt;document.title='owned'&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"),
            std::string::npos) << dom;
  EXPECT_EQ(dom.find("<script>document.title"), std::string::npos) << dom;
  EXPECT_EQ(dom.find("<img src=\"x\""), std::string::npos) << dom;
  EXPECT_NE(dom.find("<title>fedda consortium</title>"), std::string::npos) << dom;

  // One job: its charts and the round cost table.
  const auto one = chromium(dir_ / "profile", "--dump-dom", url_ + "/jobs/page-demo");
  ASSERT_EQ(one.exit_code, 0) << one.output;
  EXPECT_NE(one.output.find("Training loss per site"), std::string::npos) << one.output;
  EXPECT_NE(one.output.find("<polyline"), std::string::npos) << one.output;  // a line per site
  EXPECT_NE(one.output.find("Round cost"), std::string::npos) << one.output;
  // Each site's epsilon so far (DP issue: the status page shows it per site): only site2 reports one.
  EXPECT_NE(one.output.find("Differential privacy: epsilon spent per site"), std::string::npos) << one.output;
  std::smatch spent;
  ASSERT_TRUE(std::regex_search(one.output, spent, std::regex("<td>site2</td><td class=\"num\">([0-9.]+)</td><td class=\"num\">1\\.500</td>")))
      << one.output;
  EXPECT_GE(std::stod(spent[1]), 3 * testing::kEpsilonPerRound);

  // Screenshots, kept as the test's artefacts (docs/ has one taken this way).
  const auto artefacts = testing::bin("").parent_path().parent_path() / "artefacts";
  fs::create_directories(artefacts);
  for (const auto& [name, path] : {std::pair{"status-page.png", "/"}, std::pair{"status-page-job.png", "/jobs/page-demo"}}) {
    const auto png = artefacts / name;
    fs::remove(png);
    const auto shot = chromium(dir_ / "profile", "--screenshot=" + png.string(), url_ + path);
    ASSERT_EQ(shot.exit_code, 0) << shot.output;
    ASSERT_TRUE(fs::exists(png)) << shot.output;
    EXPECT_GT(fs::file_size(png), 10000u);
    std::ifstream in(png, std::ios::binary);
    char magic[8] = {};
    in.read(magic, 8);
    EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  }

  // The metrics, read by Prometheus' own parser, and what they say.
  const auto metrics = get(url_, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  std::ofstream(dir_ / "metrics.txt") << metrics.body;
  const auto promtool = testing::run_command("promtool check metrics < " + (dir_ / "metrics.txt").string());
  EXPECT_EQ(promtool.exit_code, 0) << promtool.output << "\n" << metrics.body;
  EXPECT_NE(metrics.body.find("fedda_sites_connected 4\n"), std::string::npos) << metrics.body;
  EXPECT_NE(metrics.body.find("fedda_job_state{job=\"page-demo\",state=\"running\"} 1\n"), std::string::npos) << metrics.body;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(metrics.body, m, std::regex("\nfedda_rounds_finished_total ([0-9]+)\n")));
  EXPECT_GE(std::stoi(m[1]), 3);
  ASSERT_TRUE(std::regex_search(metrics.body, m, std::regex("\nfedda_bytes_received_total\\{plane=\"sites\"\\} ([0-9.e+]+)\n")));
  EXPECT_GT(std::stod(m[1]), 1000);
  EXPECT_NE(metrics.body.find("fedda_site_up{site=\"site1\"} 1\n"), std::string::npos) << metrics.body;

  // Unknown pages and jobs are 404s, and the health check answers.
  EXPECT_EQ(get(url_, "/api/jobs/nope").status, 404);
  EXPECT_EQ(get(url_, "/../state/audit.jsonl").status, 404);
  EXPECT_EQ(get(url_, "/healthz").status, 200);
}

TEST_F(StatusPage, ACoordinatorWithAKitAsksForItsToken) {
  const auto kits = dir_ / "kits";
  ASSERT_TRUE(kit::provision({"wmh", "tcp://127.0.0.1:0", {"utrecht"}, kits, {"alice"}, {}}));
  start_coordinator({"--kit", (kits / "coordinator").string()});
  const auto printed = testing::run_command(testing::bin("fedda-coordinator").string() + " status-token --kit " +
                                            (kits / "coordinator").string());
  ASSERT_EQ(printed.exit_code, 0) << printed.output;
  const auto token = printed.output.substr(0, printed.output.find('\n'));
  ASSERT_EQ(token.size(), 64u) << printed.output;

  EXPECT_EQ(get(url_, "/api/overview").status, 401);
  EXPECT_EQ(get(url_, "/metrics").status, 401);
  EXPECT_EQ(get(url_, "/metrics", std::string(64, '0')).status, 401);
  const auto with_token = get(url_, "/api/overview", token);
  ASSERT_EQ(with_token.status, 200);
  EXPECT_EQ(json::parse(with_token.body)["coordinator"]["consortium"], "wmh");
  EXPECT_EQ(get(url_, "/?token=" + token).status, 200);  // a client that does not ask for HTML: taken as it is
  EXPECT_EQ(get(url_, "/static/status.js").status, 200);  // the page's own script: nothing of the service's
  // The health check answers without the token and tells nothing else.
  const auto health = get(url_, "/healthz");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(json::parse(health.body), json({{"ok", true}})) << health.body;

  // A browser's first visit (first-month issue: the token sat in every link, in history and
  // bookmarks): traded for an HttpOnly, SameSite=Strict cookie, and the address bar cleaned.
  const httplib::Headers browser = {{"Accept", "text/html,application/xhtml+xml"}};
  const auto first = get(url_, "/jobs/some-job?token=" + token, {}, browser);
  EXPECT_EQ(first.status, 303);
  EXPECT_EQ(first.header("Location"), "/jobs/some-job");
  EXPECT_EQ(first.header("Set-Cookie"), "fedda_token=" + token + "; HttpOnly; SameSite=Strict; Path=/");
  EXPECT_EQ(get(url_, "/?token=" + std::string(64, '0'), {}, browser).status, 401);  // a wrong token gets no cookie
  const auto by_cookie = get(url_, "/api/overview", {}, {{"Cookie", "other=1; fedda_token=" + token}});
  EXPECT_EQ(by_cookie.status, 200) << by_cookie.body;
  EXPECT_EQ(get(url_, "/api/overview", {}, {{"Cookie", "fedda_token=" + std::string(64, '0')}}).status, 401);

  // A browser given the token draws the page (its script and style sheet load, its API calls carry the cookie).
  const auto page = chromium(dir_ / "profile", "--dump-dom", url_ + "/?token=" + token);
  ASSERT_EQ(page.exit_code, 0) << page.output;
  EXPECT_NE(page.output.find("Sites (0 of 1 online)"), std::string::npos) << page.output;
  EXPECT_NE(page.output.find(">utrecht<"), std::string::npos) << page.output;
  EXPECT_NE(page.output.find("CurveZMQ, signed models"), std::string::npos) << page.output;
  EXPECT_NE(page.output.find("href=\"/metrics\""), std::string::npos) << page.output;
  EXPECT_EQ(page.output.find(token), std::string::npos) << "the token is in the page\n" << page.output;
  EXPECT_EQ(page.output.find("cannot reach"), std::string::npos) << page.output;  // its refresh was answered
  EXPECT_NE(log().find("no valid bearer token"), std::string::npos) << log();
}

TEST_F(StatusPage, ASecondCoordinatorOnTheSameStateFolderOrPortIsRefused) {
  start_coordinator({"--insecure"});
  // The same state folder: it would run the same jobs twice.
  auto same_state = testing::run_command(testing::bin("fedda-coordinator").string() +
                                         " serve --insecure --bind tcp://127.0.0.1:0 --state " + (dir_ / "state").string());
  EXPECT_EQ(same_state.exit_code, 1) << same_state.output;
  EXPECT_NE(same_state.output.find("is in use by another coordinator (pid " + std::to_string(coordinator_->pid()) + ")"),
            std::string::npos) << same_state.output;
  // The same status page port (no SO_REUSEPORT: it would take half the requests).
  const auto port = url_.substr(url_.rfind(':') + 1);
  auto same_port = testing::run_command(testing::bin("fedda-coordinator").string() +
                                        " serve --insecure --bind tcp://127.0.0.1:0 --http 127.0.0.1:" + port +
                                        " --state " + (dir_ / "other").string());
  EXPECT_EQ(same_port.exit_code, 1) << same_port.output;
  EXPECT_NE(same_port.output.find("cannot listen on '127.0.0.1:" + port + "'"), std::string::npos) << same_port.output;
  EXPECT_EQ(get(url_, "/healthz").status, 200);  // the first one is unaffected
}

TEST_F(StatusPage, WithoutAKitItRefusesToListenBeyondLoopback) {
  // Only checked, never bound: the address is refused before any socket opens.
  const auto r = testing::run_command(testing::bin("fedda-coordinator").string() +
                                      " serve --insecure --bind tcp://127.0.0.1:0 --http 0.0.0.0:0 --state " +
                                      (dir_ / "state").string());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("loopback only"), std::string::npos) << r.output;
}

// Under systemd (stderr is the journal's stream, named by JOURNAL_STREAM) a line carries its syslog
// priority and no time of its own; anywhere else it keeps its timestamp and level name.
TEST(Journald, LinesCarryTheirSyslogPriorityAndNoTimestampOfTheirOwn) {
  testing::ScratchDir dir;
  const auto out = dir / "stderr.txt";
  std::ofstream(out).close();
  struct stat st {};
  ASSERT_EQ(::stat(out.c_str(), &st), 0);
  const std::string stream = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  // Refused before any socket is bound: --insecure on an address that is not loopback.
  const std::string command = testing::bin("fedda-coordinator").string() +
                              " serve --insecure --bind tcp://192.0.2.1:5570 --state " + (dir / "state").string();
  const auto journal = testing::run_command("(JOURNAL_STREAM=" + stream + " " + command + " 2>>" + out.string() + ")");
  EXPECT_EQ(journal.exit_code, 1);
  const auto text = testing::read_text(out);
  EXPECT_EQ(text.rfind("<3>[fedda-coordinator] --insecure binds loopback addresses only", 0), 0u) << text;
  EXPECT_EQ(text.find("[20"), std::string::npos) << text;  // no "[2026-..." timestamp

  const auto plain = testing::run_command("JOURNAL_STREAM=1:2 " + command);  // another stream: not the journal
  EXPECT_TRUE(std::regex_search(plain.output, std::regex("^\\[20[0-9-]+ [0-9:.]+\\] \\[error\\] \\[fedda-coordinator\\]")))
      << plain.output;
}

}  // namespace
}  // namespace fedda
