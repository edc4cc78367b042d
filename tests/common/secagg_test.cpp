// Secure aggregation's core, sites and coordinator in one process: the unmasked sum is FedAvg's,
// what the coordinator sees of one site is noise, drop-outs are recovered or left out cleanly,
// too few survivors reveal nothing, and substituted keys are caught.
#include "fedda/common/secagg.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <set>

#include "fedda/common/crypto.h"

namespace fedda {
namespace {

using namespace fedda::secagg;

std::string hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::string unhex(const std::string& text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); i += 2) out += static_cast<char>(std::stoi(text.substr(i, 2), nullptr, 16));
  return out;
}

TEST(SecaggCrypto, HkdfMatchesRfc5869TestCase1AndX25519Agrees) {
  auto okm = crypto::hkdf_sha256(std::string(22, '\x0b'), unhex("000102030405060708090a0b0c"), unhex("f0f1f2f3f4f5f6f7f8f9"), 42);
  ASSERT_TRUE(okm) << okm.error().message;
  EXPECT_EQ(hex(*okm), "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
  // RFC 7748 section 6.1: Alice's and Bob's keys and their shared secret.
  const auto alice = unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  const auto bob_public = unhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
  auto shared = crypto::x25519(alice, bob_public);
  ASSERT_TRUE(shared) << shared.error().message;
  EXPECT_EQ(hex(*shared), "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  auto a = crypto::generate_x25519().value();
  auto b = crypto::generate_x25519().value();
  EXPECT_EQ(crypto::x25519(a.secret_raw, b.public_raw).value(), crypto::x25519(b.secret_raw, a.public_raw).value());
  EXPECT_FALSE(crypto::x25519(a.secret_raw, std::string(32, '\0')));  // a low-order point
  EXPECT_FALSE(crypto::x25519(a.secret_raw, "short"));
}

TEST(SecaggCrypto, AesCtrStreamIsTheSeedsAndOnlyItsAndOfAnyLength) {
  const std::string seed(32, 's'), other(32, 't');
  std::vector<unsigned char> a(100003), b(100003), c(100003), head(17);
  ASSERT_TRUE(crypto::aes256_ctr_stream(seed, a.data(), a.size()));
  ASSERT_TRUE(crypto::aes256_ctr_stream(seed, b.data(), b.size()));
  ASSERT_TRUE(crypto::aes256_ctr_stream(other, c.data(), c.size()));
  ASSERT_TRUE(crypto::aes256_ctr_stream(seed, head.data(), head.size()));
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_TRUE(std::equal(head.begin(), head.end(), a.begin()));
  EXPECT_FALSE(crypto::aes256_ctr_stream("short key", a.data(), 16));
}

TEST(SecaggShamir, AnyThresholdSharesGiveTheSecretFewerDoNot) {
  const std::string secret = crypto::random_bytes(32).value();
  auto shares = split(secret, 7, 4);
  ASSERT_TRUE(shares) << shares.error().message;
  ASSERT_EQ(shares->size(), 7u);
  EXPECT_EQ(combine({(*shares)[0], (*shares)[2], (*shares)[5], (*shares)[6]}).value(), secret);
  EXPECT_EQ(combine({(*shares)[6], (*shares)[1], (*shares)[3], (*shares)[4]}).value(), secret);
  EXPECT_NE(combine({(*shares)[0], (*shares)[2], (*shares)[5]}).value(), secret);
  // Two splits of one secret share nothing: the coefficients are fresh (a CSPRNG, not random()).
  auto again = split(secret, 7, 4).value();
  EXPECT_NE(again[0].y, (*shares)[0].y);
  EXPECT_FALSE(split(secret, 7, 8));
  EXPECT_FALSE(split(secret, 256, 3));
  EXPECT_FALSE(combine({(*shares)[0], (*shares)[0]}));
}

TEST(SecaggGraph, AllPairsWhenSmallARegularSymmetricGraphWhenLarge) {
  std::vector<std::string> few = {"c", "a", "b"};
  auto g = neighbour_graph(few, {});
  EXPECT_EQ(g["a"], (std::vector<std::string>{"b", "c"}));
  std::vector<std::string> many;
  for (int i = 0; i < 100; ++i) many.push_back("site" + std::to_string(i));
  auto big = neighbour_graph(many, GraphOptions{0, 16, 42});
  ASSERT_EQ(big.size(), 100u);
  for (const auto& [site, list] : big) {
    EXPECT_EQ(list.size(), 14u) << site;  // 2 * ceil(log2 100)
    for (const auto& v : list) {
      const auto& back = big[v];
      EXPECT_TRUE(std::binary_search(back.begin(), back.end(), site)) << site << " - " << v;
    }
  }
  EXPECT_EQ(neighbour_graph(many, GraphOptions{0, 16, 42}), big);  // same seed, same graph
  EXPECT_NE(neighbour_graph(many, GraphOptions{0, 16, 43}), big);
}

// ---- the protocol ---------------------------------------------------------------------------

TensorSet random_set(std::mt19937& random, std::size_t elements, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> a(elements), b(elements / 3 + 1);
  for (auto& v : a) v = normal(random);
  for (auto& v : b) v = normal(random);
  TensorSet set;
  set.tensors.push_back(make_f32("conv.weight", {static_cast<std::int64_t>(a.size())}, a));
  set.tensors.push_back(make_f32("conv.bias", {static_cast<std::int64_t>(b.size())}, b));
  WireTensor counter;
  counter.name = "bn.num_batches_tracked";
  counter.dtype = DType::i64;
  counter.shape = {1};
  const std::int64_t batches = 1000 + static_cast<std::int64_t>(random() % 100);
  counter.data.resize(8);
  std::memcpy(counter.data.data(), &batches, 8);
  set.tensors.push_back(counter);
  seal(set);
  return set;
}

struct Site {
  std::string id;
  double weight = 0;
  TensorSet model, grads;
  std::unique_ptr<Client> client;
};

// Where a site stops answering: before its keys, after its keys, after its shares, after its
// masked update (it does not answer the unmask request).
enum class Drop { never, before_keys, after_keys, after_shares, after_masked };

struct Round {
  std::vector<Site> sites;
  std::map<std::string, Drop> drops;
  std::map<std::string, std::vector<std::uint64_t>> seen;  // what the coordinator received from each site
  int threshold = 0;
  GraphOptions graph{};
  Signer signer;
  Verifier verifier;
  std::function<void(Roster&)> tamper;
  std::function<void(Aggregator&)> before_reveal;
  std::map<std::string, std::vector<RevealedShare>> revealed;  // what each survivor revealed
  // The fewest sites whose sum the coordinator opens (a dishonest one may open fewer than its
  // sites help open), and the job's sites as the sites prepared it (default: every site here).
  int coordinator_minimum = 0;
  std::vector<std::string> job_sites;

  Round(int n, std::size_t elements, std::uint32_t seed = 5) : coordinator_minimum(minimum_sum(static_cast<std::size_t>(n))) {
    std::mt19937 random(seed);
    for (int i = 0; i < n; ++i) {
      Site s;
      s.id = "site" + std::to_string(i < 10 ? 0 : 1) + std::to_string(i);
      s.weight = 50 + static_cast<double>(random() % 200);
      s.model = random_set(random, elements, 1.0f);
      s.grads = random_set(random, elements / 4 + 1, 0.01f);
      job_sites.push_back(s.id);
      sites.push_back(std::move(s));
    }
  }
  Drop drop(const std::string& id) const {
    auto it = drops.find(id);
    return it == drops.end() ? Drop::never : it->second;
  }

  // Runs the four stages; the average of the sites the sum covers, or the first error.
  Result<std::vector<TensorSet>> run() {
    const std::string context = "job-x|3";
    Aggregator aggregator(context, {&sites[0].model, &sites[0].grads}, coordinator_minimum);
    std::map<std::string, double> weights;
    for (auto& s : sites) {
      s.client = std::make_unique<Client>(s.id, context, job_sites, signer, verifier);
      weights[s.id] = s.weight;
      if (drop(s.id) == Drop::before_keys) continue;
      auto keys = s.client->advertise();
      if (!keys) return keys.error();
      if (auto st = aggregator.add_keys(*keys); !st) return st.error();
    }
    auto roster = aggregator.roster(weights, threshold, graph);
    if (!roster) return roster.error();
    if (tamper) tamper(*roster);
    for (auto& s : sites) {
      if (!aggregator.keyed().count(s.id) || drop(s.id) == Drop::after_keys) continue;
      auto shares = s.client->share(*roster);
      if (!shares) return shares.error();
      if (auto st = aggregator.add_shares(s.id, *shares); !st) return st.error();
    }
    auto relays = aggregator.relays();
    if (!relays) return relays.error();
    for (auto& s : sites) {
      if (!relays->count(s.id) || drop(s.id) == Drop::after_shares) continue;
      auto masked = s.client->mask(relays->at(s.id), {&s.model, &s.grads}, s.weight);
      if (!masked) return masked.error();
      seen[s.id] = *masked;
      if (auto st = aggregator.add_masked(s.id, *masked); !st) return st.error();
    }
    auto survivors = aggregator.survivors();
    if (!survivors) return survivors.error();
    if (before_reveal) before_reveal(aggregator);
    for (auto& s : sites) {
      if (!aggregator.masked().count(s.id) || drop(s.id) == Drop::after_masked) continue;
      auto revealed = s.client->unmask(*survivors);
      if (!revealed) return revealed.error();
      this->revealed[s.id] = *revealed;
      if (auto st = aggregator.add_revealed(s.id, *revealed); !st) return st.error();
    }
    return aggregator.finish();
  }

  // FedAvg in double precision over the sites whose update is in the sum.
  std::vector<TensorSet> expected() const {
    RunningAverage model(sites[0].model), grads(sites[0].grads);
    for (const auto& s : sites) {
      const auto d = drop(s.id);
      if (d == Drop::never || d == Drop::after_masked) {
        EXPECT_TRUE(model.add(s.model, s.weight));
        EXPECT_TRUE(grads.add(s.grads, s.weight));
      }
    }
    return {model.average().value(), grads.average().value()};
  }
};

double max_difference(const std::vector<TensorSet>& a, const std::vector<TensorSet>& b) {
  double worst = 0;
  EXPECT_EQ(a.size(), b.size());
  for (std::size_t s = 0; s < a.size(); ++s) {
    for (std::size_t t = 0; t < a[s].tensors.size(); ++t) {
      const auto& x = a[s].tensors[t];
      const auto& y = b[s].tensors[t];
      EXPECT_EQ(x.name, y.name);
      EXPECT_EQ(x.dtype, y.dtype);
      if (x.dtype == DType::i64) {
        EXPECT_EQ(x.data, y.data) << x.name;
        continue;
      }
      const auto u = to_f32(x), v = to_f32(y);
      for (std::size_t i = 0; i < u.size(); ++i) worst = std::max(worst, static_cast<double>(std::abs(u[i] - v[i])));
    }
  }
  return worst;
}

// The stated bound: n sites' rounding, 2^-25 each, over the share of the weight that arrived;
// the float32 result adds its own rounding of values of order 1 (2^-24).
double bound(int n, double share) { return n * std::ldexp(1.0, -25) / share + std::ldexp(1.0, -23); }

TEST(Secagg, TheUnmaskedSumIsFedAvgWithinTheQuantizationBound) {
  Round round(5, 20000);
  auto result = round.run();
  ASSERT_TRUE(result) << result.error().message;
  const double diff = max_difference(*result, round.expected());
  EXPECT_LT(diff, bound(5, 1.0)) << diff;
  EXPECT_GT(result->at(0).bytes(), 0u);
}

TEST(Secagg, WhatTheCoordinatorReceivesFromOneSiteIsUncorrelatedWithItsUpdate) {
  Round round(3, 200000);
  ASSERT_TRUE(round.run());
  const auto& site = round.sites[1];
  const auto plain = encode({&site.model, &site.grads}, 1.0);
  const auto& masked = round.seen.at(site.id);
  ASSERT_EQ(plain.size(), masked.size());
  // Pearson correlation between the update's values and the masked words (as signed integers).
  double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
  const double n = static_cast<double>(plain.size());
  for (std::size_t i = 0; i < plain.size(); ++i) {
    const double x = static_cast<double>(static_cast<std::int64_t>(plain[i]));
    const double y = static_cast<double>(static_cast<std::int64_t>(masked[i]));
    sx += x, sy += y, sxx += x * x, syy += y * y, sxy += x * y;
  }
  const double r = (sxy / n - sx / n * sy / n) / std::sqrt((sxx / n - sx / n * sx / n) * (syy / n - sy / n * sy / n));
  EXPECT_LT(std::abs(r), 0.01) << r;
  // And the encoding itself is the update, not noise: the test above is not vacuous.
  double sxp = 0;
  for (std::size_t i = 0; i < plain.size(); ++i) sxp += std::abs(static_cast<double>(static_cast<std::int64_t>(plain[i])));
  EXPECT_GT(sxp / n, 1000.0);
}

TEST(Secagg, ASiteThatDropsAfterItsMaskedUpdateIsInTheSum) {
  Round round(5, 5000);
  round.drops = {{round.sites[2].id, Drop::after_masked}};
  auto result = round.run();
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_LT(max_difference(*result, round.expected()), bound(5, 1.0));
}

TEST(Secagg, ASiteThatDropsBeforeItsMaskedUpdateIsLeftOutCleanly) {
  Round round(7, 5000);  // 6 send keys (threshold 4), 5 share, 4 send their update
  round.drops = {{round.sites[1].id, Drop::after_shares}, {round.sites[3].id, Drop::after_keys},
                 {round.sites[4].id, Drop::before_keys}};
  auto result = round.run();
  ASSERT_TRUE(result) << result.error().message;
  const auto expected = round.expected();  // sites 0, 2, 5 and 6 only
  EXPECT_LT(max_difference(*result, expected), bound(4, 0.4));
}

TEST(Secagg, AJobOfThreeOrMoreSitesNeverOpensASumOfTwo) {
  EXPECT_EQ(minimum_sum(1), 2);
  EXPECT_EQ(minimum_sum(2), 2);
  EXPECT_EQ(minimum_sum(3), 3);
  EXPECT_EQ(minimum_sum(40), 3);
  // Three sites, one gone after its shares: the two left would each learn the other's update
  // from the sum. The coordinator does not open it (its threshold of 2 alone would have).
  Round dropped(3, 500);
  dropped.drops = {{dropped.sites[2].id, Drop::after_shares}};
  auto refused = dropped.run();
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("only 2 sites sent their masked update; this job opens a sum of at least 3"),
            std::string::npos)
      << refused.error().message;
  // A coordinator that would open it anyway gets nothing from the sites.
  Round dishonest(3, 500);
  dishonest.drops = dropped.drops;
  dishonest.coordinator_minimum = 2;
  auto revealed = dishonest.run();
  ASSERT_FALSE(revealed);
  EXPECT_NE(revealed.error().message.find("revealing nothing"), std::string::npos) << revealed.error().message;
  EXPECT_TRUE(dishonest.revealed.empty());
  auto second = dishonest.sites[1].client->unmask({dishonest.sites[0].id, dishonest.sites[1].id});
  ASSERT_FALSE(second);  // the other survivor refuses as well
  EXPECT_NE(second.error().message.find("revealing nothing"), std::string::npos) << second.error().message;
  // One gone before its keys: the round of two is refused at the roster; a coordinator that
  // sends that roster anyway gets no shares, and one that relays the shares of two gets no update.
  Round unkeyed(3, 500);
  unkeyed.drops = {{unkeyed.sites[0].id, Drop::before_keys}};
  auto roster = unkeyed.run();
  ASSERT_FALSE(roster);
  EXPECT_NE(roster.error().message.find("only 2 sites sent keys"), std::string::npos) << roster.error().message;
  unkeyed.coordinator_minimum = 2;
  auto shared = unkeyed.run();
  ASSERT_FALSE(shared);
  EXPECT_NE(shared.error().message.find("only 2 sites in the roster; this job opens a sum of at least 3"), std::string::npos)
      << shared.error().message;
  Round unshared(3, 500);
  unshared.drops = {{unshared.sites[0].id, Drop::after_keys}};
  unshared.coordinator_minimum = 2;
  auto masked = unshared.run();
  ASSERT_FALSE(masked);
  EXPECT_NE(masked.error().message.find("only 2 sites shared keys"), std::string::npos) << masked.error().message;
  EXPECT_NE(masked.error().message.find("not sending an update"), std::string::npos) << masked.error().message;
  EXPECT_TRUE(unshared.seen.empty());
  // A coordinator that pads a job of three with a fourth site of its own (whose update it knows,
  // to subtract it): the job's sites refuse the roster.
  Round padded(4, 500);
  padded.job_sites.pop_back();
  auto refused_roster = padded.run();
  ASSERT_FALSE(refused_roster);
  EXPECT_NE(refused_roster.error().message.find("the roster names site '" + padded.sites[3].id + "', which is not a site of this job"),
            std::string::npos)
      << refused_roster.error().message;
  // Four sites, one gone: the sum of three opens.
  Round four(4, 500);
  four.drops = {{four.sites[1].id, Drop::after_shares}};
  auto opened = four.run();
  ASSERT_TRUE(opened) << opened.error().message;
  EXPECT_LT(max_difference(*opened, four.expected()), bound(3, 0.3));
  // A job of two opens its sum of two (its plain average shows each the other's update anyway).
  Round two(2, 500);
  auto pair = two.run();
  ASSERT_TRUE(pair) << pair.error().message;
  EXPECT_LT(max_difference(*pair, two.expected()), bound(2, 1.0));
}

TEST(Secagg, ASiteRefusesARosterOfOneAThresholdBelowAMajorityAndARelayOfTooFew) {
  // A roster of this site alone: its "sum" would be its update.
  Client alone("a", "j|1", {"a", "b"});
  const auto keys = alone.advertise().value();
  Roster one;
  one.keys = {keys};
  one.threshold = 1;
  one.weight_total = 1;
  EXPECT_FALSE(alone.share(one));
  // Five sites and a threshold of 2: two colluders could unmask a site.
  std::vector<std::unique_ptr<Client>> clients;
  Roster five;
  for (const char* id : {"a", "b", "c", "d", "e"}) {
    clients.push_back(std::make_unique<Client>(id, "j|1", std::vector<std::string>{"a", "b", "c", "d", "e"}));
    five.keys.push_back(clients.back()->advertise().value());
  }
  five.weight_total = 5;
  five.threshold = 2;
  auto refused = clients[0]->share(five);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("below a majority"), std::string::npos) << refused.error().message;
  // With a proper threshold it shares; a relay saying only it and one other shared is refused.
  five.threshold = 3;
  std::vector<std::vector<EncryptedShares>> shares;
  for (auto& c : clients) shares.push_back(c->share(five).value());
  ShareRelay relay;
  relay.shared = {"a", "b"};
  for (const auto& list : {shares[0], shares[1]}) {
    for (const auto& e : list) {
      if (e.to == "a") relay.shares.push_back(e);
    }
  }
  TensorSet update;
  update.tensors.push_back(make_f32("w", {2}, {1.0f, 2.0f}));
  auto masked = clients[0]->mask(relay, {&update}, 1.0);
  ASSERT_FALSE(masked);
  EXPECT_NE(masked.error().message.find("fewer than the threshold"), std::string::npos) << masked.error().message;
}

TEST(Secagg, ValuesBeyondTheClipAreClippedBeforeWeightingSoTheSumCannotWrap) {
  TensorSet a, b;
  a.tensors.push_back(make_f32("w", {2}, {1e30f, -1e30f}));
  b.tensors.push_back(make_f32("w", {2}, {1e30f, 3.0f}));
  std::int64_t clipped = 0;
  auto ea = encode({&a}, 0.5, &clipped);
  EXPECT_EQ(clipped, 2);
  auto eb = encode({&b}, 0.5);
  for (std::size_t i = 0; i < ea.size(); ++i) ea[i] += eb[i];
  const auto sum = decode(ea, {&a}, 1.0).value();
  const auto values = to_f32(sum[0].tensors[0]);
  EXPECT_FLOAT_EQ(values[0], static_cast<float>(kClip));
  EXPECT_FLOAT_EQ(values[1], static_cast<float>((-kClip + 3.0) / 2));  // not wrapped round to a positive value
}


TEST(Secagg, FewerSurvivorsThanTheThresholdFailTheRoundAndRevealNothing) {
  Round round(5, 1000);  // threshold: a majority, 3
  round.drops = {{round.sites[0].id, Drop::after_shares}, {round.sites[1].id, Drop::after_shares},
                 {round.sites[2].id, Drop::after_shares}};
  auto result = round.run();
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message.find("fewer than the threshold"), std::string::npos) << result.error().message;
  // A survivor asked anyway (a coordinator that goes on) refuses to reveal anything.
  auto refused = round.sites[3].client->unmask({round.sites[3].id, round.sites[4].id});
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("revealing nothing"), std::string::npos) << refused.error().message;
}

TEST(Secagg, ASurvivorNeverRevealsBothSecretsOfOneSiteAndAnswersOnce) {
  Round round(4, 1000);
  const std::string dropped = round.sites[0].id, survivor = round.sites[1].id;
  round.drops = {{dropped, Drop::after_shares}};
  round.before_reveal = [&](Aggregator& aggregator) {
    // A share of the dropped site's self mask is not what the coordinator may hold: refused whole.
    EXPECT_FALSE(aggregator.add_revealed(survivor, {RevealedShare{dropped, SecretKind::self_mask, 2, std::string(32, 'x')}}));
    // A share under another holder's number, or two of one owner: refused whole.
    EXPECT_FALSE(aggregator.add_revealed(survivor, {RevealedShare{dropped, SecretKind::mask_key, 4, std::string(32, 'x')}}));
    // The sum is closed once the survivors are named: a late masked update is not added.
    EXPECT_FALSE(aggregator.add_masked(dropped, std::vector<std::uint64_t>(element_count({&round.sites[0].model, &round.sites[0].grads}))));
  };
  auto result = round.run();
  ASSERT_TRUE(result) << result.error().message;
  std::map<std::string, std::set<SecretKind>> kinds;
  for (const auto& [site, shares] : round.revealed) {
    for (const auto& r : shares) kinds[r.owner].insert(r.kind);
  }
  EXPECT_EQ(kinds[dropped], std::set<SecretKind>{SecretKind::mask_key});
  for (const auto& s : round.sites) {
    if (s.id != dropped) EXPECT_EQ(kinds[s.id], std::set<SecretKind>{SecretKind::self_mask}) << s.id;
  }
  // Asked again with the dropped site now "alive", the survivor refuses: it answered this round.
  EXPECT_FALSE(round.sites[1].client->unmask({dropped, survivor, round.sites[2].id}));
}

TEST(Secagg, ASubstitutedPublicKeyIsDetectedByTheSites) {
  std::map<std::string, std::string> publics;
  std::map<std::string, std::string> privates;
  Round round(3, 100);
  for (const auto& s : round.sites) {
    auto key = crypto::generate_signing_key().value();
    publics[s.id] = key.public_pem;
    privates[s.id] = key.private_pem;
  }
  // The signer is the site's own (by the site id in the signed text); the verifier looks the
  // signer's key up as the real agent does in the root-signed manifest.
  round.signer = [&](std::string_view text) -> Result<std::string> {
    for (const auto& [id, pem] : privates) {
      if (text.find("|" + id + "|") != std::string_view::npos) return crypto::sign(pem, text);
    }
    return make_error("no key");
  };
  round.verifier = [&](const PublicKeys& keys, std::string_view text) { return crypto::verify(publics.at(keys.site), text, keys.signature); };
  ASSERT_TRUE(round.run());  // honest: every signature checks
  Round evil(3, 100);
  evil.signer = round.signer;
  evil.verifier = round.verifier;
  const auto attacker = crypto::generate_x25519().value();
  evil.tamper = [&](Roster& r) { r.keys[1].mask_key = attacker.public_raw; };
  auto result = evil.run();
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message.find("are not that site's"), std::string::npos) << result.error().message;
}

TEST(Secagg, ANeighbourGraphOfFortySitesWithDropoutsSumsRight) {
  Round round(40, 500);
  round.graph = GraphOptions{0, 16, 7};  // 12 neighbours each
  round.drops = {{round.sites[3].id, Drop::after_shares}, {round.sites[17].id, Drop::after_masked},
                 {round.sites[30].id, Drop::after_keys}};
  auto result = round.run();
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(round.sites[0].client->neighbours().size(), 12u);
  EXPECT_LT(max_difference(*result, round.expected()), bound(40, 0.9));
}

}  // namespace
}  // namespace fedda
