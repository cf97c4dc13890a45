// Fuzz target: the Peer service's admission of a call (daemon/control/
// peer_gate.h) under each security mode it can be given without files:
// no security, and a cluster secret. The input states the connection's
// peer string, the epx-* metadata and the request; with the secret, the
// input may ask for a correct proof of what it states, so the checks
// behind the proof (replay memory, stated address against the connection)
// are reached too. The address helpers they use (peer_ip, canonical_ip,
// names_host) are driven directly as well.
#include <cstdlib>
#include <string>
#include <vector>

#include "daemon/control/peer_gate.h"
#include "epx/v1/peer.pb.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using epx::daemon::PeerCallFacts;
using epx::daemon::PeerGate;
using epx::daemon::PeerSecurity;
using epx::fuzz::FuzzInput;

const char kSecret[] = "0123456789abcdef0123456789abcdef";
const char* const kMethods[] = {epx::daemon::kPeerRegister, epx::daemon::kPeerLeave,   epx::daemon::kPeerNotify,
                                epx::daemon::kPeerPing,     epx::daemon::kPeerPublish, epx::daemon::kPeerBarrier};

struct Gates {
  std::shared_ptr<const PeerSecurity> secret = PeerSecurity::with_secret(kSecret);
  PeerGate open{PeerSecurity::none()};
  PeerGate with_secret{secret};
};

Gates& gates() {
  static Gates* g = new Gates();  // the replay memory persists, as in a daemon
  return *g;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Gates& g = gates();
  FuzzInput in(data, size);
  const uint8_t shape = in.take<uint8_t>();
  PeerCallFacts call;
  call.peer = in.take_short_string();
  const std::string method = (shape & 1) ? in.take_short_string() : kMethods[in.take<uint8_t>() % 6];
  epx::v1::PeerLeaveRequest request;
  request.set_job_id(in.take_short_string());
  request.set_rank(in.take<uint32_t>());
  const std::string caller = in.take_short_string();
  if (!(shape & 2)) call.metadata[epx::daemon::kPeerCallerKey] = caller;
  const auto now = PeerGate::Clock::time_point(std::chrono::milliseconds(1'800'000'000'000LL));
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  const std::string time = (shape & 4) ? in.take_short_string() : std::to_string(now_ms + in.take<int16_t>() * 10);
  const std::string nonce = in.take_short_string(40);
  call.metadata[epx::daemon::kPeerTimeKey] = time;
  call.metadata[epx::daemon::kPeerNonceKey] = nonce;
  call.metadata[epx::daemon::kPeerMacKey] =
      (shape & 8) ? g.secret->mac(method, caller, time, nonce, request) : in.take_short_string();
  call.tls_authenticated = (shape & 16) != 0;
  for (uint8_t n = in.take<uint8_t>() % 4; n > 0; --n) call.certificate_names.push_back(in.take_short_string());

  PeerGate& gate = (shape & 32) ? g.with_secret : g.open;
  auto admitted = gate.admit(call, method, request, now);
  if (admitted.ok()) {
    if (admitted->address != caller || caller.empty()) std::abort();
    (void)admitted->may_act_for(in.take_short_string(), "act");
  } else if (admitted.status().message().empty()) {
    std::abort();  // a refusal always says why
  }

  const std::string ip = epx::daemon::peer_ip(call.peer);
  if (!ip.empty() && epx::daemon::canonical_ip(ip) != ip) std::abort();  // canonical is a fixed point
  (void)epx::daemon::names_host(call.certificate_names, caller);
  return 0;
}
