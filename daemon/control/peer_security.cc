#include "daemon/control/peer_security.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <strings.h>
#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

namespace epx::daemon {
namespace {

// Longer files are not secrets someone meant to write.
constexpr size_t kMaxSecretBytes = 4096;
constexpr size_t kMinSecretBytes = 16;

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct StoreFree {
  void operator()(X509_STORE* s) const { X509_STORE_free(s); }
};
struct StoreCtxFree {
  void operator()(X509_STORE_CTX* c) const { X509_STORE_CTX_free(c); }
};
struct NamesFree {
  void operator()(GENERAL_NAMES* n) const { GENERAL_NAMES_free(n); }
};
struct ChainFree {
  void operator()(STACK_OF(X509) * s) const { sk_X509_pop_free(s, X509_free); }
};
using Bio = std::unique_ptr<BIO, BioFree>;
using Cert = std::unique_ptr<X509, X509Free>;
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;
using Chain = std::unique_ptr<STACK_OF(X509), ChainFree>;

std::string openssl_error() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "no detail from OpenSSL";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

std::string octal_mode(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

// `field` names the config field in every error.
Result<std::string> read_file(const std::string& field, const std::string& path, bool private_file) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return invalid_argument(field + ": cannot stat " + path + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return invalid_argument(field + ": " + path + " is not a regular file");
  if (private_file && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    return permission_denied(field + ": " + path + " has mode " + octal_mode(st.st_mode) +
                             ": group and others must have no access to it (chmod 600 " + path + ")");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return invalid_argument(field + ": cannot read " + path + ": " + std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string to_hex(const unsigned char* data, size_t n) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 15];
  }
  return out;
}

// The request as both ends serialize it: canonical (deterministic) bytes of
// the parsed message, so the proof does not depend on how the sender's
// library laid out the wire bytes.
std::string canonical_bytes(const google::protobuf::Message& request) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream out(&bytes);
    google::protobuf::io::CodedOutputStream coded(&out);
    coded.SetSerializationDeterministic(true);
    request.SerializeToCodedStream(&coded);
  }
  return bytes;
}

Result<Chain> parse_certificates(const std::string& field, const std::string& path, const std::string& pem) {
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Chain chain(sk_X509_new_null());
  if (!bio || !chain) return internal_error(field + ": out of memory parsing " + path);
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) sk_X509_push(chain.get(), x);
  ERR_clear_error();  // the read that ended the loop
  if (sk_X509_num(chain.get()) == 0) return invalid_argument(field + ": " + path + " holds no PEM certificate");
  return chain;
}

std::vector<std::string> subject_alt_names(X509* cert) {
  std::vector<std::string> out;
  std::unique_ptr<GENERAL_NAMES, NamesFree> names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  if (!names) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names.get(), i);
    if (n->type == GEN_DNS) {
      const ASN1_IA5STRING* s = n->d.dNSName;
      out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), ASN1_STRING_length(s));
    } else if (n->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* s = n->d.iPAddress;
      char buf[INET6_ADDRSTRLEN] = {};
      const int len = ASN1_STRING_length(s);
      const int family = len == 4 ? AF_INET : len == 16 ? AF_INET6 : 0;
      if (family != 0 && inet_ntop(family, ASN1_STRING_get0_data(s), buf, sizeof(buf)) != nullptr) {
        out.push_back(canonical_ip(buf));
      }
    }
  }
  return out;
}

// Checks that the key belongs to the certificate and the CA verifies it.
Status check_certificate(const v1::DaemonConfig& config, const std::string& cert_pem, const std::string& key_pem,
                         const std::string& ca_pem, std::vector<std::string>* names) {
  EPX_ASSIGN_OR_RETURN(Chain chain, parse_certificates("peer_tls_cert_file", config.peer_tls_cert_file(), cert_pem));
  EPX_ASSIGN_OR_RETURN(Chain cas, parse_certificates("peer_tls_ca_file", config.peer_tls_ca_file(), ca_pem));
  X509* leaf = sk_X509_value(chain.get(), 0);

  Bio key_bio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  Key key(key_bio ? PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) {
    return invalid_argument("peer_tls_key_file: " + config.peer_tls_key_file() +
                            " holds no unencrypted PEM private key: " + openssl_error());
  }
  if (X509_check_private_key(leaf, key.get()) != 1) {
    ERR_clear_error();
    return invalid_argument("peer_tls_key_file: " + config.peer_tls_key_file() +
                            " is not the key of the certificate in " + config.peer_tls_cert_file());
  }

  std::unique_ptr<X509_STORE, StoreFree> store(X509_STORE_new());
  std::unique_ptr<X509_STORE_CTX, StoreCtxFree> ctx(X509_STORE_CTX_new());
  if (!store || !ctx) return internal_error("peer_tls_ca_file: out of memory");
  for (int i = 0; i < sk_X509_num(cas.get()); ++i) X509_STORE_add_cert(store.get(), sk_X509_value(cas.get(), i));
  if (X509_STORE_CTX_init(ctx.get(), store.get(), leaf, chain.get()) != 1) {
    return internal_error("peer_tls_ca_file: " + openssl_error());
  }
  if (X509_verify_cert(ctx.get()) != 1) {
    const std::string why = X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
    ERR_clear_error();
    return invalid_argument("peer_tls_cert_file: " + config.peer_tls_cert_file() + " does not verify against " +
                            config.peer_tls_ca_file() + " (" + why +
                            "); the cluster's daemons would refuse this daemon");
  }
  *names = subject_alt_names(leaf);
  if (names->empty()) {
    return invalid_argument("peer_tls_cert_file: " + config.peer_tls_cert_file() +
                            " names no DNS or IP subject alternative name; peers dial this daemon by its "
                            "advertise host and check that its certificate names it");
  }
  return Status();
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

}  // namespace

std::string canonical_ip(const std::string& host_in) {
  std::string host = host_in;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned char buf[16] = {};
  char text[INET6_ADDRSTRLEN] = {};
  if (inet_pton(AF_INET, host.c_str(), buf) == 1) {
    return inet_ntop(AF_INET, buf, text, sizeof(text)) ? text : "";
  }
  if (inet_pton(AF_INET6, host.c_str(), buf) != 1) return "";
  static const unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(buf, kMapped, sizeof(kMapped)) == 0) {
    return inet_ntop(AF_INET, buf + 12, text, sizeof(text)) ? text : "";
  }
  return inet_ntop(AF_INET6, buf, text, sizeof(text)) ? text : "";
}

bool names_host(const std::vector<std::string>& names, const std::string& host) {
  const std::string ip = canonical_ip(host);
  for (const auto& n : names) {
    if (!ip.empty()) {
      if (canonical_ip(n) == ip) return true;
    } else if (n.size() == host.size() && strcasecmp(n.c_str(), host.c_str()) == 0) {
      return true;
    }
  }
  return false;
}

Result<std::shared_ptr<const PeerSecurity>> PeerSecurity::load(const v1::DaemonConfig& config) {
  std::shared_ptr<PeerSecurity> s(new PeerSecurity());
  if (!config.peer_secret_file().empty()) {
    EPX_ASSIGN_OR_RETURN(std::string secret, read_file("peer_secret_file", config.peer_secret_file(), true));
    while (!secret.empty() && std::isspace(static_cast<unsigned char>(secret.back()))) secret.pop_back();
    if (secret.size() < kMinSecretBytes || secret.size() > kMaxSecretBytes) {
      return invalid_argument("peer_secret_file: " + config.peer_secret_file() + " holds " +
                              std::to_string(secret.size()) + " bytes; a secret has " +
                              std::to_string(kMinSecretBytes) + ".." + std::to_string(kMaxSecretBytes) +
                              " (e.g. `openssl rand -hex 32`)");
    }
    s->mode_ = Mode::kSecret;
    s->secret_ = std::move(secret);
    s->secret_file_ = config.peer_secret_file();
  } else if (!config.peer_tls_cert_file().empty()) {
    EPX_ASSIGN_OR_RETURN(s->cert_pem_, read_file("peer_tls_cert_file", config.peer_tls_cert_file(), false));
    EPX_ASSIGN_OR_RETURN(s->key_pem_, read_file("peer_tls_key_file", config.peer_tls_key_file(), true));
    EPX_ASSIGN_OR_RETURN(s->ca_pem_, read_file("peer_tls_ca_file", config.peer_tls_ca_file(), false));
    EPX_RETURN_IF_ERROR(check_certificate(config, s->cert_pem_, s->key_pem_, s->ca_pem_, &s->names_));
    s->mode_ = Mode::kTls;
    s->cert_file_ = config.peer_tls_cert_file();
  }
  return std::shared_ptr<const PeerSecurity>(std::move(s));
}

std::shared_ptr<const PeerSecurity> PeerSecurity::with_secret(std::string secret) {
  std::shared_ptr<PeerSecurity> s(new PeerSecurity());
  s->mode_ = Mode::kSecret;
  s->secret_ = std::move(secret);
  return s;
}

std::shared_ptr<const PeerSecurity> PeerSecurity::none() { return std::shared_ptr<PeerSecurity>(new PeerSecurity()); }

std::string PeerSecurity::describe() const {
  switch (mode_) {
    case Mode::kSecret: return "cluster secret from " + secret_file_ + " (HMAC-SHA256 proof per call; plaintext TCP)";
    case Mode::kTls: return "mutual TLS, certificate " + cert_file_ + " naming " + join(names_);
    case Mode::kNone: break;
  }
  return "none: the Peer port is UNAUTHENTICATED; anyone who reaches it can register, release and signal "
         "ranks of this daemon's jobs (set peer_secret_file or peer_tls_*)";
}

bool PeerSecurity::certificate_names(const std::string& host) const { return names_host(names_, host); }

std::shared_ptr<grpc::ServerCredentials> PeerSecurity::server_credentials() const {
  if (mode_ != Mode::kTls) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = ca_pem_;
  options.pem_key_cert_pairs.push_back({key_pem_, cert_pem_});
  return grpc::SslServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> PeerSecurity::channel_credentials() const {
  if (mode_ != Mode::kTls) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = ca_pem_;
  options.pem_private_key = key_pem_;
  options.pem_cert_chain = cert_pem_;
  return grpc::SslCredentials(options);
}

std::string PeerSecurity::mac(const std::string& method, const std::string& caller, const std::string& time,
                              const std::string& nonce, const google::protobuf::Message& request) const {
  if (mode_ != Mode::kSecret) return "";
  // Newline-separated: no field but the last (the request) may hold one
  // (gRPC metadata values are printable ASCII), so the input is unambiguous.
  std::string input = "epx-peer-v1\n" + method + "\n" + caller + "\n" + time + "\n" + nonce + "\n";
  input += canonical_bytes(request);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), secret_.data(), static_cast<int>(secret_.size()),
           reinterpret_cast<const unsigned char*>(input.data()), input.size(), out, &len) == nullptr) {
    ERR_clear_error();
    return "";  // never equal to a 64-digit proof: the call is refused
  }
  return to_hex(out, len);
}

void PeerSecurity::prove(grpc::ClientContext* context, const std::string& method,
                         const google::protobuf::Message& request, const std::string& caller,
                         Clock::time_point now) const {
  context->AddMetadata(kPeerCallerKey, caller);
  if (mode_ != Mode::kSecret) return;
  const std::string time =
      std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count());
  unsigned char raw[16];
  if (RAND_bytes(raw, sizeof(raw)) != 1) {
    // Without fresh randomness the call goes without proof and is refused
    // (UNAUTHENTICATED at the receiver): never a predictable nonce.
    ERR_clear_error();
    return;
  }
  const std::string nonce = to_hex(raw, sizeof(raw));
  context->AddMetadata(kPeerTimeKey, time);
  context->AddMetadata(kPeerNonceKey, nonce);
  context->AddMetadata(kPeerMacKey, mac(method, caller, time, nonce, request));
}

}  // namespace epx::daemon
