// The wire protocol: frames round-trip, and anything malformed, forged or oversized is an
// error, never a crash or an unbounded allocation.
#include "fedda/common/protocol.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>

namespace fedda::protocol {
namespace {

TensorSet sample_tensors() {
  TensorSet set;
  set.tensors.push_back(make_f32("conv.weight", {2, 3}, {1, 2, 3, 4, 5, 6}));
  set.tensors.push_back(make_f32("conv.bias", {2}, {-1, 0.5}));
  return set;
}

Header header_of(MessageType type) {
  Header h;
  h.type = type;
  h.sender = "amsterdam";
  h.job_id = "kd-utrecht";
  h.round = 3;
  h.sequence = 42;
  return h;
}

TEST(Protocol, RoundUpdateSurvivesTheWire) {
  RoundUpdate update;
  update.model = sample_tensors();
  update.samples = 480;
  update.steps = 32;
  update.loss = 0.25;
  update.epsilon = 2.75;  // version 6
  update.noise_multiplier = 1.1;
  update.metrics.push_back({"sub-01", 0.7, 4.5, 12.0, 0.6, std::nan("")});
  const auto frames = encode(header_of(MessageType::round_update), update);

  auto h = decode_header(frames.header, frames.body);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->type, MessageType::round_update);
  EXPECT_EQ(h->sender, "amsterdam");
  EXPECT_EQ(h->job_id, "kd-utrecht");
  EXPECT_EQ(h->round, 3);
  EXPECT_EQ(h->sequence, 42u);
  auto back = decode_body<RoundUpdate>(frames.body);
  ASSERT_TRUE(back) << back.error().message;
  ASSERT_EQ(back->model.tensors.size(), 2u);
  EXPECT_EQ(back->model.tensors[0].name, "conv.weight");
  EXPECT_EQ(back->model.tensors[0].shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(to_f32(back->model.tensors[0]), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_TRUE(check_integrity(back->model));
  EXPECT_EQ(back->samples, 480);
  EXPECT_DOUBLE_EQ(back->epsilon, 2.75);
  EXPECT_DOUBLE_EQ(back->noise_multiplier, 1.1);
  ASSERT_EQ(back->metrics.size(), 1u);
  EXPECT_EQ(back->metrics[0].subject, "sub-01");
  EXPECT_TRUE(std::isnan(back->metrics[0].f1));
}

TEST(Protocol, JobSpecSurvivesTheWireAndJson) {
  JobOffer offer;
  offer.job.id = "ada-1";
  offer.job.type = protocol::JobType::ada;
  offer.job.sites = {"utrecht", "singapore"};
  offer.job.subjects = {"s1"};
  offer.job.learning_rate = 3e-4;
  offer.teacher = sample_tensors();
  const auto frames = encode(header_of(MessageType::job_offer), offer);
  auto back = decode_body<JobOffer>(frames.body);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->job.sites, offer.job.sites);
  EXPECT_EQ(back->job.subjects, offer.job.subjects);
  EXPECT_DOUBLE_EQ(back->job.learning_rate, 3e-4);
  EXPECT_EQ(back->job.transfer_precision, TransferPrecision::float32);
  offer.job.transfer_precision = TransferPrecision::float16;
  EXPECT_EQ(decode_body<JobOffer>(encode(header_of(MessageType::job_offer), offer).body)->job.transfer_precision,
            TransferPrecision::float16);
  auto json = job_spec_from_json(to_json(offer.job));
  ASSERT_TRUE(json) << json.error().message;
  EXPECT_EQ(json->sites, offer.job.sites);
  EXPECT_EQ(json->transfer_precision, TransferPrecision::float16);
  EXPECT_FALSE(job_spec_from_json("{\"id\": 1}"));
  offer.job.dp = {1.5, 0, 8, 1e-6, 2};  // differential privacy (version 10): on the wire and in JSON
  const auto dp_wire = decode_body<JobOffer>(encode(header_of(MessageType::job_offer), offer).body)->job.dp;
  const auto dp_json = job_spec_from_json(to_json(offer.job))->dp;
  for (const auto& dp : {dp_wire, dp_json}) {
    EXPECT_DOUBLE_EQ(dp.clip_norm, 1.5);
    EXPECT_DOUBLE_EQ(dp.target_epsilon, 8);
    EXPECT_DOUBLE_EQ(dp.delta, 1e-6);
    EXPECT_EQ(dp.slices_per_subject, 2);
  }
  offer.job.dp = {};
  offer.job.secure_aggregation = true;
  offer.job.secagg_threshold = 3;
  offer.job.secagg_timeout_s = 12.5;
  for (const auto& spec : {decode_body<JobOffer>(encode(header_of(MessageType::job_offer), offer).body).value().job,
                           job_spec_from_json(to_json(offer.job)).value()}) {
    EXPECT_TRUE(spec.secure_aggregation);
    EXPECT_EQ(spec.secagg_threshold, 3);
    EXPECT_DOUBLE_EQ(spec.secagg_timeout_s, 12.5);
  }
  offer.job.recipe = R"({"preset":"nnunet","patch_size":64})";
  for (const auto& spec : {decode_body<JobOffer>(encode(header_of(MessageType::job_offer), offer).body).value().job,
                           job_spec_from_json(to_json(offer.job)).value()}) {
    EXPECT_EQ(spec.recipe, offer.job.recipe);
  }
}

TEST(Protocol, SecureAggregationsBodiesSurviveTheWire) {
  RoundUpdate update;
  update.samples = 7;
  update.masked = std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8);
  auto back = decode_body<RoundUpdate>(encode(header_of(MessageType::round_update), update).body);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->masked, update.masked);
  secagg::Roster roster;
  roster.keys.push_back({"utrecht", std::string(32, 'a'), std::string(32, 'b'), "sig", "manifest", "msig"});
  roster.threshold = 2;
  roster.graph_seed = 99;
  roster.weight_total = 250;
  auto r = decode_body<secagg::Roster>(encode(header_of(MessageType::secagg_roster), roster).body);
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->keys.size(), 1u);
  EXPECT_EQ(r->keys[0].mask_key, std::string(32, 'b'));
  EXPECT_EQ(r->keys[0].manifest_signature, "msig");
  EXPECT_EQ(r->graph_seed, 99u);
  EXPECT_DOUBLE_EQ(r->weight_total, 250);
  SecaggUnmask unmask;
  unmask.masked = {"utrecht", "amsterdam"};
  unmask.shares.push_back({"singapore", secagg::SecretKind::mask_key, 3, std::string(32, 'y')});
  auto u = decode_body<SecaggUnmask>(encode(header_of(MessageType::secagg_unmask), unmask).body);
  ASSERT_TRUE(u) << u.error().message;
  EXPECT_EQ(u->masked, unmask.masked);
  ASSERT_EQ(u->shares.size(), 1u);
  EXPECT_EQ(u->shares[0].kind, secagg::SecretKind::mask_key);
  EXPECT_EQ(u->shares[0].x, 3);
  EXPECT_EQ(u->shares[0].y, std::string(32, 'y'));
  auto relay = decode_body<secagg::ShareRelay>(
      encode(header_of(MessageType::secagg_relay), secagg::ShareRelay{{"utrecht"}, {{"utrecht", "amsterdam", "sealed"}}}).body);
  ASSERT_TRUE(relay) << relay.error().message;
  EXPECT_EQ(relay->shares.at(0).to, "amsterdam");
}

// Hello version 4 carries the site's machine (issue 30: `sites` shows it); a GPU's name is a
// protocol line: a newline in it is refused when read, and an honest sender's is repaired.
TEST(Protocol, AHelloCarriesTheSitesMachineAndAGpuNameIsHeldToTheLineRule) {
  Hello hello{"amsterdam", "1.0", "cuda", 16, 7,
              SiteResources{16, std::int64_t{64} << 30, std::int64_t{410} << 30, {"NVIDIA H200", "GPU#"}, "bfloat16"}};
  auto back = decode_body<Hello>(encode(header_of(MessageType::hello), hello).body);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->resources.cores, 16);
  EXPECT_EQ(back->resources.memory_bytes, std::int64_t{64} << 30);
  EXPECT_EQ(back->resources.cache_free_bytes, std::int64_t{410} << 30);
  EXPECT_EQ(back->resources.gpus, (std::vector<std::string>{"NVIDIA H200", "GPU#"}));
  EXPECT_EQ(back->resources.precision, "bfloat16");
  auto body = encode(header_of(MessageType::hello), hello).body;
  body.replace(body.find("GPU#"), 4, "GPU\n");
  auto forged = decode_body<Hello>(body);
  ASSERT_FALSE(forged);
  EXPECT_NE(forged.error().message.find("control character"), std::string::npos) << forged.error().message;
  hello.resources.gpus = {"GPU\nforged"};
  auto repaired = decode_body<Hello>(encode(header_of(MessageType::hello), hello).body);
  ASSERT_TRUE(repaired) << repaired.error().message;
  EXPECT_EQ(repaired->resources.gpus.at(0).find('\n'), std::string::npos) << repaired->resources.gpus.at(0);
}

TEST(Protocol, FlippedBodyByteIsRefusedByChecksum) {
  const auto frames = encode(header_of(MessageType::hello), Hello{"amsterdam", "0.1.0", "cpu"});
  auto body = frames.body;
  body[body.size() / 2] ^= 0x01;
  auto h = decode_header(frames.header, body);
  ASSERT_FALSE(h);
  EXPECT_NE(h.error().message.find("checksum"), std::string::npos) << h.error().message;
}

// A bool field's byte other than 0 or 1 (found by the protocol fuzzer: undefined behaviour when
// cereal loaded it into the bool) is refused as a malformed body.
TEST(Protocol, ABooleanByteOtherThanZeroOrOneIsRefused) {
  RoundTask off, on;
  on.evaluate = true;
  const auto a = encode(header_of(MessageType::round_task), off).body;
  auto b = encode(header_of(MessageType::round_task), on).body;
  ASSERT_EQ(a.size(), b.size());
  std::size_t differs = 0, at = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) {
      ++differs;
      at = i;
    }
  }
  ASSERT_EQ(differs, 1u);  // the flag's own byte
  ASSERT_EQ(static_cast<unsigned char>(b[at]), 1u);
  ASSERT_TRUE(decode_body<RoundTask>(b));
  EXPECT_TRUE(decode_body<RoundTask>(b)->evaluate);
  EXPECT_FALSE(decode_body<RoundTask>(a)->evaluate);
  b[at] = static_cast<char>(182);
  const auto bad = decode_body<RoundTask>(b);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("boolean"), std::string::npos) << bad.error().message;
}

TEST(Protocol, TensorChecksumCatchesEditedData) {
  auto set = sample_tensors();
  set.tensors[1].data[0] ^= 0x80;
  auto st = check_integrity(set);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("conv.bias"), std::string::npos);
}

TEST(Protocol, OversizedMessageIsRefused) {
  Goodbye big{std::string(4096, 'x')};
  const auto frames = encode(header_of(MessageType::goodbye), big);
  auto h = decode_header(frames.header, frames.body, 1024);
  ASSERT_FALSE(h);
  EXPECT_NE(h.error().message.find("exceeds"), std::string::npos);
}

TEST(Protocol, UnknownTypeAndVersionAreRefused) {
  auto h = header_of(MessageType::heartbeat);
  h.type = static_cast<MessageType>(99);
  auto frames = encode_empty(h);
  EXPECT_FALSE(decode_header(frames.header, frames.body));
  h = header_of(MessageType::heartbeat);
  frames = encode_empty(h);
  Header newer = h;
  newer.version = kVersion + 1;
  newer.body_crc32 = frames.body_crc32;
  auto r = decode_header(encode_header(newer), frames.body);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("version"), std::string::npos);
}

// A forged length (here: a string claiming 2^40 bytes) must fail on the bytes that are not
// there, not allocate what it claims.
TEST(Protocol, ForgedLengthsDoNotAllocate) {
  const auto frames = encode(header_of(MessageType::job_failed), JobFailed{"abc", {}, {}});
  std::string forged = frames.body;
  // The body is: cereal's class version (4 bytes), then the string's 8-byte length.
  const std::uint64_t huge = std::uint64_t{1} << 40;
  ASSERT_GE(forged.size(), 12u);
  std::memcpy(forged.data() + 4, &huge, 8);
  auto r = decode_body<JobFailed>(forged);
  ASSERT_FALSE(r);  // longer than a reason may be, before anything is allocated
  EXPECT_NE(r.error().message.find("(at most 65536)"), std::string::npos) << r.error().message;

  RoundUpdate update;
  update.model = sample_tensors();
  auto big = encode(header_of(MessageType::round_update), update).body;
  for (std::size_t offset = 0; offset + 8 <= big.size(); ++offset) {  // a forged size anywhere
    std::string copy = big;
    std::memcpy(copy.data() + offset, &huge, 8);
    (void)decode_body<RoundUpdate>(copy);  // must return, error or not
  }
}

// Header fields outside the checksum (sender, round, sequence) may be altered into another
// valid header; the security layer authenticates them. Every altered body is refused.
TEST(Protocol, RandomCorruptionNeverCrashesAndAlteredBodiesAreRefused) {
  RoundUpdate update;
  update.model = sample_tensors();
  update.metrics.push_back({"s", 1, 2, 3, 4, 5});
  const auto frames = encode(header_of(MessageType::round_update), update);
  std::mt19937 rng(7);
  int altered_bodies = 0, refused_headers = 0, passed = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string header = frames.header, body = frames.body;
    std::string& target = (i % 3 == 0) ? header : body;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) target[rng() % target.size()] = static_cast<char>(rng());
    if (i % 7 == 0) target.resize(rng() % (target.size() + 1));
    auto h = decode_header(header, body);
    if (body != frames.body) {
      ++altered_bodies;
      EXPECT_FALSE(h) << "an altered body passed at iteration " << i;
    } else if (!h) {
      ++refused_headers;
    }
    if (h) {
      // What passes is the body as sent, and it reads back as the update that was sent: encoded
      // again, the same bytes.
      auto back = decode_body<RoundUpdate>(body);
      ASSERT_TRUE(back) << "a body the header admitted did not decode at iteration " << i << ": " << back.error().message;
      EXPECT_EQ(encode(header_of(MessageType::round_update), *back).body, frames.body) << "iteration " << i;
      ++passed;
    }
  }
  EXPECT_GT(altered_bodies, 1500);
  EXPECT_GT(refused_headers, 100);  // most corrupted headers are refused (a flipped padding byte may not be)
  EXPECT_LT(passed, 1000);
}

TEST(RunningAverage, IsSampleWeighted) {
  TensorSet a, b;
  a.tensors.push_back(make_f32("w", {2}, {1, 2}));
  b.tensors.push_back(make_f32("w", {2}, {4, 8}));
  RunningAverage avg(a);
  ASSERT_TRUE(avg.add(a, 1));
  ASSERT_TRUE(avg.add(b, 2));
  auto mean = avg.average();
  ASSERT_TRUE(mean);
  EXPECT_EQ(to_f32(mean->tensors[0]), (std::vector<float>{3, 6}));
  EXPECT_TRUE(check_integrity(*mean));
  EXPECT_EQ(avg.count(), 2);
}

TEST(HalfPrecision, EveryFloat16SurvivesTheRoundTripAndFloatsRoundToNearestEven) {
  // All 65536 bit patterns: float16 -> float32 -> float16 is exact (NaNs stay NaN).
  WireTensor all;
  all.name = "all";
  all.dtype = DType::f16;
  all.shape = {65536};
  all.data.resize(2 * 65536);
  for (std::uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<std::uint16_t>(i);
    std::memcpy(all.data.data() + 2 * i, &h, 2);
  }
  TensorSet set;
  set.tensors.push_back(all);
  seal(set);
  const auto full = to_full(set);
  ASSERT_EQ(full.tensors[0].dtype, DType::f32);
  EXPECT_TRUE(check_integrity(full));
  const auto back = to_half(full);
  EXPECT_TRUE(check_integrity(back));
  const auto values = to_f32(full.tensors[0]);
  for (std::uint32_t i = 0; i < 65536; ++i) {
    std::uint16_t h;
    std::memcpy(&h, back.tensors[0].data.data() + 2 * i, 2);
    if (std::isnan(values[i])) {
      EXPECT_EQ(h & 0x7c00, 0x7c00);
      EXPECT_NE(h & 0x3ff, 0);
    } else {
      ASSERT_EQ(h, i) << "float16 0x" << std::hex << i;
    }
  }
  // Rounding of values between float16s, ties to even; the range's ends.
  const std::vector<std::pair<float, std::uint16_t>> cases = {
      {0.1f, 0x2e66},       {1.0f / 3, 0x3555},   {1.0f + 1.0f / 2048, 0x3c00},  // tie: down to even
      {1.0f + 3.0f / 2048, 0x3c02},               {65504.0f, 0x7bff},            // tie: up to even
      {65519.0f, 0x7bff},   {65520.0f, 0x7c00},   {1e9f, 0x7c00},  {-2.0f, 0xc000},
      {std::ldexp(1.0f, -24), 0x0001},            {std::ldexp(1.0f, -25), 0x0000},  // tie: down to 0
      {std::ldexp(3.0f, -25), 0x0002},            {std::ldexp(1.0f, -14), 0x0400}};
  TensorSet probes;
  std::vector<float> inputs;
  for (const auto& c : cases) inputs.push_back(c.first);
  probes.tensors.push_back(make_f32("p", {static_cast<std::int64_t>(inputs.size())}, inputs));
  const auto halves = to_half(probes);
  for (std::size_t i = 0; i < cases.size(); ++i) {
    std::uint16_t h;
    std::memcpy(&h, halves.tensors[0].data.data() + 2 * i, 2);
    EXPECT_EQ(h, cases[i].second) << "float " << cases[i].first;
  }
}

TEST(HalfPrecision, AnUpdateAtHalfPrecisionAveragesAsItsFloat32Twin) {
  TensorSet a, b;
  a.tensors.push_back(make_f32("w", {3}, {0.5f, -1.25f, 3.0f}));
  b.tensors.push_back(make_f32("w", {3}, {1.5f, 0.25f, 0.1f}));
  WireTensor counter{"steps", DType::i64, {1}, std::vector<std::uint8_t>(8, 0), 0};
  counter.data[0] = 7;
  a.tensors.push_back(counter);
  b.tensors.push_back(counter);
  seal(a);
  seal(b);
  RunningAverage exact(a), mixed(a);
  ASSERT_TRUE(exact.add(a, 1));
  ASSERT_TRUE(exact.add(b, 3));
  ASSERT_TRUE(mixed.add(a, 1));
  const auto half_b = to_half(b);
  EXPECT_EQ(half_b.tensors[0].dtype, DType::f16);
  EXPECT_EQ(half_b.tensors[1].dtype, DType::i64);  // integers cross unchanged
  EXPECT_EQ(half_b.bytes(), b.bytes() - 6);
  ASSERT_TRUE(mixed.add(half_b, 3));
  const auto e = to_f32(exact.average()->tensors[0]), m = to_f32(mixed.average()->tensors[0]);
  for (std::size_t i = 0; i < e.size(); ++i) EXPECT_NEAR(m[i], e[i], 1e-3) << i;  // 0.1 is not a float16
  EXPECT_EQ(mixed.average()->tensors[0].dtype, DType::f32);
  // A half-precision set that is damaged or of another shape is still refused.
  auto damaged = half_b;
  damaged.tensors[0].data[0] ^= 1;
  EXPECT_FALSE(mixed.add(damaged, 1));
  auto reshaped = half_b;
  reshaped.tensors[0].shape = {1, 3};
  EXPECT_FALSE(mixed.add(reshaped, 1));
  EXPECT_EQ(mixed.count(), 2);
}

TEST(RunningAverage, RefusesAnotherLayoutAndAddsNothing) {
  TensorSet a, wrong_shape, extra;
  a.tensors.push_back(make_f32("w", {2}, {1, 2}));
  wrong_shape.tensors.push_back(make_f32("w", {1, 2}, {1, 2}));
  extra = a;
  extra.tensors.push_back(make_f32("x", {1}, {1}));
  RunningAverage avg(a);
  EXPECT_FALSE(avg.add(wrong_shape, 1));
  EXPECT_FALSE(avg.add(extra, 1));
  EXPECT_FALSE(avg.add(a, 0));
  EXPECT_EQ(avg.count(), 0);
  EXPECT_FALSE(avg.average());
}

// Regression (hostile-peer review, fault 1): an update whose first tensor declared
// [2^20, 2^20] with no data made check_finite allocate 4 TiB from the shape. A shape is checked
// against the bytes that are there (and against the job's layout) before any value is read.
TEST(Tensors, AForgedShapeIsRefusedBeforeAnythingIsAllocated) {
  TensorSet forged = sample_tensors();
  forged.tensors.front().shape = {std::int64_t{1} << 20, std::int64_t{1} << 20};
  forged.tensors.front().data.clear();
  seal(forged);
  EXPECT_TRUE(to_f32(forged.tensors.front()).empty());
  auto finite = check_finite(forged);
  ASSERT_FALSE(finite);
  EXPECT_NE(finite.error().message.find("0 bytes for 1099511627776 float32 elements"), std::string::npos) << finite.error().message;
  auto matches = check_matches(forged, sample_tensors());
  ASSERT_FALSE(matches);
  EXPECT_NE(matches.error().message.find("'conv.weight' has shape [1048576,1048576], expected [2,3]"), std::string::npos)
      << matches.error().message;
  EXPECT_TRUE(check_matches(to_half(sample_tensors()), sample_tensors())) << "a half-precision update matches its layout";
  TensorSet extra = sample_tensors();
  extra.tensors.push_back(make_f32("x", {1}, {1}));
  EXPECT_FALSE(check_matches(extra, sample_tensors()));
  EXPECT_TRUE(std::isinf(l2_distance(forged, sample_tensors())));
}

// Regression (faults 2-4): strings that are not UTF-8 reached JSON dumps that threw, and ended
// the coordinator. Every text field is held to UTF-8 and its kind's length when decoded; ids and
// lines hold no control character; bytes fields (masked vectors, keys, files) are not text.
TEST(Protocol, TextThatIsNotUtf8OrTooLongOrForgesALineIsRefusedWhenDecoded) {
  const auto body_with = [](const std::string& marker, const std::string& with, auto message) {
    auto body = encode(header_of(MessageType::hello), message).body;
    const auto at = body.find(marker);
    EXPECT_NE(at, std::string::npos);
    body.replace(at, marker.size(), with);
    return body;
  };
  auto device = decode_body<Hello>(body_with("cpu#", "cpu\xff", Hello{"utrecht", "1.0", "cpu#", 2}));
  ASSERT_FALSE(device);
  EXPECT_NE(device.error().message.find("one-line text that is not valid UTF-8"), std::string::npos) << device.error().message;
  auto newline = decode_body<Hello>(body_with("cpu#", "cpu\n", Hello{"utrecht", "1.0", "cpu#", 2}));
  ASSERT_FALSE(newline);
  EXPECT_NE(newline.error().message.find("control character"), std::string::npos) << newline.error().message;
  RoundUpdate u;
  u.precision = "float32#";
  auto precision = decode_body<RoundUpdate>(body_with("float32#", "float32\xff", u));
  EXPECT_FALSE(precision);
  AdminRequest r;
  r.command = "status";
  r.target = "job#";
  EXPECT_FALSE(decode_body<AdminRequest>(body_with("job#", "job\xff", r)));
  auto long_device = decode_body<Hello>(encode(header_of(MessageType::hello), Hello{"utrecht", "1.0", std::string(4 << 20, 'x'), 2}).body);
  ASSERT_TRUE(long_device) << "the sender cuts a line to its length";
  EXPECT_EQ(long_device->device.size(), max_text_bytes(TextKind::line));
  // A reason may span lines; a subject id may not.
  JobFailed failed{"line one\nline two", {}, {}};
  EXPECT_EQ(decode_body<JobFailed>(encode(header_of(MessageType::job_failed), failed).body).value().reason, failed.reason);
  RoundUpdate rows;
  rows.metrics.push_back({"s-1\nforged", 0.5, 1, 2, 0.5, 0.5});
  EXPECT_FALSE(decode_body<RoundUpdate>(encode(header_of(MessageType::round_update), rows).body));
  // An honest sender's reason that is not UTF-8 (a Latin-1 file name) is repaired, not lost.
  JobFailed latin1{"cannot read M\xfcller.nii", {}, {}};
  auto repaired = decode_body<JobFailed>(encode(header_of(MessageType::job_failed), latin1).body);
  ASSERT_TRUE(repaired) << repaired.error().message;
  EXPECT_EQ(repaired->reason, "cannot read M\\xfcller.nii");
  // A header's sender is an id too.
  Header h = header_of(MessageType::heartbeat);
  h.sender = "amsterdam\xff";
  const auto frames = encode_empty(h);
  EXPECT_FALSE(decode_header(frames.header, frames.body));
}

TEST(Protocol, ANewerMessageVersionIsRefusedNotMisread) {
  auto frames = encode(header_of(MessageType::goodbye), Goodbye{"bye"});
  ASSERT_TRUE(decode_body<Goodbye>(frames.body));
  auto newer = frames.body;
  newer[0] = 99;  // the body opens with the struct's version (little-endian uint32)
  auto back = decode_body<Goodbye>(newer);
  ASSERT_FALSE(back);
  EXPECT_NE(back.error().message.find("newer version"), std::string::npos) << back.error().message;
}

TEST(Protocol, JobTypesTravelAsTheirNamesAndAnUnknownOneIsRefused) {
  JobOffer offer;
  offer.job.id = "j";
  offer.job.type = JobType::evaluate;
  auto frames = encode(header_of(MessageType::job_offer), offer);
  EXPECT_NE(frames.body.find("evaluate"), std::string::npos);
  EXPECT_EQ(decode_body<JobOffer>(frames.body)->job.type, JobType::evaluate);
  auto body = frames.body;
  body.replace(body.find("evaluate"), 8, "evaluat3");
  auto back = decode_body<JobOffer>(body);
  ASSERT_FALSE(back);
  EXPECT_NE(back.error().message.find("evaluat3"), std::string::npos) << back.error().message;
  EXPECT_FALSE(parse_job_type("train"));
  EXPECT_EQ(parse_job_type("kd").value(), JobType::kd);
}

TEST(Protocol, ResultRowsAreQuotedSoAWireSubjectCannotAddARowOrAColumn) {
  ResultRow plain{"utrecht", "amsterdam", 1, "kd", "federated", "s-101", 0.5, 3.25, 12, 0.75, 0.6};
  ResultRow hostile = plain;
  hostile.subject = "x,\"y\"\nutrecht,amsterdam,0,kd,federated,forged,1,0,0,1,1";
  hostile.dsc = std::nan("");
  const std::string csv = std::string(kResultsCsvHeader) + "\n" + csv_line(plain) + csv_line(hostile);
  auto rows = parse_results_csv(csv);
  ASSERT_TRUE(rows) << rows.error().message;
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].subject, "s-101");
  EXPECT_DOUBLE_EQ((*rows)[0].h95, 3.25);
  EXPECT_EQ((*rows)[1].subject, hostile.subject);
  EXPECT_TRUE(std::isnan((*rows)[1].dsc));  // undefined: an empty cell
  EXPECT_EQ(csv_line(plain), "utrecht,amsterdam,1,kd,federated,s-101,0.5,3.25,12,0.75,0.6\n");
  EXPECT_FALSE(parse_results_csv(std::string(kResultsCsvHeader) + "\na,b,0,kd\n"));
}

TEST(Protocol, AdminRequestAndReplySurviveTheWire) {
  AdminRequest request;
  request.command = "submit";
  request.job_yaml = "id: kd-1\ntype: kd\n";
  request.files = {{"teacher.pt", std::string(1000, '\x07')}};
  auto h = header_of(MessageType::admin_request);
  const auto frames = encode(h, request);
  ASSERT_TRUE(decode_header(frames.header, frames.body));
  auto back = decode_body<AdminRequest>(frames.body);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->job_yaml, request.job_yaml);
  ASSERT_EQ(back->files.size(), 1u);
  EXPECT_EQ(back->files[0].bytes, request.files[0].bytes);
  AdminReply reply;
  reply.ok = true;
  reply.json = "[]";
  reply.notice = "insecure";
  auto again = decode_body<AdminReply>(encode(header_of(MessageType::admin_reply), reply).body);
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->ok);
  EXPECT_EQ(again->notice, "insecure");
}

// Regression (found by the coordinator fuzzer under ASan, a heap use-after-free): cereal keeps
// one registry of class versions per process, and without CEREAL_THREAD_SAFE two threads that
// encode at once (an agent's worker thread and its network loop do) race on it. The race itself
// shows only under a sanitizer and only on a type's first use; this pins the setting and encodes
// from eight threads at once.
static_assert(CEREAL_THREAD_SAFE == 1, "protocol.h must turn on cereal's lock before including cereal");
TEST(Protocol, MessagesEncodeFromManyThreadsAtOnce) {
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&good, t] {
      for (int i = 0; i < 200; ++i) {
        JobFailed failed;
        failed.reason = "thread " + std::to_string(t);
        const auto a = encode(header_of(MessageType::job_failed), failed);
        const auto b = encode(header_of(MessageType::heartbeat), Goodbye{"x"});
        const auto back = decode_body<JobFailed>(a.body);
        if (back && back->reason == failed.reason && decode_header(b.header, b.body)) ++good;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(good.load(), 8 * 200);
}

TEST(Protocol, ParametersNotBuffersIsOneFilter) {
  TensorSet set = sample_tensors();
  set.tensors.push_back(make_f32("bn.running_mean", {2}, {0, 0}));
  set.tensors.push_back(make_f32("bn.num_batches_tracked", {1}, {0}));
  const auto params = parameters_only(set);
  ASSERT_EQ(params.tensors.size(), 2u);
  EXPECT_EQ(params.tensors[0].name, "conv.weight");
  EXPECT_FALSE(is_parameter("bn.running_var"));
  EXPECT_TRUE(is_parameter("bn.weight"));
}

}  // namespace
}  // namespace fedda::protocol
