#include "fedda/common/secagg.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <random>

#include <openssl/rand.h>

#include "fedda/common/crypto.h"

extern "C" {
#include <libgfshare.h>
}

namespace fedda::secagg {


namespace {

// libgfshare draws its polynomials' coefficients from a global function pointer, and scrubs its
// buffers with it when a context is freed; Debian's build leaves it unset (a null call). Every
// use (splitting and combining) goes through here, which points it at OpenSSL's RAND_bytes first.
void rand_bytes_for_gfshare(unsigned char* buffer, unsigned int count) {
  if (RAND_bytes(buffer, static_cast<int>(count)) != 1) std::abort();  // no entropy: never share with weak coefficients
}
void use_csprng() {
  static std::once_flag once;
  std::call_once(once, [] { gfshare_fill_rand = rand_bytes_for_gfshare; });
}

struct GfFree {
  void operator()(gfshare_ctx* c) const { gfshare_ctx_free(c); }
};

// A share's plaintext: x, then the shares of the self-mask seed and of the mask secret key.
constexpr std::size_t kSecretBytes = 32;

std::string sealed_aad(std::string_view context, std::string_view from, std::string_view to) {
  return "fedda-secagg-share|" + std::string(context) + "|" + std::string(from) + "|" + std::string(to);
}

Result<std::string> share_key(std::string_view context, std::string_view own_secret, std::string_view peer_public) {
  auto shared = crypto::x25519(own_secret, peer_public);
  if (!shared) return shared.error();
  return crypto::hkdf_sha256(*shared, context, "fedda secagg share encryption", crypto::kStorageKeyBytes);
}

Result<std::string> pair_seed(std::string_view context, std::string_view own_secret, std::string_view peer_public) {
  auto shared = crypto::x25519(own_secret, peer_public);
  if (!shared) return shared.error();
  return crypto::hkdf_sha256(*shared, context, "fedda secagg pairwise mask", kSecretBytes);
}

// out += sign * PRG(seed), element-wise modulo 2^64.
Status add_stream(std::vector<std::uint64_t>& out, std::string_view seed, bool subtract) {
  std::vector<std::uint64_t> stream(out.size());
  if (auto st = crypto::aes256_ctr_stream(seed, reinterpret_cast<unsigned char*>(stream.data()), stream.size() * 8); !st) {
    return st;
  }
  if (subtract) {
    for (std::size_t i = 0; i < out.size(); ++i) out[i] -= stream[i];
  } else {
    for (std::size_t i = 0; i < out.size(); ++i) out[i] += stream[i];
  }
  return {};
}

// The neighbourhood (neighbours and the site itself), sorted: its members hold the site's shares,
// member i (0-based) with share number i + 1.
std::vector<std::string> neighbourhood(const std::map<std::string, std::vector<std::string>>& graph, const std::string& site) {
  auto members = graph.at(site);
  members.push_back(site);
  std::sort(members.begin(), members.end());
  return members;
}

int share_number(const std::vector<std::string>& members, const std::string& holder) {
  const auto it = std::lower_bound(members.begin(), members.end(), holder);
  return it != members.end() && *it == holder ? static_cast<int>(it - members.begin()) + 1 : 0;
}

// Both keys raw X25519 public keys (32 bytes).
bool well_formed(const PublicKeys& k) { return k.share_key.size() == 32 && k.mask_key.size() == 32; }

bool contains(const std::vector<std::string>& sorted, const std::string& s) {
  return std::binary_search(sorted.begin(), sorted.end(), s);
}

GraphOptions graph_of(const Roster& r) {
  return GraphOptions{r.degree, r.all_pairs_up_to, r.graph_seed};
}

std::vector<std::string> site_ids(const Roster& r) {
  std::vector<std::string> ids;
  for (const auto& k : r.keys) ids.push_back(k.site);
  return ids;
}

std::string too_small_a_sum(std::size_t sites, int minimum, const char* what) {
  return "secure aggregation: only " + std::to_string(sites) + (sites == 1 ? " site " : " sites ") + what + "; this job opens a sum of at least " +
         std::to_string(minimum) + " (a sum of two would show each of them the other's update)";
}

}  // namespace

int minimum_sum(std::size_t sites) { return static_cast<int>(std::clamp<std::size_t>(sites, 2, 3)); }

// ---- Shamir -------------------------------------------------------------------------------

Result<std::vector<Share>> split(std::string_view secret, int holders, int threshold) {
  if (holders < 1 || holders > kMaxNeighbourhood) return make_error("Shamir: 1 to 255 holders, not " + std::to_string(holders));
  if (threshold < 1 || threshold > holders) {
    return make_error("Shamir: threshold " + std::to_string(threshold) + " outside 1.." + std::to_string(holders));
  }
  if (secret.empty()) return make_error("Shamir: empty secret");
  use_csprng();
  std::vector<unsigned char> numbers(static_cast<std::size_t>(holders));
  for (int i = 0; i < holders; ++i) numbers[static_cast<std::size_t>(i)] = static_cast<unsigned char>(i + 1);
  std::unique_ptr<gfshare_ctx, GfFree> ctx(gfshare_ctx_init_enc(numbers.data(), static_cast<unsigned>(holders),
                                                                static_cast<unsigned char>(threshold),
                                                                static_cast<unsigned>(secret.size())));
  if (!ctx) return make_error("Shamir: libgfshare refused the share numbers");
  std::string copy(secret);
  gfshare_ctx_enc_setsecret(ctx.get(), reinterpret_cast<unsigned char*>(copy.data()));
  OPENSSL_cleanse(copy.data(), copy.size());
  std::vector<Share> out;
  for (int i = 0; i < holders; ++i) {
    Share s;
    s.x = static_cast<std::uint8_t>(i + 1);
    s.y.assign(secret.size(), '\0');
    gfshare_ctx_enc_getshare(ctx.get(), static_cast<unsigned char>(i), reinterpret_cast<unsigned char*>(s.y.data()));
    out.push_back(std::move(s));
  }
  return out;
}

Result<std::string> combine(const std::vector<Share>& shares) {
  if (shares.empty()) return make_error("Shamir: no shares");
  use_csprng();
  const std::size_t size = shares.front().y.size();
  std::vector<unsigned char> numbers;
  for (const auto& s : shares) {
    if (s.x == 0 || s.y.size() != size) return make_error("Shamir: a share with number 0 or of another length");
    if (std::count(numbers.begin(), numbers.end(), s.x)) return make_error("Shamir: share " + std::to_string(s.x) + " given twice");
    numbers.push_back(s.x);
  }
  std::unique_ptr<gfshare_ctx, GfFree> ctx(
      gfshare_ctx_init_dec(numbers.data(), static_cast<unsigned>(numbers.size()), static_cast<unsigned>(size)));
  if (!ctx) return make_error("Shamir: libgfshare refused the share numbers");
  for (std::size_t i = 0; i < shares.size(); ++i) {
    std::string y = shares[i].y;
    gfshare_ctx_dec_giveshare(ctx.get(), static_cast<unsigned char>(i), reinterpret_cast<unsigned char*>(y.data()));
  }
  std::string secret(size, '\0');
  gfshare_ctx_dec_extract(ctx.get(), reinterpret_cast<unsigned char*>(secret.data()));
  return secret;
}

// ---- graph --------------------------------------------------------------------------------

std::map<std::string, std::vector<std::string>> neighbour_graph(std::vector<std::string> sites, const GraphOptions& options) {
  std::sort(sites.begin(), sites.end());
  sites.erase(std::unique(sites.begin(), sites.end()), sites.end());
  const int n = static_cast<int>(sites.size());
  std::map<std::string, std::vector<std::string>> graph;
  for (const auto& s : sites) graph[s];  // every site has an entry, even alone
  int degree = options.degree > 0 ? std::min(options.degree, n) : 2 * static_cast<int>(std::ceil(std::log2(std::max(n, 2))));
  degree = std::min(degree + (degree % 2), n - 1);  // even (half on each side), at most everyone else
  if (n <= options.all_pairs_up_to || degree >= n - 1) {
    for (const auto& s : sites) {
      for (const auto& o : sites) {
        if (o != s) graph[s].push_back(o);
      }
    }
    return graph;
  }
  // A ring in a seeded order: Fisher-Yates driven by mt19937_64, whose output the standard fixes
  // (std::shuffle's use of it is the library's choice, and sites may run other builds).
  std::mt19937_64 random(options.seed);
  for (int i = n - 1; i > 0; --i) {
    const auto j = static_cast<int>(random() % static_cast<std::uint64_t>(i + 1));
    std::swap(sites[static_cast<std::size_t>(i)], sites[static_cast<std::size_t>(j)]);
  }
  for (int i = 0; i < n; ++i) {
    auto& list = graph[sites[static_cast<std::size_t>(i)]];
    for (int d = 1; d <= degree / 2; ++d) {
      list.push_back(sites[static_cast<std::size_t>((i + d) % n)]);
      list.push_back(sites[static_cast<std::size_t>((i - d + n) % n)]);
    }
    std::sort(list.begin(), list.end());
    list.erase(std::unique(list.begin(), list.end()), list.end());
  }
  return graph;
}

int default_threshold(int neighbourhood_size) { return neighbourhood_size / 2 + 1; }

// ---- fixed point --------------------------------------------------------------------------

std::size_t element_count(const std::vector<const TensorSet*>& sets) {
  std::size_t n = 0;
  for (const auto* set : sets) {
    for (const auto& t : set->tensors) n += static_cast<std::size_t>(t.elements());
  }
  return n;
}

std::string to_bytes(const std::vector<std::uint64_t>& words) {
  std::string bytes(words.size() * sizeof(std::uint64_t), '\0');
  std::memcpy(bytes.data(), words.data(), bytes.size());
  return bytes;
}

Result<std::vector<std::uint64_t>> from_bytes(const std::string& bytes) {
  if (bytes.size() % sizeof(std::uint64_t) != 0) return make_error("secure aggregation: a masked vector of " + std::to_string(bytes.size()) + " bytes is not whole 64-bit words");
  std::vector<std::uint64_t> words(bytes.size() / sizeof(std::uint64_t));
  std::memcpy(words.data(), bytes.data(), bytes.size());
  return words;
}

std::vector<std::uint64_t> encode(const std::vector<const TensorSet*>& sets, double fraction, std::int64_t* clipped) {
  std::vector<std::uint64_t> out;
  out.reserve(element_count(sets));
  std::int64_t beyond = 0;
  const double scale = std::ldexp(1.0, kScaleBits);
  const auto put = [&](double x) {
    // Clipped before weighting: with fractions summing to at most 1, no sum passes the clip.
    if (!(std::abs(x) <= kClip)) {  // NaN is clipped to 0, infinities to the clip
      ++beyond;
      x = std::isnan(x) ? 0.0 : std::copysign(kClip, x);
    }
    out.push_back(static_cast<std::uint64_t>(std::llround(x * fraction * scale)));
  };
  for (const auto* set : sets) {
    for (const auto& t : set->tensors) {
      if (t.dtype == DType::i64) {
        std::vector<std::int64_t> values(static_cast<std::size_t>(t.elements()));
        std::memcpy(values.data(), t.data.data(), values.size() * sizeof(std::int64_t));
        for (auto v : values) put(static_cast<double>(v));
      } else {
        for (float v : to_f32(t)) put(v);
      }
    }
  }
  if (clipped) *clipped = beyond;
  return out;
}

Result<std::vector<TensorSet>> decode(const std::vector<std::uint64_t>& sum, const std::vector<const TensorSet*>& layouts,
                                      double fraction_sum) {
  if (sum.size() != element_count(layouts)) {
    return make_error("secure aggregation: the sum has " + std::to_string(sum.size()) + " elements, the model " +
                      std::to_string(element_count(layouts)));
  }
  if (!(fraction_sum > 0)) return make_error("secure aggregation: no weight in the sum");
  const double unscale = std::ldexp(1.0, -kScaleBits) / fraction_sum;
  std::vector<TensorSet> out;
  std::size_t at = 0;
  for (const auto* layout : layouts) {
    TensorSet set;
    for (const auto& t : layout->tensors) {
      const auto n = static_cast<std::size_t>(t.elements());
      WireTensor w;
      w.name = t.name;
      w.shape = t.shape;
      w.dtype = t.dtype == DType::i64 ? DType::i64 : DType::f32;
      w.data.resize(n * dtype_size(w.dtype));
      for (std::size_t i = 0; i < n; ++i) {
        const double v = static_cast<double>(static_cast<std::int64_t>(sum[at + i])) * unscale;
        if (w.dtype == DType::i64) {
          const auto r = static_cast<std::int64_t>(std::llround(v));
          std::memcpy(w.data.data() + i * 8, &r, 8);
        } else {
          const auto f = static_cast<float>(v);
          std::memcpy(w.data.data() + i * 4, &f, 4);
        }
      }
      at += n;
      set.tensors.push_back(std::move(w));
    }
    fedda::seal(set);
    out.push_back(std::move(set));
  }
  return out;
}

std::string keys_signed_text(std::string_view context, const PublicKeys& keys) {
  return "fedda-secagg-keys|" + std::string(context) + "|" + keys.site + "|" + crypto::sha256_hex(keys.share_key) + "|" +
         crypto::sha256_hex(keys.mask_key);
}

// ---- Client -------------------------------------------------------------------------------

struct Client::State {
  std::string site, context;
  Signer signer;
  Verifier verifier;
  crypto::X25519KeyPair share_pair, mask_pair;
  std::string self_seed;                      // b_u
  Roster roster;
  std::map<std::string, const PublicKeys*> keys;
  std::vector<std::string> neighbours, members;
  std::map<std::string, std::string> relayed;  // owner -> sealed shares addressed to this site
  std::vector<std::string> shared;             // U2
  double fraction = 0;  // w / W
  std::vector<std::string> job_sites;  // sorted
  int minimum_sum = 2;
  enum class Stage { fresh, advertised, shared, masked, unmasked } stage = Stage::fresh;
};

Client::Client(std::string site, std::string context, std::vector<std::string> job_sites, Signer signer, Verifier verifier)
    : s_(std::make_unique<State>()) {
  s_->site = std::move(site);
  s_->context = std::move(context);
  std::sort(job_sites.begin(), job_sites.end());
  job_sites.erase(std::unique(job_sites.begin(), job_sites.end()), job_sites.end());
  s_->minimum_sum = minimum_sum(job_sites.size());
  s_->job_sites = std::move(job_sites);
  s_->signer = std::move(signer);
  s_->verifier = std::move(verifier);
}
Client::~Client() {
  if (s_) {
    OPENSSL_cleanse(s_->share_pair.secret_raw.data(), s_->share_pair.secret_raw.size());
    OPENSSL_cleanse(s_->mask_pair.secret_raw.data(), s_->mask_pair.secret_raw.size());
    OPENSSL_cleanse(s_->self_seed.data(), s_->self_seed.size());
  }
}

const std::vector<std::string>& Client::neighbours() const { return s_->neighbours; }

Result<PublicKeys> Client::advertise(std::string manifest, std::string manifest_signature) {
  auto& s = *s_;
  if (s.stage != State::Stage::fresh) return make_error("secure aggregation: keys already advertised for " + s.context);
  auto a = crypto::generate_x25519();
  if (!a) return a.error();
  auto b = crypto::generate_x25519();
  if (!b) return b.error();
  s.share_pair = std::move(*a);
  s.mask_pair = std::move(*b);
  PublicKeys keys{s.site, s.share_pair.public_raw, s.mask_pair.public_raw, {}, std::move(manifest), std::move(manifest_signature)};
  if (s.signer) {
    auto sig = s.signer(keys_signed_text(s.context, keys));
    if (!sig) return sig.error();
    keys.signature = std::move(*sig);
  }
  s.stage = State::Stage::advertised;
  return keys;
}

Result<std::vector<EncryptedShares>> Client::share(const Roster& roster) {
  auto& s = *s_;
  if (s.stage != State::Stage::advertised) return make_error("secure aggregation: a roster before keys, or twice");
  s.roster = roster;
  s.keys.clear();
  for (const auto& k : s.roster.keys) {
    if (s.keys.count(k.site)) return make_error("secure aggregation: the roster names site '" + k.site + "' twice");
    if (!well_formed(k)) return make_error("secure aggregation: site '" + k.site + "': malformed keys");
    s.keys[k.site] = &k;
  }
  for (const auto& k : s.roster.keys) {
    if (!std::binary_search(s.job_sites.begin(), s.job_sites.end(), k.site)) {
      return make_error("secure aggregation: the roster names site '" + k.site +
                        "', which is not a site of this job (added by the coordinator?); not sharing");
    }
  }
  if (static_cast<int>(s.roster.keys.size()) < s.minimum_sum) {
    return make_error(too_small_a_sum(s.roster.keys.size(), s.minimum_sum, "in the roster") + "; not sharing");
  }
  const auto own = s.keys.find(s.site);
  if (own == s.keys.end() || own->second->share_key != s.share_pair.public_raw || own->second->mask_key != s.mask_pair.public_raw) {
    return make_error("secure aggregation: the roster does not carry this site's own keys (substituted by the coordinator?)");
  }
  for (const auto& k : s.roster.keys) {
    if (k.site == s.site || !s.verifier) continue;
    if (auto st = s.verifier(k, keys_signed_text(s.context, k)); !st) {
      return make_error("secure aggregation: the keys relayed for site '" + k.site + "' are not that site's: " + st.error().message);
    }
  }
  const auto graph = neighbour_graph(site_ids(s.roster), graph_of(s.roster));
  s.neighbours = graph.at(s.site);
  s.members = neighbourhood(graph, s.site);
  const int holders = static_cast<int>(s.members.size());
  if (holders > kMaxNeighbourhood) return make_error("secure aggregation: a neighbourhood of more than 255 sites");
  // A round of one site, or a threshold below a majority of the neighbourhood, would let the
  // coordinator (with fewer colluders than a majority) unmask one site: refused, whatever it says.
  if (s.roster.keys.size() < 2 || holders < 2) return make_error("secure aggregation: a round of fewer than two sites would reveal this site's update");
  if (s.roster.threshold < std::max(2, default_threshold(holders))) {
    return make_error("secure aggregation: threshold " + std::to_string(s.roster.threshold) + " is below a majority of this site's " +
                      std::to_string(holders) + "-site neighbourhood");
  }
  if (s.roster.threshold > holders) {
    return make_error("secure aggregation: threshold " + std::to_string(s.roster.threshold) + " above the neighbourhood's " +
                      std::to_string(holders) + " sites");
  }
  auto seed = crypto::random_bytes(kSecretBytes);
  if (!seed) return seed.error();
  s.self_seed = std::move(*seed);
  auto self_shares = split(s.self_seed, holders, s.roster.threshold);
  if (!self_shares) return self_shares.error();
  auto key_shares = split(s.mask_pair.secret_raw, holders, s.roster.threshold);
  if (!key_shares) return key_shares.error();
  std::vector<EncryptedShares> out;
  for (int i = 0; i < holders; ++i) {
    const auto& to = s.members[static_cast<std::size_t>(i)];
    std::string plain;
    plain += static_cast<char>((*self_shares)[static_cast<std::size_t>(i)].x);
    plain += (*self_shares)[static_cast<std::size_t>(i)].y;
    plain += (*key_shares)[static_cast<std::size_t>(i)].y;
    auto key = share_key(s.context, s.share_pair.secret_raw, s.keys.at(to)->share_key);
    if (!key) return key.error();
    auto sealed = crypto::seal(*key, plain, sealed_aad(s.context, s.site, to));
    OPENSSL_cleanse(plain.data(), plain.size());
    if (!sealed) return sealed.error();
    out.push_back({s.site, to, std::move(*sealed)});
  }
  s.stage = State::Stage::shared;
  return out;
}

Result<std::vector<std::uint64_t>> Client::mask(const ShareRelay& relay, const std::vector<const TensorSet*>& update, double weight,
                                                std::int64_t* clipped) {
  auto& s = *s_;
  if (s.stage != State::Stage::shared) return make_error("secure aggregation: masking before sharing, or twice");
  if (!(weight > 0) || !(s.roster.weight_total >= weight)) {
    return make_error("secure aggregation: weight " + std::to_string(weight) + " outside (0, the roster's " +
                      std::to_string(s.roster.weight_total) + "]");
  }
  s.fraction = weight / s.roster.weight_total;
  s.shared = relay.shared;
  std::sort(s.shared.begin(), s.shared.end());
  if (!contains(s.shared, s.site)) return make_error("secure aggregation: the relay leaves this site out of the round");
  for (const auto& u : s.shared) {
    if (!s.keys.count(u)) return make_error("secure aggregation: the relay names site '" + u + "', not in the roster");
  }
  s.relayed.clear();
  for (const auto& e : relay.shares) {
    if (e.to != s.site || !contains(s.members, e.from) || !contains(s.shared, e.from)) {
      return make_error("secure aggregation: the relay carries shares from '" + e.from + "' to '" + e.to + "' this site did not expect");
    }
    s.relayed[e.from] = e.sealed;
  }
  int sharing = 0;
  for (const auto& v : s.members) {
    if (contains(s.shared, v) && !s.relayed.count(v)) return make_error("secure aggregation: no shares relayed from neighbour '" + v + "'");
    sharing += contains(s.shared, v) ? 1 : 0;
  }
  if (sharing < s.roster.threshold) {
    return make_error("secure aggregation: only " + std::to_string(sharing) + " of this site's neighbourhood shared keys, fewer than the threshold " +
                      std::to_string(s.roster.threshold) + "; not sending an update");
  }
  if (static_cast<int>(s.shared.size()) < s.minimum_sum) {
    return make_error(too_small_a_sum(s.shared.size(), s.minimum_sum, "shared keys") + "; not sending an update");
  }
  auto y = encode(update, s.fraction, clipped);
  if (auto st = add_stream(y, s.self_seed, false); !st) return st.error();
  for (const auto& v : s.neighbours) {
    if (!contains(s.shared, v)) continue;
    auto seed = pair_seed(s.context, s.mask_pair.secret_raw, s.keys.at(v)->mask_key);
    if (!seed) return seed.error();
    if (auto st = add_stream(y, *seed, s.site > v); !st) return st.error();
  }
  s.stage = State::Stage::masked;
  return y;
}

Result<std::vector<RevealedShare>> Client::unmask(const std::vector<std::string>& masked_list) {
  auto& s = *s_;
  if (s.stage != State::Stage::masked) return make_error("secure aggregation: an unmask request before masking, or a second one");
  auto masked = masked_list;
  std::sort(masked.begin(), masked.end());
  masked.erase(std::unique(masked.begin(), masked.end()), masked.end());
  s.stage = State::Stage::unmasked;  // one answer per round, whatever happens
  for (const auto& u : masked) {
    if (!contains(s.shared, u)) return make_error("secure aggregation: asked to unmask site '" + u + "', which did not share keys");
  }
  if (!contains(masked, s.site)) return make_error("secure aggregation: an unmask request that says this site's update did not arrive");
  if (static_cast<int>(masked.size()) < s.minimum_sum) {
    return make_error(too_small_a_sum(masked.size(), s.minimum_sum, "sent their update") + "; revealing nothing");
  }
  int alive = 0;
  for (const auto& v : s.members) alive += contains(masked, v) ? 1 : 0;
  if (alive < s.roster.threshold) {
    return make_error("secure aggregation: only " + std::to_string(alive) + " of this site's neighbourhood sent their update, " +
                      "fewer than the threshold " + std::to_string(s.roster.threshold) + "; revealing nothing");
  }
  std::vector<RevealedShare> out;
  for (const auto& [owner, sealed] : s.relayed) {
    auto key = share_key(s.context, s.share_pair.secret_raw, s.keys.at(owner)->share_key);
    if (!key) return key.error();
    auto plain = crypto::open(*key, sealed, sealed_aad(s.context, owner, s.site));
    if (!plain || plain->size() != 1 + 2 * kSecretBytes) {
      return make_error("secure aggregation: the shares relayed from '" + owner + "' do not open");
    }
    RevealedShare r;
    r.owner = owner;
    r.x = static_cast<std::uint8_t>((*plain)[0]);
    if (contains(masked, owner)) {
      r.kind = SecretKind::self_mask;
      r.y = plain->substr(1, kSecretBytes);
    } else {
      r.kind = SecretKind::mask_key;
      r.y = plain->substr(1 + kSecretBytes, kSecretBytes);
    }
    OPENSSL_cleanse(plain->data(), plain->size());
    out.push_back(std::move(r));
  }
  return out;
}

// ---- Aggregator ---------------------------------------------------------------------------

struct Aggregator::State {
  std::string context;
  std::vector<const TensorSet*> layouts;
  std::map<std::string, PublicKeys> keys;
  Roster roster;
  bool rostered = false, relayed = false, closed = false;  // closed: the survivors were named
  std::map<std::string, std::vector<std::string>> graph;
  std::map<std::string, double> weights;
  std::map<std::string, std::vector<EncryptedShares>> shares;  // by sender
  std::set<std::string> keyed, shared, masked, revealed_by;
  std::vector<std::uint64_t> sum;
  int minimum_sum = 2;
  // owner -> kind -> shares
  std::map<std::string, std::map<SecretKind, std::vector<Share>>> revealed;
};

Aggregator::Aggregator(std::string context, std::vector<const TensorSet*> layouts, int minimum_sum) : s_(std::make_unique<State>()) {
  s_->context = std::move(context);
  s_->layouts = std::move(layouts);
  s_->minimum_sum = std::max(2, minimum_sum);
}
Aggregator::~Aggregator() = default;

const std::set<std::string>& Aggregator::keyed() const { return s_->keyed; }
const std::set<std::string>& Aggregator::shared() const { return s_->shared; }
const std::set<std::string>& Aggregator::masked() const { return s_->masked; }
double Aggregator::weight_of(const std::string& site) const {
  const auto it = s_->weights.find(site);
  return it == s_->weights.end() ? 0.0 : it->second;
}

Status Aggregator::add_keys(PublicKeys keys) {
  auto& s = *s_;
  if (s.rostered) return make_error("secure aggregation: keys from '" + keys.site + "' after the roster was sent");
  if (!well_formed(keys)) return make_error("secure aggregation: malformed keys from '" + keys.site + "'");
  s.keyed.insert(keys.site);
  s.keys[keys.site] = std::move(keys);
  return {};
}

Result<Roster> Aggregator::roster(const std::map<std::string, double>& weights, int threshold, const GraphOptions& graph) {
  auto& s = *s_;
  if (s.rostered) return make_error("secure aggregation: the roster was already sent");
  Roster r;
  s.keyed.clear();
  for (const auto& [site, k] : s.keys) {
    const auto w = weights.find(site);
    if (w == weights.end()) continue;  // no longer in the round
    if (!(w->second > 0)) return make_error("secure aggregation: site '" + site + "' has no positive weight");
    r.keys.push_back(k);
    r.weight_total += w->second;
    s.weights[site] = w->second;
    s.keyed.insert(site);
  }
  r.degree = graph.degree;
  r.all_pairs_up_to = graph.all_pairs_up_to;
  r.graph_seed = graph.seed;
  for (auto it = s.keys.begin(); it != s.keys.end();) it = s.keyed.count(it->first) ? std::next(it) : s.keys.erase(it);
  s.graph = neighbour_graph(site_ids(r), graph);
  std::size_t smallest = r.keys.size();
  for (const auto& [site, n] : s.graph) smallest = std::min(smallest, n.size() + 1);
  r.threshold = std::max(threshold, default_threshold(static_cast<int>(smallest)));  // a job may raise it, not lower it
  if (static_cast<int>(r.keys.size()) < s.minimum_sum) return make_error(too_small_a_sum(r.keys.size(), s.minimum_sum, "sent keys"));
  if (static_cast<int>(r.keys.size()) < std::max(r.threshold, 2)) {
    return make_error("secure aggregation: " + std::to_string(r.keys.size()) + " sites sent keys, fewer than the threshold " +
                      std::to_string(std::max(r.threshold, 2)));
  }
  if (r.threshold > static_cast<int>(smallest)) {
    return make_error("secure aggregation: threshold " + std::to_string(r.threshold) + " above the smallest neighbourhood (" +
                      std::to_string(smallest) + " sites)");
  }
  s.roster = r;
  s.rostered = true;
  return r;
}

Status Aggregator::add_shares(const std::string& site, std::vector<EncryptedShares> shares) {
  auto& s = *s_;
  if (!s.rostered || s.relayed) return make_error("secure aggregation: shares from '" + site + "' outside the sharing stage");
  if (!s.graph.count(site)) return make_error("secure aggregation: shares from '" + site + "', not in the roster");
  const auto members = neighbourhood(s.graph, site);
  std::set<std::string> to;
  for (const auto& e : shares) {
    if (e.from != site || !contains(members, e.to) || !to.insert(e.to).second) {
      return make_error("secure aggregation: site '" + site + "' sent shares addressed outside its neighbourhood or twice");
    }
  }
  if (to.size() != members.size()) return make_error("secure aggregation: site '" + site + "' sent shares for only part of its neighbourhood");
  s.shares[site] = std::move(shares);
  s.shared.insert(site);
  return {};
}

Result<std::map<std::string, ShareRelay>> Aggregator::relays() {
  auto& s = *s_;
  if (!s.rostered || s.relayed) return make_error("secure aggregation: relays outside the sharing stage");
  if (static_cast<int>(s.shared.size()) < s.roster.threshold) {
    return make_error("secure aggregation: " + std::to_string(s.shared.size()) + " sites shared their keys, fewer than the threshold " +
                      std::to_string(s.roster.threshold));
  }
  std::map<std::string, ShareRelay> out;
  const std::vector<std::string> shared(s.shared.begin(), s.shared.end());
  for (const auto& site : shared) out[site].shared = shared;
  for (auto& [from, list] : s.shares) {
    for (auto& e : list) {
      if (out.count(e.to)) out[e.to].shares.push_back(std::move(e));
    }
  }
  s.shares.clear();
  s.relayed = true;
  return out;
}

Status Aggregator::add_masked(const std::string& site, const std::vector<std::uint64_t>& masked) {
  auto& s = *s_;
  if (!s.relayed || s.closed) return make_error("secure aggregation: a masked update from '" + site + "' outside its stage");
  if (!s.shared.count(site)) return make_error("secure aggregation: a masked update from '" + site + "', which did not share keys");
  if (s.masked.count(site)) return make_error("secure aggregation: a second masked update from '" + site + "'");
  const std::size_t n = element_count(s.layouts);
  if (masked.size() != n) {
    return make_error("secure aggregation: site '" + site + "' sent " + std::to_string(masked.size()) + " elements, the model has " +
                      std::to_string(n));
  }
  if (s.sum.empty()) s.sum.assign(n, 0);
  for (std::size_t i = 0; i < n; ++i) s.sum[i] += masked[i];
  s.masked.insert(site);
  return {};
}

Result<std::vector<std::string>> Aggregator::survivors() {
  auto st = can_unmask();
  if (!st) return st.error();
  s_->closed = true;
  return std::vector<std::string>(s_->masked.begin(), s_->masked.end());
}

Status Aggregator::can_unmask() const {
  const auto& s = *s_;
  std::vector<std::string> u3(s.masked.begin(), s.masked.end());
  // Every secret the coordinator needs is shared within a neighbourhood of a site of U2: each of
  // those must keep the threshold's number of survivors.
  for (const auto& u : s.shared) {
    const auto members = neighbourhood(s.graph, u);
    int alive = 0;
    for (const auto& v : members) alive += s.masked.count(v) ? 1 : 0;
    if (alive < s.roster.threshold) {
      return make_error("secure aggregation: " + std::to_string(alive) + " of site '" + u + "''s neighbourhood sent their update, " +
                        "fewer than the threshold " + std::to_string(s.roster.threshold) + "; the round cannot be unmasked");
    }
  }
  if (static_cast<int>(u3.size()) < s.minimum_sum) {
    return make_error(too_small_a_sum(u3.size(), s.minimum_sum, "sent their masked update") + "; the round cannot be unmasked");
  }
  return {};
}

Status Aggregator::add_revealed(const std::string& site, const std::vector<RevealedShare>& shares) {
  auto& s = *s_;
  if (!s.masked.count(site)) return make_error("secure aggregation: shares from '" + site + "', whose update did not arrive");
  if (!s.closed) return make_error("secure aggregation: shares from '" + site + "' before the survivors were named");
  if (s.revealed_by.count(site)) return make_error("secure aggregation: shares from '" + site + "' twice");
  std::set<std::string> owners;
  for (const auto& r : shares) {
    const bool wanted = s.shared.count(r.owner) &&
                        (r.kind == SecretKind::self_mask ? s.masked.count(r.owner) > 0 : s.masked.count(r.owner) == 0);
    if (!wanted) return make_error("secure aggregation: site '" + site + "' revealed a share of '" + r.owner + "' that was not asked for");
    // Each share is the sender's own: its number in the owner's neighbourhood, once per owner.
    if (r.x != share_number(neighbourhood(s.graph, r.owner), site) || r.x == 0 || !owners.insert(r.owner).second ||
        r.y.size() != kSecretBytes) {
      return make_error("secure aggregation: site '" + site + "' sent a share of '" + r.owner + "' that is not its own");
    }
  }
  s.revealed_by.insert(site);
  for (const auto& r : shares) s.revealed[r.owner][r.kind].push_back(Share{r.x, r.y});
  return {};
}

bool Aggregator::can_finish() const {
  const auto& s = *s_;
  for (const auto& u : s.shared) {
    const auto kind = s.masked.count(u) ? SecretKind::self_mask : SecretKind::mask_key;
    const auto it = s.revealed.find(u);
    if (it == s.revealed.end()) return false;
    const auto k = it->second.find(kind);
    if (k == it->second.end() || static_cast<int>(k->second.size()) < s.roster.threshold) return false;
  }
  return true;
}

Result<std::vector<TensorSet>> Aggregator::finish() {
  auto& s = *s_;
  if (!can_finish()) return make_error("secure aggregation: not enough shares to unmask the sum");
  auto sum = std::move(s.sum);
  double weight = 0;
  for (const auto& u : s.shared) {
    const auto kind = s.masked.count(u) ? SecretKind::self_mask : SecretKind::mask_key;
    auto shares = s.revealed[u][kind];
    shares.resize(static_cast<std::size_t>(s.roster.threshold));
    auto secret = combine(shares);
    if (!secret) return secret.error();
    if (kind == SecretKind::self_mask) {
      if (auto st = add_stream(sum, *secret, true); !st) return st.error();
      weight += s.weights.at(u);
      continue;
    }
    // u dropped after sharing: remove the pairwise masks its surviving neighbours added for it.
    for (const auto& v : s.graph.at(u)) {
      if (!s.masked.count(v)) continue;
      auto seed = pair_seed(s.context, *secret, s.keys.at(v).mask_key);
      if (!seed) return seed.error();
      // v added +PRG when v < u, -PRG when v > u.
      if (auto st = add_stream(sum, *seed, !(v > u)); !st) return st.error();
    }
    OPENSSL_cleanse(secret->data(), secret->size());
  }
  s.revealed.clear();
  return decode(sum, s.layouts, weight / s.roster.weight_total);
}

}  // namespace fedda::secagg
