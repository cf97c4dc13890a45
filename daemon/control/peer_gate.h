// PeerGate: the Peer server's check of each call: who calls, and whether
// the call proves it (PeerSecurity). Handlers admit() a call first, then ask
// the caller whether it may act for the rank the call is about.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "daemon/control/peer_security.h"
#include "epx/status.h"

namespace epx::daemon {

// What the server knows of one call, taken from its ServerContext (of())
// or built by a test.
struct PeerCallFacts {
  std::string peer;                             // ServerContext::peer(): "ipv4:127.0.0.1:50312"
  std::map<std::string, std::string> metadata;  // the epx-* keys the caller sent (first value of each)
  bool tls_authenticated = false;               // the handshake verified a client certificate
  std::vector<std::string> certificate_names;   // its subject alternative names

  static PeerCallFacts of(const grpc::ServerContextBase& context);
};

// An admitted caller: a daemon of the cluster (or, without security, anyone
// who stated an address).
struct PeerCaller {
  std::string address;  // its advertise address, as it stated (and proved) it
  std::string from;     // the connection's peer, for logs

  // PERMISSION_DENIED unless the caller is the daemon at
  // `registered_address` (what a rank's Register named, or the job's
  // coordinator); `what` says what it tried, for the message.
  Status may_act_for(const std::string& registered_address, const std::string& what) const;
};

class PeerGate {
 public:
  using Clock = std::chrono::system_clock;
  // Proofs older or newer than this are refused; the replay memory holds
  // each proof this long past its time.
  static constexpr std::chrono::seconds kMaxSkew{30};
  // Most proofs remembered at once; beyond, calls are refused
  // (RESOURCE_EXHAUSTED) until old ones expire. Only valid proofs count.
  static constexpr size_t kMaxRemembered = 1u << 18;

  explicit PeerGate(std::shared_ptr<const PeerSecurity> security) : security_(std::move(security)) {}

  // Admits a call of `method` (gRPC's full name, "/epx.v1.Peer/Leave") with
  // `request` made at `now`:
  // - UNAUTHENTICATED: no caller address; with a secret, a missing, stale,
  //   wrong or replayed proof; with TLS, no verified certificate;
  // - PERMISSION_DENIED: the stated address contradicts the connection: its
  //   host is an IP that is not the connection's source, or (TLS) a host the
  //   certificate does not name.
  // Refusals are logged with the caller's address, rate-limited.
  Result<PeerCaller> admit(const PeerCallFacts& call, const std::string& method,
                           const google::protobuf::Message& request, Clock::time_point now);

  // Logs a refusal of an admitted call (wrong owner, bad values), within the
  // same rate limit.
  void log_refusal(const std::string& from, const std::string& method, const Status& why);

 private:
  Result<PeerCaller> check(const PeerCallFacts& call, const std::string& method,
                           const google::protobuf::Message& request, Clock::time_point now);
  Status check_proof(const PeerCallFacts& call, const std::string& method, const std::string& caller,
                     const google::protobuf::Message& request, Clock::time_point now);

  const std::shared_ptr<const PeerSecurity> security_;

  std::mutex mu_;
  // Proofs seen, by MAC, and their expiry (ms since the epoch) for pruning.
  std::unordered_set<std::string> seen_;
  std::multimap<int64_t, std::string> expiry_;
  // Refusal log budget: kLogBurst lines per kLogWindow, then a count.
  Clock::time_point log_window_start_{};
  int logged_ = 0;
  uint64_t suppressed_ = 0;
};

// The IP address of a ServerContext::peer() string ("ipv4:10.0.0.5:4242",
// "ipv6:[::1]:4242", "ipv6:%5B::1%5D:4242"), canonical (canonical_ip());
// empty when it has none (e.g. a unix socket).
std::string peer_ip(const std::string& peer);

}  // namespace epx::daemon
