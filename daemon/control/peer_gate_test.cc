#include "daemon/control/peer_gate.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "epx/v1/peer.pb.h"

using namespace epx;
using namespace epx::daemon;
using Clock = PeerGate::Clock;

namespace {

const char kSecret[] = "0123456789abcdef0123456789abcdef";

v1::PeerLeaveRequest leave_request(uint32_t rank) {
  v1::PeerLeaveRequest r;
  r.set_job_id("j");
  r.set_rank(rank);
  r.set_reason("done");
  return r;
}

// A call as a daemon holding `secret` sends it from 127.0.0.1.
PeerCallFacts proven(const PeerSecurity& with, const std::string& method, const google::protobuf::Message& request,
                     Clock::time_point at, const std::string& nonce = "00112233445566778899aabbccddeeff",
                     const std::string& caller = "127.0.0.1:7470") {
  PeerCallFacts f;
  f.peer = "ipv4:127.0.0.1:50312";
  const std::string time =
      std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(at.time_since_epoch()).count());
  f.metadata[kPeerCallerKey] = caller;
  f.metadata[kPeerTimeKey] = time;
  f.metadata[kPeerNonceKey] = nonce;
  f.metadata[kPeerMacKey] = with.mac(method, caller, time, nonce, request);
  return f;
}

struct TempFile {
  std::string path;
  TempFile(const std::string& content, mode_t mode) {
    char name[] = "/tmp/epx-secret-XXXXXX";
    int fd = mkstemp(name);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
    close(fd);
    REQUIRE(chmod(name, mode) == 0);
    path = name;
  }
  ~TempFile() { unlink(path.c_str()); }
};

}  // namespace

TEST_CASE("a call proven with the cluster secret is admitted once; replays and other secrets are not") {
  auto security = PeerSecurity::with_secret(kSecret);
  PeerGate gate(security);
  const auto now = Clock::now();
  const auto request = leave_request(1);
  const PeerCallFacts call = proven(*security, kPeerLeave, request, now);

  auto caller = gate.admit(call, kPeerLeave, request, now);
  REQUIRE_MESSAGE(caller.ok(), caller.status().to_string());
  CHECK(caller->address == "127.0.0.1:7470");

  auto replay = gate.admit(call, kPeerLeave, request, now + std::chrono::seconds(1));
  CHECK(replay.status().code() == StatusCode::kUnauthenticated);
  CHECK(replay.status().message().find("replayed") != std::string::npos);

  auto other = PeerSecurity::with_secret("another secret of the same size!");
  auto forged = gate.admit(proven(*other, kPeerLeave, request, now, "ffeeddccbbaa99887766554433221100"), kPeerLeave,
                           request, now);
  CHECK(forged.status().code() == StatusCode::kUnauthenticated);
  CHECK(forged.status().message().find("wrong cluster-secret proof") != std::string::npos);
}

TEST_CASE("a proof covers the request, the method, the caller and the time") {
  auto security = PeerSecurity::with_secret(kSecret);
  PeerGate gate(security);
  const auto now = Clock::now();
  const auto request = leave_request(1);

  SUBCASE("another request under the same proof") {
    auto r = gate.admit(proven(*security, kPeerLeave, request, now), kPeerLeave, leave_request(0), now);
    CHECK(r.status().code() == StatusCode::kUnauthenticated);
  }
  SUBCASE("another method") {
    auto r = gate.admit(proven(*security, kPeerLeave, request, now), kPeerBarrier, request, now);
    CHECK(r.status().code() == StatusCode::kUnauthenticated);
  }
  SUBCASE("another caller address") {
    PeerCallFacts call = proven(*security, kPeerLeave, request, now);
    call.metadata[kPeerCallerKey] = "127.0.0.1:7471";
    CHECK(gate.admit(call, kPeerLeave, request, now).status().code() == StatusCode::kUnauthenticated);
  }
  SUBCASE("a stale proof, and one from the future") {
    const auto old = now - PeerGate::kMaxSkew - std::chrono::seconds(1);
    auto r = gate.admit(proven(*security, kPeerLeave, request, old), kPeerLeave, request, now);
    CHECK(r.status().code() == StatusCode::kUnauthenticated);
    CHECK(r.status().message().find("beyond 30 s") != std::string::npos);
    const auto ahead = now + PeerGate::kMaxSkew + std::chrono::seconds(1);
    CHECK(gate.admit(proven(*security, kPeerLeave, request, ahead), kPeerLeave, request, now).status().code() ==
          StatusCode::kUnauthenticated);
  }
  SUBCASE("no proof at all") {
    PeerCallFacts call;
    call.peer = "ipv4:127.0.0.1:1";
    call.metadata[kPeerCallerKey] = "127.0.0.1:7470";
    auto r = gate.admit(call, kPeerLeave, request, now);
    CHECK(r.status().code() == StatusCode::kUnauthenticated);
    CHECK(r.status().message().find(kPeerMacKey) != std::string::npos);
    call.metadata.clear();
    CHECK(gate.admit(call, kPeerLeave, request, now).status().code() == StatusCode::kUnauthenticated);
  }
}

TEST_CASE("a stated IP address must be where the call comes from") {
  auto security = PeerSecurity::with_secret(kSecret);
  PeerGate gate(security);
  const auto now = Clock::now();
  const auto request = leave_request(1);
  auto r = gate.admit(proven(*security, kPeerLeave, request, now, "00112233445566778899aabbccddeeff", "10.0.0.5:7470"),
                      kPeerLeave, request, now);
  CHECK(r.status().code() == StatusCode::kPermissionDenied);
  CHECK(r.status().message().find("10.0.0.5:7470") != std::string::npos);
  CHECK(r.status().message().find("127.0.0.1") != std::string::npos);
  // A host name cannot be compared without a lookup; the proof still holds.
  auto named =
      gate.admit(proven(*security, kPeerLeave, request, now, "0123456789abcdef0123456789abcdef", "node-a:7470"),
                 kPeerLeave, request, now);
  CHECK(named.ok());
}

TEST_CASE("without security, calls need only a consistent stated address") {
  PeerGate gate(PeerSecurity::none());
  PeerCallFacts call;
  call.peer = "ipv6:%5B::ffff:127.0.0.1%5D:4242";
  call.metadata[kPeerCallerKey] = "127.0.0.1:7470";
  const auto request = leave_request(0);
  auto caller = gate.admit(call, kPeerLeave, request, Clock::now());
  REQUIRE(caller.ok());
  CHECK(caller->may_act_for("127.0.0.1:7470", "release rank 0").ok());
  auto denied = caller->may_act_for("127.0.0.1:7471", "release rank 0 of job j");
  CHECK(denied.code() == StatusCode::kPermissionDenied);
  CHECK(denied.message().find("127.0.0.1:7471") != std::string::npos);
  call.metadata.clear();
  CHECK(gate.admit(call, kPeerLeave, request, Clock::now()).status().code() == StatusCode::kUnauthenticated);
}

TEST_CASE("peer and host addresses compare by value") {
  CHECK(peer_ip("ipv4:10.0.0.5:4242") == "10.0.0.5");
  CHECK(peer_ip("ipv6:[::1]:4242") == "::1");
  CHECK(peer_ip("ipv6:%5B::ffff:10.0.0.5%5D:4242") == "10.0.0.5");
  CHECK(peer_ip("unix:/run/epx.sock") == "");
  CHECK(canonical_ip("[0:0::1]") == "::1");
  CHECK(canonical_ip("node-a") == "");
  CHECK(names_host({"Node-A", "127.0.0.1"}, "node-a"));
  CHECK(names_host({"0:0:0:0:0:0:0:1"}, "[::1]"));
  CHECK_FALSE(names_host({"node-a"}, "node-b"));
  CHECK_FALSE(names_host({"127.0.0.1"}, "127.0.0.2"));
}

TEST_CASE("a secret file must be private and long enough; its trailing newline is not part of it") {
  v1::DaemonConfig config;
  {
    TempFile open_file(std::string(kSecret) + "\n", 0644);
    config.set_peer_secret_file(open_file.path);
    auto s = PeerSecurity::load(config);
    CHECK(s.status().code() == StatusCode::kPermissionDenied);
    CHECK(s.status().message().find("peer_secret_file") != std::string::npos);
    CHECK(s.status().message().find("0644") != std::string::npos);
  }
  {
    TempFile short_file("short\n", 0600);
    config.set_peer_secret_file(short_file.path);
    auto s = PeerSecurity::load(config);
    CHECK(s.status().code() == StatusCode::kInvalidArgument);
    CHECK(s.status().message().find("5 bytes") != std::string::npos);
  }
  TempFile good(std::string(kSecret) + "\n", 0600);
  config.set_peer_secret_file(good.path);
  auto s = PeerSecurity::load(config);
  REQUIRE_MESSAGE(s.ok(), s.status().to_string());
  CHECK((*s)->mode() == PeerSecurity::Mode::kSecret);
  const auto request = leave_request(3);
  CHECK((*s)->mac(kPeerLeave, "a:1", "1", "n", request) ==
        PeerSecurity::with_secret(kSecret)->mac(kPeerLeave, "a:1", "1", "n", request));
  config.set_peer_secret_file("/nonexistent/epx.secret");
  CHECK(PeerSecurity::load(config).status().message().find("/nonexistent/epx.secret") != std::string::npos);
}
