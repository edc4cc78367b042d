#pragma once
// Secure aggregation (Bonawitz et al. 2017, with the neighbour graph of Bell et al. 2020, as
// Flower's SecAgg+): the coordinator learns the sum of the round's updates and nothing about
// any one of them, and the sum survives sites that drop out.
//
// Threat model: an honest-but-curious coordinator (it follows the protocol, relays what it is
// given, and tries to learn a site's update from everything it sees) and up to t - 1 sites of a
// neighbourhood colluding with it, where t is the threshold. A coordinator that substitutes a
// site's public keys is detected: every site signs its round keys with its kit's Ed25519
// identity and the other sites check the signature against the root-signed manifest. Not in the
// model: a coordinator that lies about who dropped out to different sites (Bonawitz's
// consistency round, for an actively malicious server, is not implemented), and the sum itself:
// with two sites, each learns the other's update from the average it receives.
//
// One round, four stages (the coordinator only relays; every secret stays at its site):
//   1. keys    each site makes two X25519 key pairs for the round (one to encrypt shares, one
//              for pairwise masks) and signs their public halves; the coordinator collects them
//              (U1) and sends every site the roster.
//   2. shares  each site draws a 32-byte self-mask seed b_u, splits b_u and its mask secret key
//              into Shamir shares (threshold t) for its neighbourhood (its neighbours and itself),
//              encrypts each neighbour's shares with AES-256-GCM under HKDF(X25519) of the two
//              sites' share keys, and sends them; the coordinator relays to each site the shares
//              addressed to it and the list of sites that shared (U2).
//   3. masked  each site encodes its weighted update in fixed point modulo 2^64, adds the
//              AES-256-CTR expansion of b_u and, for every neighbour v in U2, +/- the expansion
//              of HKDF(X25519(its mask key, v's mask key)); the coordinator sums what arrives (U3).
//   4. unmask  the coordinator names U3; each survivor sends, for every neighbour in U2, its
//              share of b_u when u is in U3 or of u's mask secret key when it is not (never both,
//              and nothing when fewer than t of its neighbourhood survive); with t shares of each
//              the coordinator removes the self masks of U3 and the pairwise masks of the
//              dropped, and decodes the sum.
//
// Fixed point: a value x of a site whose FedAvg weight is w (of the roster's total W) is encoded
// as round(clip(x) * w / W * 2^24) modulo 2^64, clip at +/-2^38, so the sum of any roster cannot
// wrap; the decoded average is off from float arithmetic by at most n / 2^25 / (W3 / W) per
// element (n sites, W3 the weight of those whose update arrived), below 1e-6 at 10 sites.
//
// Shamir sharing is libgfshare's (GF(2^8), byte-wise; at most 255 holders), its random source
// set to OpenSSL's RAND_bytes. Not thread-safe per object; objects are independent.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "fedda/common/result.h"
#include "fedda/common/tensors.h"

namespace fedda::secagg {

inline constexpr int kScaleBits = 24;
inline constexpr double kClip = 274877906944.0;  // 2^38
inline constexpr int kMaxNeighbourhood = 255;     // libgfshare's share numbers are one byte

// What a round's keys, masks and shares are bound to: its job and round.
inline std::string round_context(const std::string& job, int round) { return job + "|" + std::to_string(round); }

// ---- Shamir sharing (libgfshare) ----------------------------------------------------------
struct Share {
  std::uint8_t x = 0;  // the holder's share number, 1..255
  std::string y;       // as long as the secret
};
// `holders` shares of `secret`, numbered 1..holders; any `threshold` of them give it back.
Result<std::vector<Share>> split(std::string_view secret, int holders, int threshold);
// The secret from at least the threshold's number of distinct shares (fewer give garbage, not
// an error: the caller checks the count).
Result<std::string> combine(const std::vector<Share>& shares);

// ---- the neighbour graph ------------------------------------------------------------------
// All pairs up to `all_pairs_up_to` sites; beyond, each site's neighbours are the `degree` / 2
// sites on either side of it on a ring in an order drawn from `seed` (a Harary graph, k-regular),
// degree = 2 * ceil(log2 n) unless given. Same inputs, same graph, on every machine.
struct GraphOptions {
  int degree = 0;               // 0: 2 * ceil(log2 n); at most n - 1
  int all_pairs_up_to = 16;
  std::uint64_t seed = 0;
};
// Each site's neighbours (itself excluded), sorted; `sites` need not be sorted.
std::map<std::string, std::vector<std::string>> neighbour_graph(std::vector<std::string> sites, const GraphOptions& options);
// The default threshold of a neighbourhood of `size` holders (neighbours + the site): a majority.
int default_threshold(int neighbourhood_size);

// ---- fixed point --------------------------------------------------------------------------
// Every element of `sets` (float and integer tensors alike), in order, scaled by `fraction`
// (the site's w / W), clipped and encoded; `clipped` counts elements beyond the clip.
std::vector<std::uint64_t> encode(const std::vector<const TensorSet*>& sets, double fraction, std::int64_t* clipped = nullptr);
// The summed ring elements back into `layouts`' shapes and dtypes, divided by `fraction_sum`
// (W3 / W): the weighted average of those that arrived. Error when the sizes differ.
Result<std::vector<TensorSet>> decode(const std::vector<std::uint64_t>& sum, const std::vector<const TensorSet*>& layouts,
                                      double fraction_sum);
std::size_t element_count(const std::vector<const TensorSet*>& sets);
// A masked vector as it travels (RoundUpdate.masked: little-endian 64-bit words) and back;
// error when the byte count is not a whole number of words.
std::string to_bytes(const std::vector<std::uint64_t>& words);
Result<std::vector<std::uint64_t>> from_bytes(const std::string& bytes);

// The fewest sites whose sum is ever unmasked in a job of `sites` training sites: three, or the
// job's own count below that. A sum of two shows each of the two the other's update (its own
// subtracted from the sum), so a job of three or more sites never opens one, whatever drops out;
// a job of two sites, whose plain average already shows each the other's update, opens its sum
// of two (the coordinator still sees only the sum).
int minimum_sum(std::size_t sites);

// ---- messages (the wire's bodies carry these; protocol.h serialises them) -------------------
struct PublicKeys {
  std::string site;
  std::string share_key;          // X25519 public, 32 bytes: encrypts shares sent to this site
  std::string mask_key;           // X25519 public, 32 bytes: pairwise masks
  std::string signature;          // Ed25519 by the site's kit identity over keys_signed_text
  std::string manifest;           // the site's root-signed kit manifest (names its signing key)
  std::string manifest_signature;
};
// The text a site signs: context (job and round), site and both keys.
std::string keys_signed_text(std::string_view context, const PublicKeys& keys);

struct Roster {
  std::vector<PublicKeys> keys;   // U1, sorted by site
  std::int32_t threshold = 0;     // shares needed per secret
  std::int32_t degree = 0;        // neighbour graph (GraphOptions)
  std::int32_t all_pairs_up_to = 16;
  std::uint64_t graph_seed = 0;
  double weight_total = 0;        // W: the roster's FedAvg weights, summed
};

struct EncryptedShares {
  std::string from, to;
  std::string sealed;  // AES-256-GCM of {x, share of b_from, share of from's mask secret}
};

struct ShareRelay {               // coordinator -> one site of U2
  std::vector<std::string> shared;       // U2
  std::vector<EncryptedShares> shares;   // those addressed to this site
};

enum class SecretKind : std::uint8_t { self_mask = 1, mask_key = 2 };
struct RevealedShare {
  std::string owner;
  SecretKind kind = SecretKind::self_mask;
  std::uint8_t x = 0;
  std::string y;
};

// Signs and checks round keys with kit identities. Without them (a consortium run without
// kits, tests) keys go unsigned and a substituted key is not detected.
using Signer = std::function<Result<std::string>(std::string_view text)>;
using Verifier = std::function<Status(const PublicKeys& keys, std::string_view signed_text)>;

// ---- one site's side of one round ---------------------------------------------------------
class Client {
 public:
  // `context` names the job and round (everything signed and derived is bound to it).
  // `job_sites`: the training sites of the job as this site prepared it (JobSpec::sites): a
  // roster naming any other site is refused (a coordinator could pad a round with a site of its
  // own and subtract it), and no sum of fewer than minimum_sum(job_sites.size()) is helped open.
  Client(std::string site, std::string context, std::vector<std::string> job_sites, Signer signer = {}, Verifier verifier = {});
  ~Client();

  // Stage 1: the round's public keys, signed. `manifest`: the site's kit manifest and signature.
  Result<PublicKeys> advertise(std::string manifest = {}, std::string manifest_signature = {});
  // Stage 2: checks the roster (itself in it, only sites of the job and at least the minimum
  // sum of them, every key signed by its site when there is a verifier, a sane threshold), and
  // returns its encrypted shares, one per neighbourhood member.
  Result<std::vector<EncryptedShares>> share(const Roster& roster);
  // Stage 3: keeps the relayed shares (opened at stage 4) and masks the update, whose FedAvg
  // weight is `weight` (of the roster's total); error, and no update, when fewer than the
  // minimum sum shared keys.
  Result<std::vector<std::uint64_t>> mask(const ShareRelay& relay, const std::vector<const TensorSet*>& update, double weight,
                                          std::int64_t* clipped = nullptr);
  // Stage 4: the shares the coordinator needs, given U3 (`masked`). Answers once; error (and
  // nothing revealed) when U3 is not inside U2, holds fewer than the minimum sum, or fewer than
  // the threshold of this site's neighbourhood are in it.
  Result<std::vector<RevealedShare>> unmask(const std::vector<std::string>& masked);

  const std::vector<std::string>& neighbours() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// ---- the coordinator's side of one round ---------------------------------------------------
// It holds public keys, ciphertexts it cannot read, a running sum of masked vectors and, at the
// end, the shares it needs: never one site's update in the clear.
class Aggregator {
 public:
  // `minimum_sum`: the fewest masked updates whose sum it opens (minimum_sum() of the job).
  Aggregator(std::string context, std::vector<const TensorSet*> layouts, int minimum_sum);
  ~Aggregator();

  // Stage 1: a site's keys (the last one a site sends counts).
  Status add_keys(PublicKeys keys);
  // Closes stage 1. `weights` are the FedAvg weights of the sites still in the round (a site
  // that sent keys and is not in it is left out). The threshold is `threshold` or a majority of
  // the smallest neighbourhood, whichever is larger (sites refuse less). Error when fewer sent
  // keys, or fewer than the minimum sum.
  Result<Roster> roster(const std::map<std::string, double>& weights, int threshold, const GraphOptions& graph);
  // Stage 2: one site's encrypted shares (all addressed to its neighbourhood).
  Status add_shares(const std::string& site, std::vector<EncryptedShares> shares);
  // Closes stage 2: for each site of U2, what to relay to it.
  Result<std::map<std::string, ShareRelay>> relays();
  // Stage 3: one site's masked update (a site of U2, once).
  Status add_masked(const std::string& site, const std::vector<std::uint64_t>& masked);
  // Whether stage 3 could close now: error while fewer than the threshold of some neighbourhood
  // that matters (or fewer than the minimum sum) sent their masked update.
  Status can_unmask() const;
  // Closes stage 3 (no masked update is taken after it): U3, sorted; can_unmask()'s error when
  // it cannot close (the round fails; nothing was revealed).
  Result<std::vector<std::string>> survivors();
  // Stage 4: a survivor's shares; refused whole when it reveals both secrets of one site, or a
  // secret the coordinator did not ask for.
  Status add_revealed(const std::string& site, const std::vector<RevealedShare>& shares);
  // Whether enough shares arrived to finish.
  bool can_finish() const;
  // The weighted average of U3's updates, in the layouts' shapes and dtypes.
  Result<std::vector<TensorSet>> finish();

  const std::set<std::string>& keyed() const;
  const std::set<std::string>& shared() const;
  const std::set<std::string>& masked() const;
  double weight_of(const std::string& site) const;  // its FedAvg weight in the roster; 0 if not in it

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace fedda::secagg
