// What a client (or a peer) sends is checked before it is used: malformed
// text fails only its own call with INVALID_ARGUMENT, never the caller's
// session; a client id that is not the caller's is PERMISSION_DENIED
// whether it exists or not; proxies in epxd's environment are never used
// between daemons; Local.Status shows a tenant only its own clients and
// jobs unless it is an admin.
#include <doctest/doctest.h>
#include <grp.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <google/protobuf/util/json_util.h>
#include <atomic>
#include <set>
#include <string>
#include <thread>

#include "daemon/control/peer_security.h"
#include "epx/client.h"
#include "epx/v1/local.grpc.pb.h"
#include "epx/v1/peer.grpc.pb.h"
#include "proto/ring/ring.h"
#include "tests/harness/daemon_process.h"

using namespace epx;
using namespace epx::test;
using namespace std::chrono_literals;

namespace {

const std::string kNotUtf8 = "\xff\xfe";
const std::string kHuge(64 << 10, 'j');  // far beyond any client's metadata limit when echoed

std::string code_name(const grpc::Status& s) {
  return std::to_string(static_cast<int>(s.error_code())) + " " + s.error_message().substr(0, 200);
}

// A Local client written with the raw stubs, as a buggy or hostile client
// would: any bytes in any field. Its Hello stream is its session; every
// call goes over the same channel, so the same connection.
class RawSession {
 public:
  RawSession(const std::string& socket, const std::string& name) : stub_(v1::Local::NewStub(own_channel(socket))) {
    v1::HelloRequest hello;
    hello.set_client_name(name);
    hello_context_.set_deadline(std::chrono::system_clock::now() + 600s);
    session_ = stub_->Hello(&hello_context_, hello);
    v1::ClientEvent welcome;
    if (session_->Read(&welcome) && welcome.has_welcome()) {
      client_id_ = welcome.welcome().client_id();
    } else {
      hello_status_ = session_->Finish();
      session_.reset();
    }
  }
  ~RawSession() {
    if (!session_) return;
    hello_context_.TryCancel();
    v1::ClientEvent rest;
    while (session_->Read(&rest)) {
    }
    (void)session_->Finish();
  }

  // Channels of one process to one target share their connection unless
  // told otherwise; this one must be a connection (a caller) of its own.
  static std::shared_ptr<grpc::Channel> own_channel(const std::string& socket) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel("unix:" + socket, grpc::InsecureChannelCredentials(), args);
  }

  uint64_t client_id() const { return client_id_; }
  const grpc::Status& hello_status() const { return hello_status_; }

  template <typename Req, typename Resp>
  grpc::Status call(grpc::Status (v1::Local::Stub::*rpc)(grpc::ClientContext*, const Req&, Resp*), const Req& req) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 20s);
    Resp resp;
    return (stub_.get()->*rpc)(&context, req, &resp);
  }

  grpc::Status join(uint64_t client_id, const std::string& job, const std::string& coordinator = "") {
    v1::JoinJobRequest r;
    r.set_client_id(client_id);
    r.set_job_id(job);
    r.set_world_size(1);
    r.set_rank(0);
    r.set_coordinator(coordinator);
    r.set_timeout_ms(10000);
    return call(&v1::Local::Stub::JoinJob, r);
  }

  // Every call that names a client and a job, in the given client's name.
  std::vector<std::pair<const char*, grpc::Status>> every_job_call(uint64_t client_id, const std::string& job) {
    std::vector<std::pair<const char*, grpc::Status>> out;
    out.emplace_back("JoinJob", join(client_id, job));
    v1::LeaveJobRequest leave;
    leave.set_client_id(client_id);
    leave.set_job_id(job);
    out.emplace_back("LeaveJob", call(&v1::Local::Stub::LeaveJob, leave));
    v1::CreateWindowRequest window;
    window.set_client_id(client_id);
    window.set_job_id(job);
    window.set_bytes(4096);
    out.emplace_back("CreateWindow", call(&v1::Local::Stub::CreateWindow, window));
    v1::CreateDeviceWindowRequest device;
    device.set_client_id(client_id);
    device.set_job_id(job);
    device.set_bytes(4096);
    device.set_device_va(1 << 20);
    device.set_fd_token(1);
    out.emplace_back("CreateDeviceWindow", call(&v1::Local::Stub::CreateDeviceWindow, device));
    v1::OpenSignalsRequest signals;
    signals.set_client_id(client_id);
    signals.set_job_id(job);
    signals.set_count(4);
    out.emplace_back("OpenSignals", call(&v1::Local::Stub::OpenSignals, signals));
    v1::OpenRingRequest ring;
    ring.set_client_id(client_id);
    ring.set_job_id(job);
    ring.set_capacity(64);
    out.emplace_back("OpenRing", call(&v1::Local::Stub::OpenRing, ring));
    v1::BarrierRequest barrier;
    barrier.set_client_id(client_id);
    barrier.set_job_id(job);
    barrier.set_timeout_ms(1000);
    out.emplace_back("Barrier", call(&v1::Local::Stub::Barrier, barrier));
    v1::ExchangeIpcRequest ipc;
    ipc.set_client_id(client_id);
    ipc.set_job_id(job);
    ipc.set_handle("handle");
    ipc.set_timeout_ms(1000);
    out.emplace_back("ExchangeIpc", call(&v1::Local::Stub::ExchangeIpc, ipc));
    return out;
  }

 private:
  std::unique_ptr<v1::Local::Stub> stub_;
  grpc::ClientContext hello_context_;
  std::unique_ptr<grpc::ClientReader<v1::ClientEvent>> session_;
  uint64_t client_id_ = 0;
  grpc::Status hello_status_;
};

bool rank_present(const DaemonProcess& d, const std::string& job, uint32_t rank) {
  const v1::DaemonStatus status = d.status();
  for (const auto& j : status.jobs()) {
    if (j.job_id() != job) continue;
    for (const auto& m : j.members()) {
      if (m.rank() == rank && m.present()) return true;
    }
  }
  return false;
}

}  // namespace

TEST_CASE("malformed joins fail only their own call; the client keeps its session and its ranks") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"});
  auto client = a.connect("holder");
  auto held = client->join(join_options("held", 1, 0, ""));
  REQUIRE_MESSAGE(held.ok(), held.status().to_string());

  for (const std::string& bad :
       {std::string(4096, 'x') + ":1", std::string("127.0.0.1:99999"), std::string("127.0.0.1:65536"),
        std::string("127.0.0.1:0"), std::string("127.0.0.1:http"), std::string("127.0.0.1:+80"),
        std::string("unix:/tmp/epxd.sock"), std::string("unix:80"), std::string("dns:///127.0.0.1:7470"),
        std::string("ipv4:127.0.0.1:7470"), std::string("::1:7470"), kNotUtf8 + ":80"}) {
    CAPTURE(bad.substr(0, 40));
    auto job = client->join(join_options("bad-coordinator", 1, 0, bad, 2s));
    REQUIRE_FALSE(job.ok());
    CHECK_MESSAGE(job.status().code() == StatusCode::kInvalidArgument, job.status().to_string());
    CHECK(job.status().message().find("coordinator") != std::string::npos);
    CHECK(job.status().message().size() < 1024);
  }
  for (const std::string& bad : {kNotUtf8, kHuge, std::string("a b"), std::string("caf\xc3\xa9")}) {
    CAPTURE(bad.substr(0, 40));
    auto job = client->join(join_options(bad, 1, 0, ""));
    REQUIRE_FALSE(job.ok());
    CHECK_MESSAGE(job.status().code() == StatusCode::kInvalidArgument, job.status().to_string());
    CHECK(job.status().message().find("job id") != std::string::npos);
  }
  CHECK_MESSAGE(client->session_status().ok(), client->session_status().to_string());
  CHECK(rank_present(a, "held", 0));
  auto again = client->join(join_options("good", 1, 0, a.peer_address()));
  CHECK_MESSAGE(again.ok(), again.status().to_string());
}

TEST_CASE("every call refuses a malformed job id with INVALID_ARGUMENT and a bounded message") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"});
  RawSession raw(a.socket(), "raw");
  REQUIRE_MESSAGE(raw.client_id() != 0, code_name(raw.hello_status()));
  grpc::Status joined = raw.join(raw.client_id(), "raw-ok");
  REQUIRE_MESSAGE(joined.ok(), code_name(joined));

  // Echoed whole, a 64 KiB id would overflow the client's trailers: the
  // client then drops its connection, its session and "raw-ok" with it.
  for (const std::string& bad : {kNotUtf8, kHuge, std::string("a\nb"), std::string("..")}) {
    CAPTURE(bad.substr(0, 40));
    for (const auto& [call, status] : raw.every_job_call(raw.client_id(), bad)) {
      CAPTURE(call);
      CHECK_MESSAGE(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT, code_name(status));
      CHECK(status.error_message().find("job id") != std::string::npos);
      CHECK(status.error_message().size() < 1024);
    }
  }
  v1::CreateDeviceWindowRequest device;
  device.set_client_id(raw.client_id());
  device.set_job_id("raw-ok");
  device.set_bytes(4096);
  device.set_device_va(1 << 20);
  device.set_fd_token(1);
  device.set_pci_bus_id("0000:53:00.0\n" + kNotUtf8);
  grpc::Status bus = raw.call(&v1::Local::Stub::CreateDeviceWindow, device);
  CHECK_MESSAGE(bus.error_code() == grpc::StatusCode::INVALID_ARGUMENT, code_name(bus));
  CHECK(bus.error_message().find("PCI bus id") != std::string::npos);

  // The session is intact: its rank is held and its calls still work.
  CHECK(rank_present(a, "raw-ok", 0));
  v1::CreateWindowRequest window;
  window.set_client_id(raw.client_id());
  window.set_job_id("raw-ok");
  window.set_bytes(4096);
  grpc::Status created = raw.call(&v1::Local::Stub::CreateWindow, window);
  CHECK_MESSAGE(created.ok(), code_name(created));
}

TEST_CASE("a client name must be bounded UTF-8 without control characters") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"});
  for (const std::string& bad : {kNotUtf8, std::string(129, 'n'), std::string("evil\nclient 1 attached")}) {
    CAPTURE(bad.substr(0, 40));
    RawSession raw(a.socket(), bad);
    CHECK(raw.client_id() == 0);
    CHECK_MESSAGE(raw.hello_status().error_code() == grpc::StatusCode::INVALID_ARGUMENT, code_name(raw.hello_status()));
    CHECK(raw.hello_status().error_message().find("client name") != std::string::npos);
  }
  RawSession good(a.socket(), "w\xc3\xb6rker-1");
  REQUIRE_MESSAGE(good.client_id() != 0, code_name(good.hello_status()));
  bool listed = false;
  const v1::DaemonStatus status = a.status();
  for (const auto& c : status.clients()) listed = listed || c.name() == "w\xc3\xb6rker-1";
  CHECK(listed);
}

TEST_CASE("a client id that is not the caller's is PERMISSION_DENIED, whether it exists or not") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"});
  auto victim = a.connect("victim");
  auto job = victim->join(join_options("victim-job", 1, 0, ""));
  REQUIRE_MESSAGE(job.ok(), job.status().to_string());
  RawSession attacker(a.socket(), "attacker");
  REQUIRE(attacker.client_id() != 0);

  for (uint64_t id : {victim->client_id(), uint64_t{999999}, uint64_t{0}}) {
    CAPTURE(id);
    for (const auto& [call, status] : attacker.every_job_call(id, "victim-job")) {
      CAPTURE(call);
      CHECK_MESSAGE(status.error_code() == grpc::StatusCode::PERMISSION_DENIED, code_name(status));
      // The same words for an id that exists and one that does not.
      CHECK(status.error_message() ==
            "client " + std::to_string(id) + " is not attached on this connection (call Hello first)");
    }
  }
  CHECK(victim->session_status().ok());
  CHECK(rank_present(a, "victim-job", 0));
}

TEST_CASE("Peer calls with a malformed job id are refused with INVALID_ARGUMENT") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"});
  v1::DaemonConfig config;
  config.set_peer_secret_file(cluster_secret_file(dir));
  auto proof = daemon::PeerSecurity::load(config);
  REQUIRE_MESSAGE(proof.ok(), proof.status().to_string());
  auto stub = v1::Peer::NewStub(grpc::CreateChannel(a.peer_address(), grpc::InsecureChannelCredentials()));
  auto call = [&](const char* method, const auto& req, auto rpc) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    (*proof)->prove(&context, method, req, a.peer_address(), std::chrono::system_clock::now());
    return rpc(&context, req);
  };
  for (const std::string& bad : {kNotUtf8, kHuge, std::string("a/b")}) {
    CAPTURE(bad.substr(0, 40));
    v1::RegisterRequest reg;
    reg.set_job_id(bad);
    reg.set_world_size(1);
    reg.set_timeout_ms(1000);
    reg.mutable_entry()->set_daemon_address(a.peer_address());
    v1::PeerLeaveRequest leave;
    leave.set_job_id(bad);
    v1::JobEvent event;
    event.set_job_id(bad);
    event.mutable_rank_left()->set_rank(0);
    v1::RankPlane plane;
    plane.set_job_id(bad);
    v1::PeerBarrierRequest barrier;
    barrier.set_job_id(bad);
    barrier.set_timeout_ms(1000);
    std::vector<std::pair<const char*, grpc::Status>> results;
    results.emplace_back("Register", call(daemon::kPeerRegister, reg, [&](grpc::ClientContext* c, const auto& r) {
                           v1::RegisterReply out;
                           return stub->Register(c, r, &out);
                         }));
    results.emplace_back("Leave", call(daemon::kPeerLeave, leave, [&](grpc::ClientContext* c, const auto& r) {
                           v1::PeerLeaveReply out;
                           return stub->Leave(c, r, &out);
                         }));
    results.emplace_back("Notify", call(daemon::kPeerNotify, event, [&](grpc::ClientContext* c, const auto& r) {
                           v1::NotifyReply out;
                           return stub->Notify(c, r, &out);
                         }));
    results.emplace_back("Publish", call(daemon::kPeerPublish, plane, [&](grpc::ClientContext* c, const auto& r) {
                           v1::PublishReply out;
                           return stub->Publish(c, r, &out);
                         }));
    results.emplace_back("Barrier", call(daemon::kPeerBarrier, barrier, [&](grpc::ClientContext* c, const auto& r) {
                           v1::PeerBarrierReply out;
                           return stub->Barrier(c, r, &out);
                         }));
    for (const auto& [method, status] : results) {
      CAPTURE(method);
      CHECK_MESSAGE(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT, code_name(status));
      CHECK(status.error_message().size() < 1024);
    }
  }
  // The daemon still serves jobs.
  auto client = a.connect();
  CHECK(client->join(join_options("after-peer-garbage", 1, 0, "")).ok());
}

namespace {

// A TCP listener standing in for an HTTP proxy: it counts connections and
// answers each with an HTTP 404, as the proxy that answered for an
// unreachable coordinator did.
class FakeProxy {
 public:
  FakeProxy() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    socklen_t len = sizeof(addr);
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      for (;;) {
        const int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;  // shutdown() below
        connections_.fetch_add(1, std::memory_order_relaxed);
        static const char kAnswer[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        (void)::write(c, kAnswer, sizeof(kAnswer) - 1);
        ::close(c);
      }
    });
  }
  ~FakeProxy() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int connections() const { return connections_.load(std::memory_order_relaxed); }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::atomic<int> connections_{0};
  std::thread thread_;
};

// A loopback port nothing listens on (bound, then closed).
std::string closed_port_address() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  ::close(fd);
  return "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
}

}  // namespace

TEST_CASE("daemons dial each other directly, whatever proxy their environment names") {
  TempDir dir;
  FakeProxy proxy;
  DaemonOptions options{"a", "tcp"};
  options.env = {"http_proxy=" + proxy.url(),
                 "https_proxy=" + proxy.url(),
                 "grpc_proxy=" + proxy.url(),
                 "HTTP_PROXY=" + proxy.url(),
                 "HTTPS_PROXY=" + proxy.url(),
                 "no_proxy=",
                 "NO_PROXY=",
                 "no_grpc_proxy="};
  DaemonProcess a(dir, options);
  DaemonProcess b(dir, {"b", "tcp"});
  auto client = a.connect();
  // Through a proxy the daemon's calls to itself and to b would fail.
  auto local = client->join(join_options("via-self", 1, 0, ""));
  CHECK_MESSAGE(local.ok(), local.status().to_string());
  auto remote = client->join(join_options("via-b", 1, 0, b.peer_address()));
  CHECK_MESSAGE(remote.ok(), remote.status().to_string());
  // An unreachable coordinator is UNAVAILABLE, not the proxy's 404.
  const std::string nowhere = closed_port_address();
  auto unreachable = client->join(join_options("nowhere", 1, 0, nowhere, 5s));
  REQUIRE_FALSE(unreachable.ok());
  CHECK_MESSAGE(unreachable.status().code() == StatusCode::kUnavailable, unreachable.status().to_string());
  CHECK(unreachable.status().message().find("unreachable") != std::string::npos);
  CHECK(proxy.connections() == 0);
}

namespace {

// `epxctl status --json [extra]` run as uid:gid (supplementary `groups`, "-"
// for none) against `d`.
v1::DaemonStatus status_as(const TempDir& dir, const DaemonProcess& d, uid_t uid, gid_t gid, const std::string& groups,
                           const std::vector<std::string>& extra = {}) {
  static int n = 0;
  std::vector<std::string> argv = {runfile("tests/run_as"),
                                   std::to_string(uid),
                                   std::to_string(gid),
                                   groups,
                                   runfile("tools/epxctl"),
                                   "--socket",
                                   d.socket(),
                                   "status",
                                   "--json"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  Process p(argv, dir.path() + "/status-as-" + std::to_string(++n) + ".log");
  p.close_stdin();
  auto code = p.wait(30s);
  REQUIRE_MESSAGE(code.has_value(), "epxctl as uid " << uid << " did not exit within 30 s");
  REQUIRE_MESSAGE(*code == 0, "epxctl as uid " << uid << ": " << p.output());
  v1::DaemonStatus status;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  REQUIRE_MESSAGE(google::protobuf::util::JsonStringToMessage(p.output(), &status, options).ok(), p.output());
  return status;
}

// The jobs a report lists, as one string ("a,b") for readable failures.
std::string job_ids(const v1::DaemonStatus& s) {
  std::set<std::string> ids;
  for (const auto& j : s.jobs()) ids.insert(j.job_id());
  // Clients name their jobs as "job/rank".
  for (const auto& c : s.clients()) {
    for (const auto& j : c.jobs()) ids.insert("client:" + j.substr(0, j.rfind('/')));
  }
  std::string out;
  for (const auto& id : ids) out += (out.empty() ? "" : ",") + id;
  return out;
}

std::set<uint32_t> client_uids(const v1::DaemonStatus& s) {
  std::set<uint32_t> out;
  for (const auto& c : s.clients()) out.insert(c.uid());
  return out;
}

}  // namespace

TEST_CASE("Local.Status shows a tenant its own clients and jobs; every tenant only to admins") {
  if (::geteuid() != 0) {
    MESSAGE("EPX_TEST_SKIPPED: needs root to run a client as another user");
    return;
  }
  const group* nogroup = ::getgrgid(65534);
  if (nogroup == nullptr) {
    MESSAGE("EPX_TEST_SKIPPED: no group 65534 to give the other user's socket access");
    return;
  }
  const std::string group_name = nogroup->gr_name;
  TempDir dir;
  REQUIRE(::chmod(dir.path().c_str(), 0711) == 0);  // the other user reaches the sockets by name
  // Both daemons let group 65534 use the socket; b makes that group admins.
  DaemonProcess a(dir, {"a", "tcp", {"--socket-group", group_name}});
  DaemonProcess b(dir, {"b", "tcp", {"--socket-group", group_name, "--admin-group", group_name}});

  // Root's tenant on a: a client holding "root-job".
  auto root_client = a.connect("root-tenant");
  auto root_job = root_client->join(join_options("root-job", 1, 0, ""));
  REQUIRE_MESSAGE(root_job.ok(), root_job.status().to_string());
  // uid 65534's tenant on a: epxctl holding "other-job".
  Process other({runfile("tests/run_as"), "65534", "65534", "-", runfile("tools/epxctl"), "--socket", a.socket(),
                 "join", "--job", "other-job", "--world", "1", "--rank", "0", "--hold"},
                dir.path() + "/other.log");
  REQUIRE_MESSAGE(other.wait_output("holding rank 0", 30s), other.output());

  // Root sees everyone.
  const v1::DaemonStatus all = a.status();
  CHECK(all.view() == "all");
  CHECK(client_uids(all) == std::set<uint32_t>{0, 65534});
  CHECK(job_ids(all) == "client:other-job,client:root-job,other-job,root-job");
  // Root asking for its own view.
  const v1::DaemonStatus root_own = status_as(dir, a, 0, 0, "-", {"--own"});
  CHECK(root_own.view() == "own (uid 0)");
  CHECK(client_uids(root_own) == std::set<uint32_t>{0});
  CHECK(job_ids(root_own) == "client:root-job,root-job");
  // The other tenant sees itself only, with the node's rails all the same.
  const v1::DaemonStatus theirs = status_as(dir, a, 65534, 65534, "-");
  CHECK(theirs.view() == "own (uid 65534)");
  CHECK(client_uids(theirs) == std::set<uint32_t>{65534});
  CHECK(job_ids(theirs) == "client:other-job,other-job");
  CHECK(theirs.rails_size() == all.rails_size());
  // Another user with no client here sees no client and no job.
  const v1::DaemonStatus stranger = status_as(dir, a, 65533, 65534, "-");
  CHECK(stranger.view() == "own (uid 65533)");
  CHECK(stranger.clients_size() == 0);
  CHECK(stranger.jobs_size() == 0);

  // On b the group's members are admins: by primary group or by a
  // supplementary one.
  auto b_client = b.connect("root-on-b");
  auto b_job = b_client->join(join_options("b-job", 1, 0, ""));
  REQUIRE_MESSAGE(b_job.ok(), b_job.status().to_string());
  const v1::DaemonStatus admin = status_as(dir, b, 65534, 65534, "-");
  CHECK(admin.view() == "all");
  CHECK(job_ids(admin) == "b-job,client:b-job");
  const v1::DaemonStatus supplementary = status_as(dir, b, 65533, 0, "65534");
  CHECK(supplementary.view() == "all");
  const v1::DaemonStatus admin_own = status_as(dir, b, 65534, 65534, "-", {"--own"});
  CHECK(admin_own.view() == "own (uid 65534)");
  CHECK(admin_own.jobs_size() == 0);
  other.close_stdin();
  CHECK(other.wait(20s).has_value());
}

TEST_CASE("OpenRing refuses another ring ABI version or a capability it lacks, naming them; channels count") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"});
  RawSession raw(a.socket(), "raw");
  REQUIRE_MESSAGE(raw.client_id() != 0, code_name(raw.hello_status()));
  grpc::Status joined = raw.join(raw.client_id(), "rings");
  REQUIRE_MESSAGE(joined.ok(), code_name(joined));
  v1::OpenRingRequest r;
  r.set_client_id(raw.client_id());
  r.set_job_id("rings");
  r.set_capacity(64);
  auto open = [&] { return raw.call(&v1::Local::Stub::OpenRing, r); };
  // An ABI v1 client (it sends no version) and an unknown later one.
  grpc::Status s = open();
  CHECK_MESSAGE(s.error_code() == grpc::StatusCode::FAILED_PRECONDITION, code_name(s));
  CHECK_MESSAGE(s.error_message().find("ring ABI version 0 requested") != std::string::npos, code_name(s));
  CHECK_MESSAGE(s.error_message().find("version 2") != std::string::npos, code_name(s));
  r.set_abi_version(3);
  s = open();
  CHECK_MESSAGE(s.error_code() == grpc::StatusCode::FAILED_PRECONDITION, code_name(s));
  CHECK_MESSAGE(s.error_message().find("version 3") != std::string::npos, code_name(s));
  // Capabilities: single-producer and the early doorbell are for device
  // rings; bit 31 is nobody's.
  r.set_abi_version(ring::kRingVersion);
  r.set_capabilities(ring::kRingCapabilitiesV2 | ring::kCapSingleProducer);
  s = open();
  CHECK_MESSAGE(s.error_code() == grpc::StatusCode::FAILED_PRECONDITION, code_name(s));
  CHECK_MESSAGE(s.error_message().find("0x1 are not offered for host rings") != std::string::npos, code_name(s));
  r.set_capabilities(ring::kRingCapabilitiesV2 | ring::kCapEarlyDoorbell);
  s = open();
  CHECK_MESSAGE(s.error_code() == grpc::StatusCode::FAILED_PRECONDITION, code_name(s));
  CHECK_MESSAGE(s.error_message().find("0x20 are not offered for host rings") != std::string::npos, code_name(s));
  r.set_device_producers(true);
  r.set_capabilities(1u << 31);
  s = open();
  CHECK_MESSAGE(s.error_code() == grpc::StatusCode::FAILED_PRECONDITION, code_name(s));
  CHECK_MESSAGE(s.error_message().find("0x80000000") != std::string::npos, code_name(s));
  // What the SDK asks for: accepted.
  r.set_capabilities(ring::kRingCapabilitiesV2 | ring::kCapSingleProducer | ring::kCapEarlyDoorbell);
  s = open();
  CHECK_MESSAGE(s.ok(), code_name(s));
  // Groups: a channel per SM of a 132-SM GPU fits the default limit
  // (256 rings per client); more than the limit in all does not.
  r.set_channels(132);
  s = open();
  CHECK_MESSAGE(s.ok(), code_name(s));
  r.set_channels(124);  // 1 + 132 + 124 = 257
  s = open();
  CHECK_MESSAGE(s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED, code_name(s));
  CHECK_MESSAGE(s.error_message().find("max_rings_per_client") != std::string::npos, code_name(s));
  r.set_channels(123);  // exactly 256
  s = open();
  CHECK_MESSAGE(s.ok(), code_name(s));
  r.set_channels(ring::kMaxGroupChannels + 1);
  s = open();
  CHECK_MESSAGE(s.error_code() == grpc::StatusCode::INVALID_ARGUMENT, code_name(s));
}
