#include "daemon/control/peer_gate.h"

#include <openssl/crypto.h>

#include <cctype>

#include <spdlog/spdlog.h>

#include "daemon/config/config.h"

namespace epx::daemon {
namespace {

constexpr int kLogBurst = 10;
constexpr std::chrono::seconds kLogWindow{10};

Status unauthenticated(const std::string& message) { return Status(StatusCode::kUnauthenticated, message); }

std::string percent_decoded(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

bool all_digits(const std::string& s) {
  if (s.empty() || s.size() > 18) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

}  // namespace

std::string peer_ip(const std::string& peer) {
  const std::string s = percent_decoded(peer);
  std::string rest;
  if (s.rfind("ipv4:", 0) == 0 || s.rfind("ipv6:", 0) == 0) {
    rest = s.substr(5);
  } else {
    return "";
  }
  auto hp = split_host_port(rest);
  return hp.ok() ? canonical_ip(hp->first) : "";
}

PeerCallFacts PeerCallFacts::of(const grpc::ServerContextBase& context) {
  PeerCallFacts f;
  f.peer = context.peer();
  for (const char* key : {kPeerCallerKey, kPeerTimeKey, kPeerNonceKey, kPeerMacKey}) {
    auto it = context.client_metadata().find(key);
    if (it != context.client_metadata().end()) f.metadata[key] = std::string(it->second.data(), it->second.size());
  }
  if (auto auth = context.auth_context(); auth && auth->IsPeerAuthenticated()) {
    f.tls_authenticated = true;
    for (const auto& name : auth->FindPropertyValues(GRPC_X509_SAN_PROPERTY_NAME)) {
      f.certificate_names.emplace_back(name.data(), name.size());
    }
  }
  return f;
}

Status PeerCaller::may_act_for(const std::string& registered_address, const std::string& what) const {
  if (address == registered_address) return Status();
  return permission_denied("daemon " + address + " may not " + what + ": that belongs to the daemon at " +
                           registered_address);
}

Result<PeerCaller> PeerGate::admit(const PeerCallFacts& call, const std::string& method,
                                   const google::protobuf::Message& request, Clock::time_point now) {
  auto caller = check(call, method, request, now);
  if (!caller.ok()) log_refusal(call.peer, method, caller.status());
  return caller;
}

Result<PeerCaller> PeerGate::check(const PeerCallFacts& call, const std::string& method,
                                   const google::protobuf::Message& request, Clock::time_point now) {
  auto stated = call.metadata.find(kPeerCallerKey);
  if (stated == call.metadata.end() || stated->second.empty()) {
    return unauthenticated("Peer call without the caller's address (" + std::string(kPeerCallerKey) + ")");
  }
  PeerCaller caller{stated->second, call.peer};
  switch (security_->mode()) {
    case PeerSecurity::Mode::kSecret:
      EPX_RETURN_IF_ERROR(check_proof(call, method, caller.address, request, now));
      break;
    case PeerSecurity::Mode::kTls:
      // The handshake already refused certificates of other CAs; this is
      // a second line should a server be started without client checks.
      if (!call.tls_authenticated) return unauthenticated("Peer call without a verified client certificate");
      break;
    case PeerSecurity::Mode::kNone: break;
  }
  auto hp = split_host_port(caller.address);
  if (!hp.ok()) return invalid_argument("caller address: " + hp.status().message());
  const std::string& host = hp->first;
  // Whatever the mode: a stated IP must be where the call came from.
  if (const std::string ip = canonical_ip(host); !ip.empty()) {
    const std::string source = peer_ip(call.peer);
    if (source != ip) {
      return permission_denied("caller states address " + caller.address + " but calls from " +
                               (source.empty() ? call.peer : source));
    }
  }
  if (security_->mode() == PeerSecurity::Mode::kTls && !names_host(call.certificate_names, host)) {
    std::string names;
    for (const auto& n : call.certificate_names) names += (names.empty() ? "" : ", ") + n;
    return permission_denied("caller states address " + caller.address + " but its certificate names only " +
                             (names.empty() ? std::string("nothing") : names));
  }
  return caller;
}

Status PeerGate::check_proof(const PeerCallFacts& call, const std::string& method, const std::string& caller,
                             const google::protobuf::Message& request, Clock::time_point now) {
  auto time = call.metadata.find(kPeerTimeKey);
  auto nonce = call.metadata.find(kPeerNonceKey);
  auto mac = call.metadata.find(kPeerMacKey);
  if (time == call.metadata.end() || nonce == call.metadata.end() || mac == call.metadata.end()) {
    return unauthenticated("Peer call without a cluster-secret proof (" + std::string(kPeerMacKey) + ")");
  }
  if (!all_digits(time->second)) return unauthenticated("Peer call with a malformed proof time");
  const int64_t at_ms = std::stoll(time->second);
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  const int64_t skew_ms = std::chrono::duration_cast<std::chrono::milliseconds>(kMaxSkew).count();
  if (at_ms < now_ms - skew_ms || at_ms > now_ms + skew_ms) {
    return unauthenticated("Peer call proof made " + std::to_string((now_ms - at_ms) / 1000) +
                           " s from this daemon's clock, beyond " + std::to_string(kMaxSkew.count()) +
                           " s (stale, replayed, or clocks out of sync)");
  }
  if (nonce->second.size() != 32) return unauthenticated("Peer call with a malformed proof nonce");
  const std::string expected = security_->mac(method, caller, time->second, nonce->second, request);
  if (expected.empty() || mac->second.size() != expected.size() ||
      CRYPTO_memcmp(mac->second.data(), expected.data(), expected.size()) != 0) {
    return unauthenticated("Peer call with a wrong cluster-secret proof (another secret, or altered in transit)");
  }

  std::lock_guard<std::mutex> lock(mu_);
  while (!expiry_.empty() && expiry_.begin()->first < now_ms) {
    seen_.erase(expiry_.begin()->second);
    expiry_.erase(expiry_.begin());
  }
  if (seen_.count(expected)) return unauthenticated("Peer call proof replayed");
  if (seen_.size() >= kMaxRemembered) {
    return resource_exhausted("more than " + std::to_string(kMaxRemembered) + " Peer calls within " +
                              std::to_string(kMaxSkew.count()) + " s; try again");
  }
  seen_.insert(expected);
  expiry_.emplace(at_ms + skew_ms, expected);
  return Status();
}

void PeerGate::log_refusal(const std::string& from, const std::string& method, const Status& why) {
  uint64_t dropped = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = Clock::now();
    if (now - log_window_start_ >= kLogWindow) {
      log_window_start_ = now;
      logged_ = 0;
      dropped = suppressed_;
      suppressed_ = 0;
    }
    if (logged_ >= kLogBurst) {
      ++suppressed_;
      return;
    }
    ++logged_;
  }
  if (dropped) spdlog::warn("peer: {} more refused Peer calls were not logged", dropped);
  spdlog::warn("peer: refused {} from {}: {}", method, from, why.to_string());
}

}  // namespace epx::daemon
