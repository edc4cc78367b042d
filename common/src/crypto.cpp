#include "fedda/common/crypto.h"

#include "fedda/common/files.h"

#include <algorithm>
#include <memory>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <zmq.h>

namespace fedda::crypto {

namespace {

std::string openssl_error(const std::string& what) {
  const unsigned long code = ERR_get_error();
  char text[256] = "unknown error";
  if (code != 0) ERR_error_string_n(code, text, sizeof text);
  ERR_clear_error();
  return what + ": " + text;
}

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const { BIO_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(n));
}

Result<Pkey> read_private(const std::string& pem) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Pkey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return make_error(openssl_error("not a PEM private key"));
  if (EVP_PKEY_id(key.get()) != EVP_PKEY_ED25519) return make_error("not an Ed25519 key");
  return key;
}

Result<Pkey> read_public(const std::string& pem) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Pkey key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return make_error(openssl_error("not a PEM public key"));
  if (EVP_PKEY_id(key.get()) != EVP_PKEY_ED25519) return make_error("not an Ed25519 key");
  return key;
}

}  // namespace

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < length; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

Result<std::string> random_bytes(std::size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    return make_error(openssl_error("random bytes"));
  }
  return out;
}

Result<SigningKey> generate_signing_key() {
  EVP_PKEY* raw = nullptr;
  std::unique_ptr<EVP_PKEY_CTX, void (*)(EVP_PKEY_CTX*)> ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr),
                                                             EVP_PKEY_CTX_free);
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1 || EVP_PKEY_keygen(ctx.get(), &raw) != 1) {
    return make_error(openssl_error("Ed25519 key generation"));
  }
  Pkey key(raw);
  std::unique_ptr<BIO, BioFree> priv(BIO_new(BIO_s_mem())), pub(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_PrivateKey(priv.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1 ||
      PEM_write_bio_PUBKEY(pub.get(), key.get()) != 1) {
    return make_error(openssl_error("Ed25519 key encoding"));
  }
  return SigningKey{bio_text(priv.get()), bio_text(pub.get())};
}

Result<std::string> public_key_fingerprint(const std::string& public_pem) {
  auto key = read_public(public_pem);
  if (!key) return key.error();
  unsigned char raw[32];
  std::size_t n = sizeof raw;
  if (EVP_PKEY_get_raw_public_key(key->get(), raw, &n) != 1 || n != sizeof raw) {
    return make_error(openssl_error("cannot read the raw public key"));
  }
  return "sha256:" + sha256_hex(std::string_view(reinterpret_cast<const char*>(raw), n));
}

Result<std::string> hmac_sha256_hex(std::string_view key, std::string_view message) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  std::size_t length = 0;
  if (EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), key.size(),
                reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest, sizeof digest,
                &length) == nullptr) {
    return make_error(openssl_error("HMAC-SHA-256"));
  }
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < length; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

bool equal_secrets(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Result<std::string> sign(const std::string& private_pem, std::string_view message) {
  auto key = read_private(private_pem);
  if (!key) return key.error();
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  std::size_t length = 0;
  if (EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key->get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &length, reinterpret_cast<const unsigned char*>(message.data()),
                     message.size()) != 1) {
    return make_error(openssl_error("signing"));
  }
  std::string signature(length, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &length,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1) {
    return make_error(openssl_error("signing"));
  }
  signature.resize(length);
  return signature;
}

Status verify(const std::string& public_pem, std::string_view message, std::string_view signature) {
  auto key = read_public(public_pem);
  if (!key) return key.error();
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key->get()) != 1) {
    return make_error(openssl_error("verification"));
  }
  const int ok = EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                                  reinterpret_cast<const unsigned char*>(message.data()), message.size());
  ERR_clear_error();
  if (ok != 1) return make_error("signature does not verify");
  return Status::success();
}

namespace {
constexpr std::size_t kNonceBytes = 12, kTagBytes = 16;
}

Result<std::string> seal(std::string_view key, std::string_view plaintext, std::string_view aad) {
  if (key.size() != kStorageKeyBytes) return make_error("AES-256-GCM needs a 32-byte key");
  auto nonce = random_bytes(kNonceBytes);
  if (!nonce) return nonce.error();
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
  std::string out = *nonce;
  out.resize(kNonceBytes + plaintext.size() + kTagBytes);
  auto* cipher = reinterpret_cast<unsigned char*>(out.data()) + kNonceBytes;
  int n = 0, total = 0;
  if (EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, reinterpret_cast<const unsigned char*>(key.data()),
                         reinterpret_cast<const unsigned char*>(nonce->data())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const unsigned char*>(aad.data()),
                        static_cast<int>(aad.size())) != 1) {
    return make_error(openssl_error("encryption"));
  }
  // EVP takes int lengths: feed large inputs in chunks.
  std::size_t offset = 0;
  while (offset < plaintext.size()) {
    const int chunk = static_cast<int>(std::min<std::size_t>(plaintext.size() - offset, 1u << 30));
    if (EVP_EncryptUpdate(ctx.get(), cipher + total, &n,
                          reinterpret_cast<const unsigned char*>(plaintext.data()) + offset, chunk) != 1) {
      return make_error(openssl_error("encryption"));
    }
    total += n;
    offset += static_cast<std::size_t>(chunk);
  }
  if (EVP_EncryptFinal_ex(ctx.get(), cipher + total, &n) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes, cipher + plaintext.size()) != 1) {
    return make_error(openssl_error("encryption"));
  }
  return out;
}

Result<std::string> open(std::string_view key, std::string_view sealed, std::string_view aad) {
  if (key.size() != kStorageKeyBytes) return make_error("AES-256-GCM needs a 32-byte key");
  if (sealed.size() < kNonceBytes + kTagBytes) return make_error("too short to be sealed data");
  const std::size_t length = sealed.size() - kNonceBytes - kTagBytes;
  const auto* bytes = reinterpret_cast<const unsigned char*>(sealed.data());
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
  std::string out(length, '\0');
  int n = 0, total = 0;
  if (EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, reinterpret_cast<const unsigned char*>(key.data()),
                         bytes) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const unsigned char*>(aad.data()),
                        static_cast<int>(aad.size())) != 1) {
    return make_error(openssl_error("decryption"));
  }
  std::size_t offset = 0;
  while (offset < length) {
    const int chunk = static_cast<int>(std::min<std::size_t>(length - offset, 1u << 30));
    if (EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(out.data()) + total, &n,
                          bytes + kNonceBytes + offset, chunk) != 1) {
      return make_error(openssl_error("decryption"));
    }
    total += n;
    offset += static_cast<std::size_t>(chunk);
  }
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes,
                          const_cast<unsigned char*>(bytes + kNonceBytes + length)) != 1 ||
      EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(out.data()) + total, &n) != 1) {
    ERR_clear_error();
    return make_error("authentication failed: the data was altered, or the key or context is wrong");
  }
  return out;
}

namespace {
std::string sealed_aad(const std::filesystem::path& path, std::string_view context) {
  std::string aad = path.filename().string();
  if (!context.empty()) aad.append("\n").append(context);
  return aad;
}
}  // namespace

Status write_sealed(const std::filesystem::path& path, const std::string& contents, const std::string& key,
                    std::string_view context) {
  if (key.empty()) return files::write_atomically(path, contents);
  auto sealed = seal(key, contents, sealed_aad(path, context));
  if (!sealed) return make_error(path.string() + ": " + sealed.error().message);
  return files::write_atomically(path, *sealed);
}

Result<std::string> read_sealed(const std::filesystem::path& path, const std::string& key, std::string_view context) {
  auto bytes = files::read_all(path);
  if (!bytes || key.empty()) return bytes;
  auto opened = open(key, *bytes, sealed_aad(path, context));
  if (!opened) return make_error(path.string() + ": refused: " + opened.error().message);
  return opened;
}

Result<X25519KeyPair> generate_x25519() {
  Pkey key;
  {
    std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, nullptr),
                                                                   EVP_PKEY_CTX_free);
    EVP_PKEY* raw = nullptr;
    if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1 || EVP_PKEY_keygen(ctx.get(), &raw) != 1) {
      return make_error(openssl_error("X25519 key generation"));
    }
    key.reset(raw);
  }
  X25519KeyPair pair;
  pair.public_raw.resize(32);
  pair.secret_raw.resize(32);
  std::size_t n = 32, m = 32;
  if (EVP_PKEY_get_raw_public_key(key.get(), reinterpret_cast<unsigned char*>(pair.public_raw.data()), &n) != 1 ||
      EVP_PKEY_get_raw_private_key(key.get(), reinterpret_cast<unsigned char*>(pair.secret_raw.data()), &m) != 1 || n != 32 ||
      m != 32) {
    return make_error(openssl_error("X25519 raw keys"));
  }
  return pair;
}

Result<std::string> x25519(std::string_view secret_raw, std::string_view peer_public_raw) {
  if (secret_raw.size() != 32 || peer_public_raw.size() != 32) return make_error("X25519: keys must be 32 bytes");
  Pkey own(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, reinterpret_cast<const unsigned char*>(secret_raw.data()), 32));
  Pkey peer(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, reinterpret_cast<const unsigned char*>(peer_public_raw.data()), 32));
  if (!own || !peer) return make_error(openssl_error("X25519 keys"));
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(EVP_PKEY_CTX_new(own.get(), nullptr), EVP_PKEY_CTX_free);
  std::string shared(32, '\0');
  std::size_t n = shared.size();
  // OpenSSL refuses a peer key whose result is all zeros (a low-order point).
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 || EVP_PKEY_derive_set_peer(ctx.get(), peer.get()) != 1 ||
      EVP_PKEY_derive(ctx.get(), reinterpret_cast<unsigned char*>(shared.data()), &n) != 1 || n != 32) {
    return make_error(openssl_error("X25519 key agreement"));
  }
  return shared;
}

Result<std::string> hkdf_sha256(std::string_view ikm, std::string_view salt, std::string_view info, std::size_t bytes) {
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr), EVP_PKEY_CTX_free);
  std::string out(bytes, '\0');
  std::size_t n = bytes;
  const auto u = [](std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); };
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 || EVP_PKEY_CTX_set_hkdf_md(ctx.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_salt(ctx.get(), u(salt), static_cast<int>(salt.size())) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_key(ctx.get(), u(ikm), static_cast<int>(ikm.size())) != 1 ||
      EVP_PKEY_CTX_add1_hkdf_info(ctx.get(), u(info), static_cast<int>(info.size())) != 1 ||
      EVP_PKEY_derive(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &n) != 1 || n != bytes) {
    return make_error(openssl_error("HKDF-SHA-256"));
  }
  return out;
}

Status aes256_ctr_stream(std::string_view key, unsigned char* out, std::size_t bytes) {
  if (key.size() != 32) return make_error("AES-256-CTR: the key must be 32 bytes");
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
  const unsigned char iv[16] = {};
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_ctr(), nullptr, reinterpret_cast<const unsigned char*>(key.data()), iv) != 1) {
    return make_error(openssl_error("AES-256-CTR"));
  }
  // The key stream is the encryption of zeros, produced in place a block of 64 KiB at a time.
  std::fill(out, out + bytes, static_cast<unsigned char>(0));
  constexpr std::size_t kChunk = 1 << 16;
  for (std::size_t at = 0; at < bytes; at += kChunk) {
    const int n = static_cast<int>(std::min(kChunk, bytes - at));
    int written = 0;
    if (EVP_EncryptUpdate(ctx.get(), out + at, &written, out + at, n) != 1 || written != n) {
      return make_error(openssl_error("AES-256-CTR"));
    }
  }
  return {};
}

Result<CurveKeyPair> generate_curve_keypair() {
  char pub[41] = {}, sec[41] = {};
  if (zmq_curve_keypair(pub, sec) != 0) return make_error("this libzmq has no CURVE support");
  return CurveKeyPair{pub, sec};
}

Result<std::string> curve_public_of(const std::string& secret_z85) {
  char pub[41] = {};
  if (secret_z85.size() != 40 || zmq_curve_public(pub, secret_z85.c_str()) != 0) {
    return make_error("not a Z85 CurveZMQ secret key");
  }
  return std::string(pub);
}

std::string z85_of_key(std::string_view raw32) {
  char text[41] = {};
  if (raw32.size() != 32 || !zmq_z85_encode(text, reinterpret_cast<const uint8_t*>(raw32.data()), 32)) return {};
  return text;
}

}  // namespace fedda::crypto
