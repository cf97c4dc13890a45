// PeerSecurity: how daemons of one cluster authenticate each other on the
// Peer service (TCP): mutual TLS, a cluster secret, or nothing (one host,
// development). Loaded once at start from DaemonConfig (peer_tls_*,
// peer_secret_file), immutable afterwards, shared by the Peer server (its
// credentials; PeerGate checks each call) and the Peer client (its channel
// credentials and the proof each call carries).
//
// Cluster secret: each call carries, in metadata, the caller's advertise
// address, the time, a random nonce and HMAC-SHA256(secret, method, caller,
// time, nonce, request bytes). The secret itself never travels; the request
// cannot be altered, moved to another method or re-sent (PeerGate bounds the
// time and remembers nonces). The traffic is plaintext: an observer reads
// requests and replies, and replies are not authenticated.
//
// Mutual TLS: gRPC's SSL credentials; both sides present a certificate of
// the cluster's CA, and a caller is who its certificate's subject
// alternative names say. Peers are dialled by their advertise host, which
// the server's certificate must name (DNS or IP SAN).
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <google/protobuf/message.h>

#include "epx/status.h"
#include "epx/v1/config.pb.h"

namespace epx::daemon {

// Metadata of a Peer call (lower case, as gRPC requires).
inline constexpr char kPeerCallerKey[] = "epx-peer-address";  // the caller's advertise address
inline constexpr char kPeerTimeKey[] = "epx-auth-time";       // unix time in ms, decimal
inline constexpr char kPeerNonceKey[] = "epx-auth-nonce";     // 32 hex digits
inline constexpr char kPeerMacKey[] = "epx-auth-mac";         // HMAC-SHA256, 64 hex digits

// The Peer methods as proofs name them (gRPC's full method names).
inline constexpr char kPeerRegister[] = "/epx.v1.Peer/Register";
inline constexpr char kPeerLeave[] = "/epx.v1.Peer/Leave";
inline constexpr char kPeerNotify[] = "/epx.v1.Peer/Notify";
inline constexpr char kPeerPing[] = "/epx.v1.Peer/Ping";
inline constexpr char kPeerPublish[] = "/epx.v1.Peer/Publish";
inline constexpr char kPeerBarrier[] = "/epx.v1.Peer/Barrier";

class PeerSecurity {
 public:
  enum class Mode { kNone, kSecret, kTls };
  using Clock = std::chrono::system_clock;

  // Reads the files `config` names. Refuses a secret or private key file
  // that group or others may access, a secret shorter than 16 bytes, PEM
  // files that do not parse, a key that does not match the certificate, a
  // certificate the CA does not verify (expired, other CA) or that names no
  // DNS or IP subject alternative name. Errors name the field and the file.
  static Result<std::shared_ptr<const PeerSecurity>> load(const v1::DaemonConfig& config);
  // A secret given directly (tests that speak for a member daemon).
  static std::shared_ptr<const PeerSecurity> with_secret(std::string secret);
  static std::shared_ptr<const PeerSecurity> none();

  Mode mode() const { return mode_; }
  // One line for logs and --check-config.
  std::string describe() const;
  // Whether this daemon's own certificate names `host` (kTls; false otherwise).
  bool certificate_names(const std::string& host) const;

  std::shared_ptr<grpc::ServerCredentials> server_credentials() const;
  std::shared_ptr<grpc::ChannelCredentials> channel_credentials() const;

  // Client side: states `caller` (this daemon's advertise address) in the
  // call's metadata and, with a secret, adds the proof of `method` with
  // `request` made at `now`.
  void prove(grpc::ClientContext* context, const std::string& method, const google::protobuf::Message& request,
             const std::string& caller, Clock::time_point now) const;

  // The proof (64 hex digits) of one call; both sides compute it. `time` and
  // `nonce` are the metadata's text. Empty without a secret.
  std::string mac(const std::string& method, const std::string& caller, const std::string& time,
                  const std::string& nonce, const google::protobuf::Message& request) const;

 private:
  PeerSecurity() = default;

  Mode mode_ = Mode::kNone;
  std::string secret_;
  std::string secret_file_;
  std::string ca_pem_, cert_pem_, key_pem_;
  std::string cert_file_;
  std::vector<std::string> names_;  // DNS and IP SANs of our certificate
};

// Whether `host` (a DNS name or an IP literal, IPv6 with or without
// brackets) is one of `names` (certificate SANs as gRPC and OpenSSL print
// them). DNS names compare case-insensitively, IP addresses by value.
bool names_host(const std::vector<std::string>& names, const std::string& host);

// The IP address of a literal host ("10.0.0.5", "[::1]", "::ffff:1.2.3.4"
// -> "1.2.3.4"), in one canonical text; empty when `host` is not an IP.
std::string canonical_ip(const std::string& host);

}  // namespace epx::daemon
