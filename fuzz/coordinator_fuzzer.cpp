// libFuzzer target: the coordinator's message handlers, coverage-guided. One coordinator runs
// in this process (its own thread, the real Service on loopback, --insecure) with a job open;
// two honest fake sites train it. Each input is the sequence of choices of a PeerFuzzer
// (tests/support/peer_fuzzer.h): four hostile peers that say hello, answer offers, tasks and
// upload credit, and send mutated messages of every kind (hello, job_ready, job_failed,
// job_pending, updates with forged shapes, dtypes, counts and strings, secure-aggregation
// stages, goodbyes, unknown types, cut or flipped bytes, forged headers) and operator requests
// on the admin endpoint. The coordinator's code is built with ASan, UBSan and libFuzzer's
// coverage (scripts/fuzz.sh), so a memory error, undefined behaviour or a leak is a finding, and
// so is each of these, which aborts:
//   - the coordinator's run() returns or throws (one message ended the service);
//   - an operator's request is not answered within 20 s (the service hangs);
//   - the honest sites' job finishes no round for 60 s (the honest path stopped working);
//   - the service loop caught an exception from a handler (logged "whose handling failed").
// Memory stays bounded: libFuzzer's -rss_limit_mb (2048 in scripts/fuzz.sh) ends the run
// beyond it.
#include <unistd.h>

#include <cerrno>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include <fuzzer/FuzzedDataProvider.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "fedda/common/log.h"
#include "fedda/common/protocol.h"
#include "fedda/coordinator/service.h"
#include "support/fake_sites.h"
#include "support/peer_fuzzer.h"

namespace fs = std::filesystem;
using namespace fedda;
using Clock = std::chrono::steady_clock;

namespace {

// Counts the service loop's caught handler exceptions (a sink of the coordinator's logger,
// beside its stderr). The log runs at warn: what hostile peers cause, within their budgets.
std::atomic<long> caught_failures{0};
class CountingSink : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    const std::string_view text(msg.payload.data(), msg.payload.size());
    if (text.find("whose handling failed") != std::string_view::npos) ++caught_failures;
  }
  void flush_() override {}
};

struct World {
  fs::path state;
  std::shared_ptr<CountingSink> sink = std::make_shared<CountingSink>();
  std::unique_ptr<coordinator::Service> service;
  std::thread serving;
  std::unique_ptr<testing::FakeSites> honest;
  std::unique_ptr<testing::PeerFuzzer> fuzzer;
  zmq::context_t context;
  zmq::socket_t probe{context, zmq::socket_type::dealer};
  std::uint64_t probe_sequence = 0;
  std::size_t rounds_seen = 0;
  Clock::time_point last_round = Clock::now();
  std::atomic<bool> exiting{false};
};
World* world = nullptr;


[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "coordinator_fuzzer: FINDING: %s\n", what.c_str());
  std::abort();
}

std::size_t finished_rounds() {
  std::ifstream in(world->state / "jobs" / "open" / "rounds.jsonl");
  std::size_t n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

// An operator's `jobs`, answered within 20 s, or a finding.
void probe_admin() {
  protocol::AdminRequest request;
  request.command = "jobs";
  protocol::Header h;
  h.type = protocol::MessageType::admin_request;
  h.sender = "probe";
  h.sequence = ++world->probe_sequence;
  auto frames = protocol::encode(h, request);
  h.body_bytes = frames.body.size();
  h.body_crc32 = frames.body_crc32;
  const auto header = protocol::encode_header(h);
  world->probe.send(zmq::buffer(header), zmq::send_flags::sndmore);
  world->probe.send(zmq::buffer(frames.body));
  const auto until = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < until) {
    zmq::pollitem_t item{world->probe.handle(), 0, ZMQ_POLLIN, 0};
    try {
      zmq::poll(&item, 1, std::chrono::milliseconds(100));
    } catch (const zmq::error_t& e) {  // EINTR: libFuzzer's timer (-timeout) signals this thread
      if (e.num() != EINTR) throw;
      continue;
    }
    if (!(item.revents & ZMQ_POLLIN)) continue;
    std::vector<zmq::message_t> parts;
    if (!zmq::recv_multipart(world->probe, std::back_inserter(parts), zmq::recv_flags::dontwait)) continue;
    if (parts.size() != 2) continue;
    const auto reply_header = protocol::decode_header(parts[0].to_string(), parts[1].to_string());
    if (reply_header && reply_header->sequence == world->probe_sequence) return;
  }
  finding("an operator's request was not answered within 20 s");
}

std::string read_line(const fs::path& file, int n) {
  std::ifstream in(file);
  std::string line;
  for (int i = 0; i <= n && std::getline(in, line);) ++i;
  return line;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  world = new World;
  char pattern[] = "/tmp/fedda-coordinator-fuzz-XXXXXX";
  if (!::mkdtemp(pattern)) finding("no temporary directory");
  const fs::path dir = pattern;
  world->state = dir / "state";
  if (auto st = log::set_level("warn"); !st) finding(st.error().message);
  const auto job = dir / "open.yaml";
  std::ofstream(job) << "id: open\ntype: teacher\nsource: site0\nsites: [site0, site1, fuzz0, fuzz1]\nrounds: 100000\n"
                     << "local_steps: 1\nmin_sites: 2\nevaluate: false\nround_deadline_s: 2\nmax_sample_share: 0.9\n"
                     << "model: {width: 4, depth: 2, grid_size: 32, grid_spacing: 6}\n";
  coordinator::ServiceOptions options;
  options.bind = "tcp://127.0.0.1:0";
  options.admin_bind = "tcp://127.0.0.1:0";
  options.state = world->state;
  options.insecure = true;
  options.heartbeat = std::chrono::milliseconds(200);
  options.drain_timeout = std::chrono::seconds(5);
  auto started = coordinator::Service::start(options);
  if (!started) finding("the coordinator did not start: " + started.error().message);
  world->service = std::move(*started);
  log::get("coordinator")->sinks().push_back(world->sink);  // before the service's thread starts
  if (auto queued = world->service->enqueue({job}); !queued) finding("the job was not queued: " + queued.error().message);
  world->serving = std::thread([] {
    try {
      const int rc = world->service->run();
      if (!world->exiting) finding("the coordinator's run() returned " + std::to_string(rc));
    } catch (const std::exception& e) {
      finding(std::string("the coordinator's run() threw: ") + e.what());
    }
  });
  const auto endpoint = world->service->endpoint(), admin = world->service->admin_endpoint();
  world->honest = std::make_unique<testing::FakeSites>(endpoint, 2, "site", std::chrono::milliseconds(200));
  world->probe.set(zmq::sockopt::linger, 0);
  world->probe.connect(admin);
  world->fuzzer = std::make_unique<testing::PeerFuzzer>(endpoint, admin, 4, "open", std::uint64_t{20261203});
  world->fuzzer->start();
  // libFuzzer exits after -max_total_time or -runs: the service and the fake sites stop first
  // (static destructors, cereal's registry among them, run after this), then what the peers got to.
  std::atexit([] {
    world->exiting = true;
    world->service->stop();
    world->serving.join();
    world->honest.reset();
    const auto& f = world->fuzzer->figures();
    std::fprintf(stderr, "coordinator_fuzzer: %lld messages (%.1f MiB), %lld forged updates on upload credit, %lld operator "
                 "requests; the honest job finished %zu rounds\n", static_cast<long long>(f.messages), f.bytes / 1048576.0,
                 static_cast<long long>(f.updates), static_cast<long long>(f.admin_requests), finished_rounds());
  });
  const auto until = Clock::now() + std::chrono::seconds(60);
  while (finished_rounds() < 1) {
    if (Clock::now() > until) finding("the honest sites' job finished no round in the first 60 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::fprintf(stderr, "coordinator_fuzzer: coordinator on %s, job open running (%s)\n", endpoint.c_str(),
               read_line(world->state / "jobs" / "open" / "rounds.jsonl", 0).substr(0, 120).c_str());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider input(data, size);
  world->fuzzer->draw_from([&input] { return std::uint64_t{input.ConsumeIntegral<std::uint16_t>()}; });
  for (int steps = 0; steps < 32 && input.remaining_bytes() > 0; ++steps) world->fuzzer->step();
  world->fuzzer->draw_from([] { return std::uint64_t{0}; });  // `input` ends here
  probe_admin();
  if (caught_failures > 0) finding("a handler threw (the service loop caught it)");
  const auto rounds = finished_rounds();
  if (rounds > world->rounds_seen) {
    world->rounds_seen = rounds;
    world->last_round = Clock::now();
  } else if (Clock::now() - world->last_round > std::chrono::seconds(60)) {
    finding("the honest sites' job finished no round for 60 s (" + std::to_string(rounds) + " so far)");
  }
  return 0;
}
