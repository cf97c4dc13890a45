// Device windows through real daemons on providers that cannot take GPU
// memory (shm, tcp: they copy with the CPU). The daemon must refuse with a
// reason naming each rail, close every descriptor a client sent, reject bad
// requests clearly, and keep serving the client's host windows. No GPU
// needed: the descriptor sent is a memfd (the refusal comes before the
// daemon looks at what the descriptor is).
#include <dirent.h>
#include <doctest/doctest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <future>

#include "epx/client.h"
#include "proto/fd/fd_protocol.h"
#include "proto/fd/scm_rights.h"
#include "tests/harness/daemon_process.h"

using namespace epx;
using namespace epx::test;
using namespace std::chrono_literals;

namespace {

// Open descriptors of process `pid` (the daemon runs as this user).
size_t open_fds(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  REQUIRE_MESSAGE(d != nullptr, "cannot list " << dir);
  size_t n = 0;
  while (dirent* e = ::readdir(d)) n += e->d_name[0] != '.' ? 1 : 0;
  ::closedir(d);
  return n;
}

// What they are (for failure messages): "3 -> socket:[123]" lines.
std::string describe_fds(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  std::string out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char link[256] = {};
    const ssize_t n = ::readlink((dir + "/" + e->d_name).c_str(), link, sizeof(link) - 1);
    out += std::string(e->d_name) + " -> " + (n > 0 ? std::string(link, static_cast<size_t>(n)) : "?") + "\n";
  }
  ::closedir(d);
  return out;
}

// Waits until the daemon holds at most `limit` descriptors (a closed fd
// socket connection is released on the daemon's io thread, a moment after
// the reply); returns the last count.
size_t settle_fds(pid_t pid, size_t limit) {
  size_t n = 0;
  wait_until([&] { return (n = open_fds(pid)) <= limit; }, 3s);
  return n;
}

// The value of the first `"key": value` after position `from` of a JSON text.
std::string field_after(const std::string& json, size_t from, const std::string& key) {
  const std::string needle = "\"" + key + "\": ";
  const size_t at = json.find(needle, from);
  if (at == std::string::npos) return "";
  const size_t start = at + needle.size();
  return json.substr(start, json.find_first_of(",\n}", start) - start);
}

// A real descriptor standing in for a GPU dma-buf.
struct FakeGpuMemory {
  explicit FakeGpuMemory(size_t bytes) {
    fd = ::memfd_create("epx-test-not-a-dmabuf", MFD_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, static_cast<off_t>(bytes)) == 0);
  }
  ~FakeGpuMemory() { ::close(fd); }
  int fd = -1;
};

DeviceMemory device_memory(uint64_t bytes) {
  DeviceMemory m;
  m.bytes = bytes;
  m.device_va = 0x7f0000000000ull;  // a plausible CUDA address; the daemon never dereferences it
  m.cuda_device = 0;
  m.pci_bus_id = "0000:00:00.0";
  return m;
}

// Sends a submit request on the fd socket in the name of `client_id`,
// carrying `fds` (none, or descriptors that should not be there).
fdproto::FdReply submit_raw(const std::string& fd_socket, uint64_t client_id, const std::vector<int>& fds) {
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(s >= 0);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, fd_socket.c_str(), sizeof(addr.sun_path) - 1);
  REQUIRE(::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  fdproto::FdSubmit submit{fdproto::kSubmitMagic, client_id};
  const Status sent = send_with_fds(s, &submit, sizeof(submit), fds);
  REQUIRE_MESSAGE(sent.ok(), sent.to_string());
  fdproto::FdReply reply = {};
  timeval tv{5, 0};
  ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  REQUIRE(::recv(s, &reply, sizeof(reply), MSG_WAITALL) == static_cast<ssize_t>(sizeof(reply)));
  ::close(s);
  return reply;
}

}  // namespace

TEST_CASE("a device window is refused on shm and tcp, naming the rail and why") {
  for (const char* provider : {"shm", "tcp"}) {
    CAPTURE(provider);
    TempDir dir;
    DaemonProcess a(dir, {"a", provider});
    auto c = a.connect();
    auto j = c->join(join_options(std::string("dw-") + provider, 1, 0, ""));
    REQUIRE_MESSAGE(j.ok(), j.status().to_string());
    FakeGpuMemory gpu(1 << 20);
    auto token = j->send_fd(gpu.fd);
    REQUIRE_MESSAGE(token.ok(), token.status().to_string());
    auto w = j->create_device_window(*token, device_memory(1 << 20));
    REQUIRE(w.status().code() == StatusCode::kFailedPrecondition);
    const std::string& why = w.status().message();
    MESSAGE("refusal: " << why);
    CHECK(why.find(std::string("rail 0 (") + provider) != std::string::npos);
    CHECK(why.find("copies with the CPU") != std::string::npos);
    CHECK(why.find("efa or verbs") != std::string::npos);
    // The status says the same per rail.
    auto [code, text] = a.epxctl({"status"});
    CHECK(code == 0);
    CHECK(text.find("device windows: no (rail 0 (" + std::string(provider)) != std::string::npos);
    CHECK(text.find("libfabric ") != std::string::npos);
    auto [jcode, json] = a.epxctl({"status", "--json"});
    CHECK(json.find("\"deviceWindows\": false") != std::string::npos);
    CHECK(json.find("copies with the CPU") != std::string::npos);
  }
}

TEST_CASE("refused device windows leak nothing, bad requests get clear errors, host windows keep working") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "shm", {"--max-client-mib", "4", "--max-window-mib", "8"}}), b(dir, {"b", "shm"});
  auto ca = a.connect("device-window-client"), cb = b.connect();
  auto fb = std::async(std::launch::async, [&] { return cb->join(join_options("dw", 2, 1, a.peer_address())); });
  auto ja = ca->join(join_options("dw", 2, 0, a.peer_address()));
  REQUIRE_MESSAGE(ja.ok(), ja.status().to_string());
  auto jb = fb.get();
  REQUIRE_MESSAGE(jb.ok(), jb.status().to_string());
  const pid_t daemon = a.process().pid();
  FakeGpuMemory gpu(1 << 20);

  // Warm up (gRPC and the fd socket may open descriptors once), then count.
  {
    auto t = ja->send_fd(gpu.fd);
    REQUIRE(t.ok());
    CHECK(ja->create_device_window(*t, device_memory(1 << 20)).status().code() == StatusCode::kFailedPrecondition);
  }
  const size_t baseline = settle_fds(daemon, 0);
  const std::string baseline_fds = describe_fds(daemon);

  {
    // A sent descriptor is held by the daemon until a call claims it ...
    auto t = ja->send_fd(gpu.fd);
    REQUIRE(t.ok());
    CHECK(settle_fds(daemon, baseline + 1) == baseline + 1);
    // ... and closed when the call is refused.
    CHECK(ja->create_device_window(*t, device_memory(1 << 20)).status().code() == StatusCode::kFailedPrecondition);
    CHECK(settle_fds(daemon, baseline) == baseline);
    // A token is good for one call.
    auto again = ja->create_device_window(*t, device_memory(1 << 20));
    CHECK(again.status().code() == StatusCode::kNotFound);
    CHECK(again.status().message().find("no submitted descriptor") != std::string::npos);
  }
  for (int i = 0; i < 5; ++i) {
    auto t = ja->send_fd(gpu.fd);
    REQUIRE(t.ok());
    CHECK(ja->create_device_window(*t, device_memory(1 << 20)).status().code() == StatusCode::kFailedPrecondition);
  }
  CHECK_MESSAGE(settle_fds(daemon, baseline) == baseline, "before:\n"
                                                              << baseline_fds << "now:\n"
                                                              << describe_fds(daemon));

  // No descriptor sent: token 0, and a raw submit without SCM_RIGHTS.
  auto none = ja->create_device_window(0, device_memory(1 << 20));
  CHECK(none.status().code() == StatusCode::kInvalidArgument);
  CHECK(none.status().message().find("no fd token") != std::string::npos);
  fdproto::FdReply bare = submit_raw(a.socket() + ".fd", ca->client_id(), {});
  CHECK(bare.status == static_cast<int32_t>(StatusCode::kInvalidArgument));
  CHECK(std::string(bare.message).find("exactly one descriptor") != std::string::npos);
  CHECK(bare.token == 0);
  // A submit in the name of a client that is not this process's: refused,
  // so nobody can spend another client's descriptor quota.
  fdproto::FdReply forged = submit_raw(a.socket() + ".fd", ca->client_id() + 1000, {gpu.fd});
  CHECK(forged.status == static_cast<int32_t>(StatusCode::kPermissionDenied));
  CHECK(std::string(forged.message).find("is not attached by this process") != std::string::npos);
  CHECK(forged.token == 0);
  CHECK(settle_fds(daemon, baseline) == baseline);
  // A token nobody was given.
  auto bogus = ja->create_device_window(0x1234567890abcdefull, device_memory(1 << 20));
  CHECK(bogus.status().code() == StatusCode::kNotFound);

  // Bad sizes and addresses, each with a real descriptor (closed too).
  struct Bad {
    const char* what;
    DeviceMemory memory;
    StatusCode code;
    const char* says;
  };
  DeviceMemory zero = device_memory(0), huge = device_memory(16ull << 20), no_va = device_memory(1 << 20),
               wraps = device_memory(1 << 20);
  no_va.device_va = 0;
  wraps.device_va = ~0ull - 100;
  std::vector<Bad> bad = {
      {"bytes 0", zero, StatusCode::kInvalidArgument, "must be 1.."},
      {"beyond max_window_mib", huge, StatusCode::kInvalidArgument, "max_window_mib"},
      {"no device address", no_va, StatusCode::kInvalidArgument, "not a valid range"},
      {"address range wraps", wraps, StatusCode::kInvalidArgument, "not a valid range"},
  };
  for (const auto& c : bad) {
    CAPTURE(c.what);
    auto t = ja->send_fd(gpu.fd);
    REQUIRE(t.ok());
    auto r = ja->create_device_window(*t, c.memory);
    CHECK(r.status().code() == c.code);
    CHECK_MESSAGE(r.status().message().find(c.says) != std::string::npos, r.status().to_string());
  }
  // Beyond the client's quota: 3 MiB of host windows held, 2 MiB more asked.
  auto h1 = ja->create_window(2 << 20);
  auto h2 = ja->create_window(1 << 20);
  REQUIRE(h1.ok());
  REQUIRE(h2.ok());
  const size_t with_windows = baseline + 2;  // the host windows' memfds
  {
    auto t = ja->send_fd(gpu.fd);
    REQUIRE(t.ok());
    auto r = ja->create_device_window(*t, device_memory(2 << 20));
    CHECK(r.status().code() == StatusCode::kResourceExhausted);
    CHECK(r.status().message().find("max_client_mib") != std::string::npos);
  }
  // Another client of the same process cannot claim this client's token;
  // the owner still can.
  {
    auto other = a.connect("other");
    auto jo = other->join(join_options("dw-other", 1, 0, ""));
    REQUIRE_MESSAGE(jo.ok(), jo.status().to_string());
    auto t = ja->send_fd(gpu.fd);
    REQUIRE(t.ok());
    auto stolen = jo->create_device_window(*t, device_memory(1 << 20));
    CHECK(stolen.status().code() == StatusCode::kPermissionDenied);
    CHECK(ja->create_device_window(*t, device_memory(1 << 20)).status().code() == StatusCode::kFailedPrecondition);
  }
  // Unclaimed descriptors go when their client's session ends.
  {
    auto leaving = a.connect("leaving");
    auto jl = leaving->join(join_options("dw-leaving", 1, 0, ""));
    REQUIRE_MESSAGE(jl.ok(), jl.status().to_string());
    for (int i = 0; i < 3; ++i) REQUIRE(jl->send_fd(gpu.fd).ok());
    CHECK(open_fds(daemon) >= with_windows + 3);  // held while the client lives
  }
  CHECK_MESSAGE(settle_fds(daemon, with_windows) == with_windows, "before:\n"
                                                                      << baseline_fds << "now:\n"
                                                                      << describe_fds(daemon));

  // The client keeps working: host windows, a ring, signals, a verified write.
  auto dst = jb->create_window(64 << 10);  // rank 1's window 1
  auto sig_b = jb->open_signals(2);
  auto ring = ja->open_ring(64);
  REQUIRE(dst.ok());
  REQUIRE(sig_b.ok());
  REQUIRE(ring.ok());
  auto fbar = std::async(std::launch::async, [&] { return jb->barrier(10s); });
  REQUIRE(ja->barrier(10s).ok());
  REQUIRE(fbar.get().ok());
  for (uint32_t i = 0; i < (64u << 10); ++i) h2->data()[i] = static_cast<uint8_t>(i * 13 + 5);
  REQUIRE((*ring)->post_write_signal(1, *h2, 0, 1, 0, 64 << 10, SignalRef{1, 1}).ok());
  REQUIRE(sig_b->wait(1, 1, 10s).ok());
  CHECK(std::memcmp(h2->data(), dst->data(), 64 << 10) == 0);
  REQUIRE((*ring)->flush(10s).ok());
  CHECK((*ring)->error().ok());

  // Status: per client, host vs device windows.
  auto [jcode, json] = a.epxctl({"status", "--json"});
  CHECK(jcode == 0);
  const size_t at = json.find("\"device-window-client\"");
  REQUIRE(at != std::string::npos);
  CHECK(field_after(json, at, "windows") == "2");
  CHECK(field_after(json, at, "hostWindows") == "2");
  CHECK(field_after(json, at, "deviceWindows") == "0");
  CHECK(a.process().running());
}
