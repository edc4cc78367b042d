#pragma once
// Standard cryptographic constructions through OpenSSL's EVP API and libzmq; nothing here is
// home-made. Keys and signatures are byte strings (std::string); PEM for Ed25519 keys, Z85
// for CurveZMQ keys (the form libzmq's socket options take). Thread-safe.

#include <filesystem>
#include <string>
#include <string_view>

#include "fedda/common/result.h"

namespace fedda::crypto {

std::string sha256_hex(std::string_view data);
Result<std::string> random_bytes(std::size_t n);

// Ed25519 (RFC 8032): the consortium root signs kits, the coordinator signs models.
struct SigningKey {
  std::string private_pem;
  std::string public_pem;
};
Result<SigningKey> generate_signing_key();
Result<std::string> sign(const std::string& private_pem, std::string_view message);  // 64 bytes
// Error unless `signature` is `public_pem`'s signature of exactly `message`.
Status verify(const std::string& public_pem, std::string_view message, std::string_view signature);

// The fingerprint of an Ed25519 public key (PEM): "sha256:" and the hex SHA-256 of its 32 raw
// key bytes. A site pins its consortium's root by it (site.yaml `root_fingerprint:`).
Result<std::string> public_key_fingerprint(const std::string& public_pem);

// HMAC-SHA-256 of `message` under `key`, as 64 hex digits (keyed pseudonyms of subject ids).
Result<std::string> hmac_sha256_hex(std::string_view key, std::string_view message);

// Whether two secrets (tokens, digests) are equal, in time that does not depend on where they
// differ (OpenSSL's CRYPTO_memcmp); different lengths are unequal.
bool equal_secrets(std::string_view a, std::string_view b);

// AES-256-GCM with a random 96-bit nonce: sealed = nonce || ciphertext || 128-bit tag. `aad`
// is authenticated, not stored (bind a file to its purpose, so one cannot be swapped for another).
inline constexpr std::size_t kStorageKeyBytes = 32;
Result<std::string> seal(std::string_view key, std::string_view plaintext, std::string_view aad);
// Error when the key, the aad or any byte of `sealed` differs from what was sealed.
Result<std::string> open(std::string_view key, std::string_view sealed, std::string_view aad);

// Files at rest: written atomically and sealed under `key` with the file's name and `context`
// as associated data (so one sealed file cannot stand in for another: a round's weights name
// their job and round in `context`, and cannot be swapped between jobs or rolled back to another
// round); plain when `key` is empty. Reading a sealed file that was altered, renamed, sealed
// under another key or for another context is an error naming it.
Status write_sealed(const std::filesystem::path& path, const std::string& contents, const std::string& key,
                    std::string_view context = {});
Result<std::string> read_sealed(const std::filesystem::path& path, const std::string& key, std::string_view context = {});

// X25519 (RFC 7748) key agreement with raw 32-byte keys: the per-round keys of secure
// aggregation (secagg.h).
struct X25519KeyPair {
  std::string public_raw;  // 32 bytes
  std::string secret_raw;  // 32 bytes
};
Result<X25519KeyPair> generate_x25519();
// The shared secret of `secret_raw` and `peer_public_raw` (32 bytes); error on a key of the
// wrong length or a low-order peer key (an all-zero result).
Result<std::string> x25519(std::string_view secret_raw, std::string_view peer_public_raw);
// HKDF-SHA-256 (RFC 5869): `bytes` bytes of key material from `ikm`, bound to `salt` and `info`.
Result<std::string> hkdf_sha256(std::string_view ikm, std::string_view salt, std::string_view info, std::size_t bytes);
// The AES-256-CTR key stream of a 32-byte `key` (zero IV) into `out` (any length): the
// pseudo-random generator that expands a 32-byte mask seed over a whole update.
Status aes256_ctr_stream(std::string_view key, unsigned char* out, std::size_t bytes);

// CurveZMQ (Curve25519) key pairs, Z85-encoded (40 characters each).
struct CurveKeyPair {
  std::string public_z85;
  std::string secret_z85;
};
Result<CurveKeyPair> generate_curve_keypair();
Result<std::string> curve_public_of(const std::string& secret_z85);
// Z85 of 32 raw key bytes (as a ZAP request carries them).
std::string z85_of_key(std::string_view raw32);

}  // namespace fedda::crypto
