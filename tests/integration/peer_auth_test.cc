// The Peer service's security against real daemons: calls without the
// cluster's proof (UNAUTHENTICATED), calls about ranks the caller does not
// host (PERMISSION_DENIED), absurd published windows (INVALID_ARGUMENT),
// and mutual TLS against a certificate of another CA. After the refusals
// the real job still passes a barrier and moves checked bytes both ways.
#include <doctest/doctest.h>
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <future>
#include <optional>
#include <sstream>

#include "daemon/control/peer_security.h"
#include "epx/client.h"
#include "epx/v1/peer.grpc.pb.h"
#include "tests/harness/daemon_process.h"

using namespace epx;
using namespace epx::test;
using namespace std::chrono_literals;
using daemon::PeerSecurity;

namespace {

// A Peer client as an attacker or a misbehaving member daemon would write
// it: any channel credentials, any stated caller address, the cluster's
// proof or another one or none.
class RawPeer {
 public:
  RawPeer(const std::string& target, std::string stated, std::shared_ptr<const PeerSecurity> proof,
          std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials())
      : stub_(v1::Peer::NewStub(grpc::CreateChannel(target, std::move(credentials)))),
        stated_(std::move(stated)),
        proof_(std::move(proof)) {}

  grpc::Status leave(const std::string& job, uint32_t rank) {
    v1::PeerLeaveRequest r;
    r.set_job_id(job);
    r.set_rank(rank);
    r.set_reason("forged");
    return call(daemon::kPeerLeave, r, &v1::Peer::Stub::Leave);
  }
  grpc::Status barrier(const std::string& job, uint32_t rank) {
    v1::PeerBarrierRequest r;
    r.set_job_id(job);
    r.set_rank(rank);
    r.set_timeout_ms(2000);
    return call(daemon::kPeerBarrier, r, &v1::Peer::Stub::Barrier);
  }
  grpc::Status notify_rank_left(const std::string& job, uint32_t rank) {
    v1::JobEvent e;
    e.set_job_id(job);
    e.mutable_rank_left()->set_rank(rank);
    e.mutable_rank_left()->set_reason("forged");
    return call(daemon::kPeerNotify, e, &v1::Peer::Stub::Notify);
  }
  grpc::Status register_rank(const std::string& job, uint32_t world, uint32_t rank, const std::string& daemon_address) {
    v1::RegisterRequest r;
    r.set_job_id(job);
    r.set_world_size(world);
    r.set_timeout_ms(2000);
    r.mutable_entry()->set_rank(rank);
    r.mutable_entry()->set_node("forged");
    r.mutable_entry()->set_daemon_address(daemon_address);
    return call(daemon::kPeerRegister, r, &v1::Peer::Stub::Register);
  }
  grpc::Status publish(const v1::RankPlane& plane) {
    return call(daemon::kPeerPublish, plane, &v1::Peer::Stub::Publish);
  }

 private:
  template <typename Req, typename Resp>
  grpc::Status call(const char* method, const Req& req,
                    grpc::Status (v1::Peer::Stub::*rpc)(grpc::ClientContext*, const Req&, Resp*)) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    if (proof_) {
      proof_->prove(&context, method, req, stated_, std::chrono::system_clock::now());
    } else if (!stated_.empty()) {
      context.AddMetadata(daemon::kPeerCallerKey, stated_);
    }
    Resp resp;
    return (stub_.get()->*rpc)(&context, req, &resp);
  }

  std::unique_ptr<v1::Peer::Stub> stub_;
  std::string stated_;
  std::shared_ptr<const PeerSecurity> proof_;
};

// A plane as a daemon publishes it: one window with one key per rail.
v1::RankPlane plane_of(const std::string& job, uint32_t rank, uint64_t bytes, int keys = 1, uint32_t signal_count = 4) {
  v1::RankPlane p;
  p.set_job_id(job);
  p.set_rank(rank);
  auto* w = p.add_windows();
  w->set_id(1);
  w->set_bytes(bytes);
  for (int k = 0; k < keys; ++k) {
    auto* key = w->add_rails();
    key->set_key(0xdeadbeef);
    key->set_base(0x1000);
  }
  p.set_signal_base(0);
  p.set_signal_count(signal_count);
  return p;
}

// Rank 0 on daemon a (the coordinator) and rank 1 on daemon b, each with a
// window, signals and a ring, as a running job has them.
struct LiveJob {
  static constexpr uint32_t kHalf = 2048;

  LiveJob(const DaemonProcess& a, const DaemonProcess& b, const std::string& job) : job_id(job) {
    c0 = a.connect("rank0");
    c1 = b.connect("rank1");
    auto f1 = std::async(std::launch::async, [&] { return c1->join(join_options(job, 2, 1, a.peer_address())); });
    auto r0 = c0->join(join_options(job, 2, 0, a.peer_address()));
    auto r1 = f1.get();
    REQUIRE_MESSAGE(r0.ok(), r0.status().to_string());
    REQUIRE_MESSAGE(r1.ok(), r1.status().to_string());
    j0.emplace(std::move(r0.value()));
    j1.emplace(std::move(r1.value()));
    for (int r = 0; r < 2; ++r) {
      Job& j = r == 0 ? *j0 : *j1;
      auto w = j.create_window(2 * kHalf);
      auto s = j.open_signals(2);
      auto ring = j.open_ring(64);
      REQUIRE_MESSAGE(w.ok(), w.status().to_string());
      REQUIRE_MESSAGE(s.ok(), s.status().to_string());
      REQUIRE_MESSAGE(ring.ok(), ring.status().to_string());
      windows[r].emplace(std::move(w.value()));
      signals[r].emplace(std::move(s.value()));
      rings[r] = std::move(ring.value());
    }
  }

  // Both ranks pass a barrier, write a fresh pattern into each other's
  // window with a signal, and find every byte; no rank was reported lost.
  void check_working(uint8_t round) {
    auto f1 = std::async(std::launch::async, [&] { return j1->barrier(10s); });
    auto b0 = j0->barrier(10s);
    auto b1 = f1.get();
    REQUIRE_MESSAGE(b0.ok(), b0.to_string());
    REQUIRE_MESSAGE(b1.ok(), b1.to_string());
    for (int r = 0; r < 2; ++r) {
      for (uint32_t i = 0; i < kHalf; ++i) windows[r]->data()[i] = static_cast<uint8_t>(i * (r ? 7 : 13) + round);
    }
    for (int r = 0; r < 2; ++r) {
      const uint32_t peer = 1 - r;
      REQUIRE(
          rings[r]->post_write_signal(peer, *windows[r], 0, windows[peer]->id(), kHalf, kHalf, SignalRef{0, 1}).ok());
    }
    for (int r = 0; r < 2; ++r) {
      const uint32_t peer = 1 - r;
      auto s = signals[peer]->wait(0, round, 10s);
      REQUIRE_MESSAGE(s.ok(), s.to_string());
      CHECK(std::memcmp(windows[peer]->data() + kHalf, windows[r]->data(), kHalf) == 0);
      CHECK(rings[r]->error().ok());
    }
    for (Client* c : {c0.get(), c1.get()}) {
      while (auto e = c->next_event(0ms)) {
        CHECK_MESSAGE(e->job_id != job_id, "unexpected event: " << e->to_string());
      }
    }
  }

  std::string job_id;
  std::unique_ptr<Client> c0, c1;
  std::optional<Job> j0, j1;
  std::optional<Window> windows[2];
  std::optional<Signals> signals[2];
  std::unique_ptr<Ring> rings[2];
};

std::string code_name(const grpc::Status& s) {
  return std::string(status_code_name(static_cast<StatusCode>(s.error_code()))) + ": " + s.error_message();
}

#define CHECK_CODE(call, code)                                                         \
  do {                                                                                 \
    const grpc::Status status_ = (call);                                               \
    CHECK_MESSAGE(status_.error_code() == (code), #call " -> " << code_name(status_)); \
  } while (0)

std::shared_ptr<const PeerSecurity> cluster_proof(const TempDir& dir) {
  v1::DaemonConfig config;
  config.set_peer_secret_file(cluster_secret_file(dir));
  auto s = PeerSecurity::load(config);
  REQUIRE_MESSAGE(s.ok(), s.status().to_string());
  return *s;
}

std::pair<int, std::string> run(const TempDir& dir, std::vector<std::string> argv) {
  static int n = 0;
  Process p(std::move(argv), dir.path() + "/run-" + std::to_string(++n) + ".log");
  p.close_stdin();
  auto code = p.wait(60s);
  REQUIRE_MESSAGE(code.has_value(), argv.front() << " did not exit within 60 s");
  return {*code, p.output()};
}

std::string find_openssl() {
  const char* path = std::getenv("PATH");
  std::string dirs = std::string(path ? path : "") + ":/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    const size_t end = dirs.find(':', start) == std::string::npos ? dirs.size() : dirs.find(':', start);
    const std::string candidate = dirs.substr(start, end - start) + "/openssl";
    if (end > start && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return "";
}

// Test certificates, made at run time (no private key is committed): CAs
// and daemon certificates with the given subject alternative names.
class TestPki {
 public:
  TestPki(const TempDir& dir, std::string openssl) : dir_(dir), openssl_(std::move(openssl)) {}

  void ca(const std::string& name) {
    openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             key(name), "-out", crt(name), "-days", "2", "-subj", "/CN=epx test " + name, "-addext",
             "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"});
  }
  // A daemon certificate of `ca` naming `san` ("IP:127.0.0.1").
  void cert(const std::string& name, const std::string& ca, const std::string& san) {
    const std::string ext = dir_.path() + "/" + name + ".ext";
    std::ofstream(ext) << "subjectAltName=" << san << "\nbasicConstraints=CA:FALSE\n"
                       << "keyUsage=critical,digitalSignature,keyEncipherment\n"
                       << "extendedKeyUsage=serverAuth,clientAuth\n";
    const std::string csr = dir_.path() + "/" + name + ".csr";
    openssl({"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key(name),
             "-out", csr, "-subj", "/CN=" + name});
    openssl({"x509", "-req", "-in", csr, "-CA", crt(ca), "-CAkey", key(ca), "-set_serial", std::to_string(++serial_),
             "-days", "2", "-out", crt(name), "-extfile", ext});
    REQUIRE(::chmod(key(name).c_str(), 0600) == 0);
  }
  std::string crt(const std::string& name) const { return dir_.path() + "/" + name + ".crt"; }
  std::string key(const std::string& name) const { return dir_.path() + "/" + name + ".key"; }
  std::string read(const std::string& path) const {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  // Daemon flags for mutual TLS with certificate `name` and CA file `ca_file`.
  std::vector<std::string> flags(const std::string& name, const std::string& ca_file) const {
    return {"--peer-tls-cert-file", crt(name), "--peer-tls-key-file", key(name), "--peer-tls-ca-file", ca_file};
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials(const std::string& name, const std::string& ca_file) const {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = read(ca_file);
    o.pem_private_key = read(key(name));
    o.pem_cert_chain = read(crt(name));
    return grpc::SslCredentials(o);
  }

 private:
  void openssl(std::vector<std::string> args) {
    args.insert(args.begin(), openssl_);
    auto [code, out] = run(dir_, args);
    REQUIRE_MESSAGE(code == 0, "openssl " << args[1] << " failed:\n" << out);
  }
  const TempDir& dir_;
  const std::string openssl_;
  int serial_ = 0;
};

}  // namespace

TEST_CASE("Peer calls without the cluster's proof are refused and the real job keeps working") {
  TempDir dir;
  DaemonProcess a(dir, {"a"}), b(dir, {"b"});
  LiveJob job(a, b, "auth");
  job.check_working(1);

  const auto wrong_secret = PeerSecurity::with_secret("not the cluster's secret, but long enough");
  struct Forger {
    const char* what;
    std::string stated;
    std::shared_ptr<const PeerSecurity> proof;
  };
  for (const Forger& f :
       {Forger{"no metadata at all", "", nullptr}, Forger{"b's address, no proof", b.peer_address(), nullptr},
        Forger{"b's address, proof with another secret", b.peer_address(), wrong_secret}}) {
    CAPTURE(f.what);
    RawPeer to_a(a.peer_address(), f.stated, f.proof), to_b(b.peer_address(), f.stated, f.proof);
    CHECK_CODE(to_a.leave("auth", 1), grpc::StatusCode::UNAUTHENTICATED);
    CHECK_CODE(to_a.barrier("auth", 1), grpc::StatusCode::UNAUTHENTICATED);
    CHECK_CODE(to_a.register_rank("intruded", 1, 0, b.peer_address()), grpc::StatusCode::UNAUTHENTICATED);
    CHECK_CODE(to_b.notify_rank_left("auth", 0), grpc::StatusCode::UNAUTHENTICATED);
    CHECK_CODE(to_b.publish(plane_of("auth", 0, UINT64_MAX)), grpc::StatusCode::UNAUTHENTICATED);
    CHECK_CODE(to_a.publish(plane_of("auth", 1, 4096)), grpc::StatusCode::UNAUTHENTICATED);
  }
  CHECK_FALSE(a.coordinates_rank("intruded", 0));
  // Each refusal is logged with the caller's address.
  CHECK(a.process().output().find("refused /epx.v1.Peer/Leave from ipv4:127.0.0.1") != std::string::npos);
  job.check_working(2);

  // A forming job: a forged rank does not take the free slot.
  auto c0 = a.connect("forming0"), c1 = b.connect("forming1");
  auto first =
      std::async(std::launch::async, [&] { return c0->join(join_options("forming", 2, 0, a.peer_address())); });
  REQUIRE(wait_until([&] { return a.coordinates_rank("forming", 0); }, 10s));
  RawPeer forger(a.peer_address(), b.peer_address(), wrong_secret);
  CHECK_CODE(forger.register_rank("forming", 2, 1, b.peer_address()), grpc::StatusCode::UNAUTHENTICATED);
  auto second = c1->join(join_options("forming", 2, 1, a.peer_address()));
  REQUIRE_MESSAGE(second.ok(), second.status().to_string());
  auto joined = first.get();
  REQUIRE_MESSAGE(joined.ok(), joined.status().to_string());
  CHECK(second->table().ranks[1].node == "b");
}

TEST_CASE("with the cluster's proof, a daemon may act only for ranks it hosts, within bounds") {
  TempDir dir;
  DaemonProcess a(dir, {"a"}), b(dir, {"b"});
  LiveJob job(a, b, "owned");
  job.check_working(1);
  const auto proof = cluster_proof(dir);

  // A member daemon (it holds the secret and states b's address truly).
  RawPeer b_to_a(a.peer_address(), b.peer_address(), proof), b_to_b(b.peer_address(), b.peer_address(), proof);
  CHECK_CODE(b_to_a.leave("owned", 0), grpc::StatusCode::PERMISSION_DENIED);
  CHECK_CODE(b_to_a.barrier("owned", 0), grpc::StatusCode::PERMISSION_DENIED);
  CHECK_CODE(b_to_a.register_rank("other", 2, 0, a.peer_address()), grpc::StatusCode::PERMISSION_DENIED);
  CHECK_CODE(b_to_b.notify_rank_left("owned", 0), grpc::StatusCode::PERMISSION_DENIED);  // a coordinates
  CHECK_CODE(b_to_b.publish(plane_of("owned", 0, 4096)), grpc::StatusCode::PERMISSION_DENIED);
  CHECK_CODE(b_to_a.register_rank("owned", 2, 1, b.peer_address()), grpc::StatusCode::ALREADY_EXISTS);
  CHECK_FALSE(a.coordinates_rank("other", 0));

  // Its own rank, but values no daemon can have registered.
  struct Bad {
    v1::RankPlane plane;
    const char* field;
  };
  for (const Bad& bad :
       {Bad{plane_of("owned", 1, UINT64_MAX), "windows[0].bytes"}, Bad{plane_of("owned", 1, 0), "windows[0].bytes"},
        Bad{plane_of("owned", 1, 4096, 64), "windows[0].rails"},
        Bad{plane_of("owned", 1, 4096, 1, 1u << 21), "signal_count"}}) {
    CAPTURE(bad.field);
    const grpc::Status s = b_to_a.publish(bad.plane);
    CHECK_MESSAGE(s.error_code() == grpc::StatusCode::INVALID_ARGUMENT, code_name(s));
    CHECK(s.error_message().find(bad.field) != std::string::npos);
  }

  // A stated IP address that is not where the call comes from.
  RawPeer elsewhere(a.peer_address(), "10.9.8.7:7470", proof);
  const grpc::Status far = elsewhere.leave("owned", 1);
  CHECK_MESSAGE(far.error_code() == grpc::StatusCode::PERMISSION_DENIED, code_name(far));
  CHECK(far.error_message().find("10.9.8.7") != std::string::npos);

  CHECK(a.process().output().find("refused /epx.v1.Peer/Leave") != std::string::npos);
  job.check_working(2);
}

TEST_CASE("peer security settings: a readable secret file stops the daemon; none is reported") {
  TempDir dir;
  const std::string epxd = runfile("daemon/epxd");
  const std::vector<std::string> base = {epxd,
                                         "--control-socket",
                                         dir.path() + "/x.sock",
                                         "--peer-listen",
                                         "127.0.0.1:0",
                                         "--provider",
                                         "tcp",
                                         "--rail-domains",
                                         "lo"};

  auto [code, out] = run(dir, [&] {
    auto v = base;
    v.push_back("--check-config");
    return v;
  }());
  CHECK(code == 0);
  CHECK(out.find("warning: peer security: none") != std::string::npos);
  CHECK(out.find("UNAUTHENTICATED") != std::string::npos);

  const std::string secret = dir.path() + "/open.secret";
  std::ofstream(secret) << "0123456789abcdef0123456789abcdef\n";
  REQUIRE(::chmod(secret.c_str(), 0644) == 0);
  for (bool check_only : {true, false}) {
    CAPTURE(check_only);
    auto v = base;
    v.insert(v.end(), {"--peer-secret-file", secret});
    if (check_only) v.push_back("--check-config");
    auto [c, o] = run(dir, v);
    CHECK(c != 0);
    CHECK(o.find("peer_secret_file") != std::string::npos);
    CHECK(o.find("mode 0644") != std::string::npos);
    CHECK(o.find("chmod 600") != std::string::npos);
  }
  REQUIRE(::chmod(secret.c_str(), 0600) == 0);
  auto [ok_code, ok_out] = run(dir, [&] {
    auto v = base;
    v.insert(v.end(), {"--peer-secret-file", secret, "--check-config"});
    return v;
  }());
  CHECK(ok_code == 0);
  CHECK(ok_out.find("warning") == std::string::npos);
}

TEST_CASE("mutual TLS: daemons of one CA work together; another CA's certificate cannot join") {
  const std::string openssl = find_openssl();
  if (openssl.empty()) {
    MESSAGE("EPX_TEST_SKIPPED: no openssl binary to make test certificates (tools/setup.sh installs it)");
    return;
  }
  TempDir dir;
  TestPki pki(dir, openssl);
  pki.ca("ca1");
  pki.ca("ca2");
  pki.cert("a", "ca1", "IP:127.0.0.1");
  pki.cert("b", "ca1", "IP:127.0.0.1");
  pki.cert("rogue", "ca2", "IP:127.0.0.1");
  pki.cert("elsewhere", "ca1", "DNS:localhost");
  // The rogue trusts both CAs: it would accept the cluster, which must still
  // refuse it.
  const std::string both = dir.path() + "/both.crt";
  std::ofstream(both) << pki.read(pki.crt("ca1")) << pki.read(pki.crt("ca2"));

  DaemonProcess a(dir, {"a", "tcp", pki.flags("a", pki.crt("ca1")), false});
  DaemonProcess b(dir, {"b", "tcp", pki.flags("b", pki.crt("ca1")), false});
  DaemonProcess rogue(dir, {"rogue", "tcp", pki.flags("rogue", both), false});
  CHECK(a.process().output().find("peer security: mutual TLS") != std::string::npos);
  LiveJob job(a, b, "tls");
  job.check_working(1);

  // The rogue daemon's client tries to take rank 1 of a forming job.
  auto c0 = a.connect("forming0"), c1 = b.connect("forming1"), intruder = rogue.connect("intruder");
  auto first =
      std::async(std::launch::async, [&] { return c0->join(join_options("forming", 2, 0, a.peer_address())); });
  REQUIRE(wait_until([&] { return a.coordinates_rank("forming", 0); }, 10s));
  auto refused = intruder->join(join_options("forming", 2, 1, a.peer_address(), 5s));
  CHECK_MESSAGE(refused.status().code() == StatusCode::kUnavailable, refused.status().to_string());
  CHECK_FALSE(a.coordinates_rank("forming", 1));
  auto second = c1->join(join_options("forming", 2, 1, a.peer_address()));
  REQUIRE_MESSAGE(second.ok(), second.status().to_string());
  REQUIRE(first.get().ok());

  // Direct calls: plaintext and the other CA fail at the handshake.
  CHECK_CODE(RawPeer(a.peer_address(), a.peer_address(), nullptr).leave("tls", 1), grpc::StatusCode::UNAVAILABLE);
  CHECK_CODE(RawPeer(a.peer_address(), a.peer_address(), nullptr, pki.credentials("rogue", both)).leave("tls", 1),
             grpc::StatusCode::UNAVAILABLE);
  // A certificate of the cluster speaks only for the hosts it names.
  RawPeer named_elsewhere(a.peer_address(), b.peer_address(), nullptr, pki.credentials("elsewhere", pki.crt("ca1")));
  const grpc::Status s = named_elsewhere.leave("tls", 1);
  CHECK_MESSAGE(s.error_code() == grpc::StatusCode::PERMISSION_DENIED, code_name(s));
  CHECK(s.error_message().find("certificate names only localhost") != std::string::npos);
  // b's own certificate, stating a's address: b may not release a's rank.
  RawPeer as_b(a.peer_address(), b.peer_address(), nullptr, pki.credentials("b", pki.crt("ca1")));
  CHECK_CODE(as_b.leave("tls", 0), grpc::StatusCode::PERMISSION_DENIED);
  job.check_working(2);
}
