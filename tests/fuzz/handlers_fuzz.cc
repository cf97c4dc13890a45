// Fuzz target: the Local service's handlers (daemon/control/local_service.h)
// of a real daemon started in this process (Daemon::start, shm rails, a
// control socket in a temporary directory), called over its unix socket as
// a client would. Each input is one client session: Hello, then a stream
// of calls, each record
//   [method: 1 byte][flags: 1 byte][length: 2 bytes LE][request: protobuf]
// where flag bit 0 replaces the request's client_id with the session's
// (so calls get past the caller check) and the request bytes are the
// method's request message. The session ends with the input (the daemon
// then drops the client, as when a process exits). The daemon lives for
// the whole run: state left by one input is where the next one starts.
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "daemon/config/config.h"
#include "daemon/daemon.h"
#include "epx/v1/local.grpc.pb.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using epx::fuzz::FuzzInput;
namespace v1 = epx::v1;

// Calls that wait (a join at a barrier, Barrier, ExchangeIpc) are cut short
// by the client: the daemon goes on with them while later inputs run.
constexpr auto kCallDeadline = std::chrono::milliseconds(100);

// The daemon under test and a channel to its control socket.
struct Target {
  std::string socket;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Local::Stub> stub;
};

Target start_daemon() {
  char dir[] = "/tmp/epx-fuzz-handlers-XXXXXX";
  if (::mkdtemp(dir) == nullptr) std::abort();
  v1::DaemonConfig config;
  config.set_node_name("fuzz-node");
  config.set_control_socket(std::string(dir) + "/epxd.sock");
  config.set_peer_listen("127.0.0.1:0");
  config.set_provider("shm");
  config.set_log_level("error");
  config.set_rpc_timeout_ms(500);
  config.set_max_join_timeout_ms(1000);
  config.set_peer_timeout_ms(1000);
  config.set_max_client_mib(64);  // windows and rings of fuzzed sizes stay small
  config.set_max_window_mib(16);
  config.set_max_ring_capacity(1024);
  config.set_max_signals(1024);
  if (auto s = epx::daemon::finalize_config(&config); !s.ok()) {
    std::fprintf(stderr, "handlers fuzz: config: %s\n", s.to_string().c_str());
    std::abort();
  }
  spdlog::set_level(spdlog::level::err);
  auto daemon = epx::daemon::Daemon::start(config);
  if (!daemon.ok()) {
    std::fprintf(stderr, "handlers fuzz: daemon: %s\n", daemon.status().to_string().c_str());
    std::abort();
  }
  // Never stopped: it serves every input of the run, and the process ends
  // without tearing it down (as a killed epxd would).
  epx::daemon::Daemon* d = daemon.value().release();
  std::thread([d] { d->run(); }).detach();
  Target t;
  t.socket = config.control_socket();
  t.channel = grpc::CreateChannel("unix:" + t.socket, grpc::InsecureChannelCredentials());
  t.stub = v1::Local::NewStub(t.channel);
  return t;
}

Target& target() {
  static Target* t = new Target(start_daemon());
  return *t;
}

// The request of type T from `bytes`; with `own`, its client_id (field 1 of
// every request that has one) set to the session's.
template <typename T>
bool request_of(const std::string& bytes, bool own, uint64_t client_id, T* request) {
  if (!request->ParseFromString(bytes)) return false;
  const auto* field = T::descriptor()->FindFieldByName("client_id");
  if (own && field != nullptr) request->GetReflection()->SetUInt64(request, field, client_id);
  return true;
}

template <typename Request, typename Reply, typename Call>
void call(const std::string& bytes, bool own, uint64_t client_id, Call method) {
  Request request;
  if (!request_of(bytes, own, client_id, &request)) return;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  Reply reply;
  grpc::Status status = (target().stub.get()->*method)(&context, request, &reply);
  if (status.error_code() == grpc::StatusCode::UNKNOWN) {
    // A handler that threw or returned nonsense; every refusal has its code.
    std::fprintf(stderr, "handlers fuzz: UNKNOWN status: %s\n", status.error_message().c_str());
    std::abort();
  }
}

// A Hello session: attached until the stream ends.
struct Session {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<v1::ClientEvent>> events;
  uint64_t client_id = 0;

  explicit Session(const std::string& name) {
    v1::HelloRequest hello;
    hello.set_client_name(name);
    events = target().stub->Hello(&context, hello);
    v1::ClientEvent welcome;
    if (events->Read(&welcome) && welcome.has_welcome()) client_id = welcome.welcome().client_id();
  }
  ~Session() {
    context.TryCancel();
    v1::ClientEvent rest;
    while (events->Read(&rest)) {
    }
    events->Finish();
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  // The name is a proto3 string: gRPC's client would refuse to send one
  // that is not UTF-8, so keep it printable.
  std::string name = in.take_short_string(64);
  for (char& c : name) c = static_cast<char>(0x20 + static_cast<unsigned char>(c) % 0x5f);
  Session session(name);
  if (session.client_id == 0) return 0;  // refused (e.g. max_clients while earlier sessions drain)
  using Stub = v1::Local::Stub;
  for (int calls = 0; !in.empty() && calls < 32; ++calls) {
    const uint8_t method = in.take<uint8_t>();
    const bool own = (in.take<uint8_t>() & 1) != 0;
    const std::string bytes = in.take_string(4096);
    const uint64_t id = session.client_id;
    switch (method % 9) {
      case 0: call<v1::JoinJobRequest, v1::JoinJobReply>(bytes, own, id, &Stub::JoinJob); break;
      case 1: call<v1::LeaveJobRequest, v1::LeaveJobReply>(bytes, own, id, &Stub::LeaveJob); break;
      case 2: call<v1::StatusRequest, v1::DaemonStatus>(bytes, own, id, &Stub::Status); break;
      case 3: call<v1::CreateWindowRequest, v1::RegionReply>(bytes, own, id, &Stub::CreateWindow); break;
      case 4: call<v1::CreateDeviceWindowRequest, v1::RegionReply>(bytes, own, id, &Stub::CreateDeviceWindow); break;
      case 5: call<v1::OpenSignalsRequest, v1::RegionReply>(bytes, own, id, &Stub::OpenSignals); break;
      case 6: call<v1::OpenRingRequest, v1::RegionReply>(bytes, own, id, &Stub::OpenRing); break;
      case 7: call<v1::BarrierRequest, v1::BarrierReply>(bytes, own, id, &Stub::Barrier); break;
      default: call<v1::ExchangeIpcRequest, v1::ExchangeIpcReply>(bytes, own, id, &Stub::ExchangeIpc); break;
    }
  }
  return 0;
}
