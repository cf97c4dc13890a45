// The exchange baseline across two processes: side B of every pair runs in
// a program of its own (fabric_exchange_peer), spawned here, as EPX's two
// daemons on one host are two processes. shm then moves the data as it
// does between the daemons (a copy by the receiving process through CMA, or
// through its bounce buffers where the kernel forbids CMA between the two),
// not inside one process, where it can always use CMA on itself.
//
// Control crosses a socketpair: the endpoints' addresses once, then before
// every size one byte each way (both sides are ready), and after it the
// peer's verdict. Every read waits at most stall_timeout, and a peer that
// is still running when this returns is killed.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "tools/bench/measure.h"
#include "tools/bench/stats.h"

extern char** environ;

namespace epx::bench {
namespace {

constexpr char kGo = 'g';
constexpr uint8_t kSizeDone = 0, kSizeFailed = 1;
constexpr uint32_t kMaxAddressBytes = 4096, kMaxMessageBytes = 1 << 16;

std::string errno_text() { return std::strerror(errno); }

Status write_all(int fd, const void* data, size_t n, const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    // send, not write: a peer that exited must give an error, not SIGPIPE.
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return unavailable("sending " + what + " to the exchange peer: " + errno_text());
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status();
}

Status read_all(int fd, void* data, size_t n, std::chrono::milliseconds timeout, const std::string& what) {
  char* p = static_cast<char*>(data);
  const Clock::time_point deadline = Clock::now() + timeout;
  while (n > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      return deadline_exceeded("waited " + std::to_string(timeout.count()) + " ms for " + what +
                               " from the exchange peer");
    }
    pollfd pfd{fd, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;  // the deadline check above names it
    const ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return unavailable("the exchange peer closed its end before sending " + what);
    if (r < 0) return unavailable("reading " + what + " from the exchange peer: " + errno_text());
    p += r;
    n -= static_cast<size_t>(r);
  }
  return Status();
}

using Endpoints = std::vector<std::unique_ptr<BenchEndpoint>>;

Result<Endpoints> open_endpoints(const BaselineOptions& options, const std::vector<size_t>& sizes, size_t pairs,
                                 const std::string& side) {
  const size_t largest = *std::max_element(sizes.begin(), sizes.end());
  Endpoints eps;
  for (size_t p = 0; p < pairs; ++p) {
    auto ep = open_endpoint(options.provider, options.domains, side + std::to_string(p), share_of(largest, pairs, 0),
                            kPingPongContexts);
    if (!ep.ok()) return ep.status();
    eps.push_back(std::move(ep.value()));
  }
  return eps;
}

// Each endpoint's address and buffer, then the peer's, and connects them.
Status connect_across(int fd, Endpoints& eps, std::chrono::milliseconds timeout) {
  for (const auto& ep : eps) {
    const std::string& address = ep->rail().address();
    const uint32_t len = static_cast<uint32_t>(address.size());
    const RemoteBuffer buffer = ep->remote();
    EPX_RETURN_IF_ERROR(write_all(fd, &len, sizeof(len), "an address length"));
    EPX_RETURN_IF_ERROR(write_all(fd, address.data(), len, "an address"));
    EPX_RETURN_IF_ERROR(write_all(fd, &buffer, sizeof(buffer), "a buffer"));
  }
  for (auto& ep : eps) {
    uint32_t len = 0;
    RemoteBuffer buffer;
    EPX_RETURN_IF_ERROR(read_all(fd, &len, sizeof(len), timeout, "an address length"));
    if (len == 0 || len > kMaxAddressBytes)
      return internal_error("exchange peer sent an address of " + std::to_string(len) + " bytes");
    std::string address(len, '\0');
    EPX_RETURN_IF_ERROR(read_all(fd, address.data(), len, timeout, "an address"));
    EPX_RETURN_IF_ERROR(read_all(fd, &buffer, sizeof(buffer), timeout, "a buffer"));
    EPX_RETURN_IF_ERROR(ep->connect("the peer process's endpoint", address, buffer));
  }
  return Status();
}

// Both sides ready for the next size: one byte each way.
Status meet(int fd, std::chrono::milliseconds timeout, const std::string& what) {
  EPX_RETURN_IF_ERROR(write_all(fd, &kGo, 1, what));
  char got = 0;
  EPX_RETURN_IF_ERROR(read_all(fd, &got, 1, timeout, what));
  if (got != kGo) return internal_error("exchange peer sent " + std::to_string(got) + " for " + what);
  return Status();
}

// Every pair's share of `bytes` at once, a thread each; with `points`, each
// pair's median and p99 round (us).
Status run_size(Endpoints& eps, const BaselineOptions& options, size_t bytes, std::vector<ExchangePoint>* points) {
  const size_t pairs = eps.size();
  std::vector<Status> status(pairs);
  std::vector<std::vector<double>> round_ns(pairs);
  PairControl control;  // this process's threads only: the peer's failure shows as a stall
  auto side = [&](size_t p) {
    Channel c(*eps[p], control, options.stall_timeout);
    const size_t share = share_of(bytes, pairs, p);
    status[p] = exchange_rounds(c, share, options.writes, warmup_ops(options, share),
                                points != nullptr ? &round_ns[p] : nullptr);
    if (!status[p].ok()) control.failed.store(true, std::memory_order_relaxed);
  };
  std::vector<std::thread> threads;
  for (size_t p = 1; p < pairs; ++p) threads.emplace_back(side, p);
  side(0);
  for (std::thread& t : threads) t.join();
  for (size_t p = 0; p < pairs; ++p) {
    if (!status[p].ok())
      return status[p].with_context("pair " + std::to_string(p) + ", " + std::to_string(bytes) + " bytes");
    if (points != nullptr) {
      points->push_back({bytes, quantile(round_ns[p], 0.5) / 1e3, quantile(round_ns[p], 0.99) / 1e3});
    }
  }
  return Status();
}

// The spawned peer: killed and reaped on every path that leaves it running.
class PeerProcess {
 public:
  explicit PeerProcess(pid_t pid) : pid_(pid) {}
  PeerProcess(const PeerProcess&) = delete;
  PeerProcess& operator=(const PeerProcess&) = delete;
  ~PeerProcess() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  // Waits up to `timeout` for the peer to exit; its exit status as text.
  Result<int> wait(std::chrono::milliseconds timeout) {
    const Clock::time_point deadline = Clock::now() + timeout;
    for (;;) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (Clock::now() > deadline) {
        return deadline_exceeded("the exchange peer did not exit within " + std::to_string(timeout.count()) + " ms");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

 private:
  pid_t pid_;
};

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

Result<std::vector<ExchangePoint>> exchange_across_processes(const BaselineOptions& options,
                                                             const std::vector<size_t>& sizes, size_t pairs) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return unavailable("socketpair for the exchange peer: " + errno_text());
  }
  Fd ours{sv[0]}, theirs{sv[1]};
  // The peer finds its end as fd 3 (dup2 clears close-on-exec).
  std::vector<std::string> args = {options.peer_binary,
                                   "--fd",
                                   "3",
                                   "--provider",
                                   options.provider,
                                   "--pairs",
                                   std::to_string(pairs),
                                   "--warmup",
                                   std::to_string(options.warmup),
                                   "--stall-ms",
                                   std::to_string(options.stall_timeout.count()),
                                   "--writes",
                                   std::to_string(options.writes)};
  for (const std::string& d : options.domains) args.insert(args.end(), {"--domain", d});
  std::string list;
  for (size_t s : sizes) list += (list.empty() ? "" : ",") + std::to_string(s);
  args.insert(args.end(), {"--sizes", list});
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, theirs.fd, 3);
  pid_t pid = -1;
  const int spawned = posix_spawn(&pid, options.peer_binary.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) {
    return failed_precondition("cannot start the exchange peer " + options.peer_binary + ": " + std::strerror(spawned));
  }
  PeerProcess peer(pid);
  ::close(theirs.fd);
  theirs.fd = -1;

  auto fail = [&](const Status& s) -> Status {
    // A peer that already exited says why in its status: name it.
    auto exited = peer.wait(std::chrono::milliseconds(200));
    return exited.ok() ? s.with_context("exchange peer exited with status " + std::to_string(*exited)) : s;
  };
  auto eps = open_endpoints(options, sizes, pairs, "A");
  if (!eps.ok()) return eps.status().with_context("exchange across processes");
  Status connected = connect_across(ours.fd, *eps, options.stall_timeout);
  if (!connected.ok()) return fail(connected);
  std::vector<ExchangePoint> points;
  for (size_t bytes : sizes) {
    Status ready = meet(ours.fd, options.stall_timeout, "the start of " + std::to_string(bytes) + " bytes");
    if (!ready.ok()) return fail(ready);
    std::vector<ExchangePoint> per_pair;
    Status ran = run_size(*eps, options, bytes, &per_pair);
    uint8_t verdict = kSizeFailed;
    Status heard =
        read_all(ours.fd, &verdict, 1, options.stall_timeout, "its verdict on " + std::to_string(bytes) + " bytes");
    if (heard.ok() && verdict == kSizeFailed) {
      uint32_t len = 0;
      std::string why = "(no reason sent)";
      if (read_all(ours.fd, &len, sizeof(len), options.stall_timeout, "a failure's length").ok() &&
          len <= kMaxMessageBytes) {
        why.assign(len, '\0');
        if (!read_all(ours.fd, why.data(), len, options.stall_timeout, "a failure").ok()) why = "(reason cut off)";
      }
      return internal_error("exchange peer failed at " + std::to_string(bytes) + " bytes: " + why +
                            (ran.ok() ? "" : "; this side: " + ran.to_string()));
    }
    if (!ran.ok()) return fail(ran);
    if (!heard.ok()) return fail(heard);
    ExchangePoint slowest{bytes, 0, 0};
    for (const ExchangePoint& p : per_pair) {
      slowest.round_us = std::max(slowest.round_us, p.round_us);
      slowest.p99_us = std::max(slowest.p99_us, p.p99_us);
    }
    points.push_back(slowest);
  }
  auto exited = peer.wait(options.stall_timeout);
  if (!exited.ok()) return exited.status();
  if (*exited != 0)
    return internal_error("exchange peer exited with status " + std::to_string(*exited) + " after the run");
  return points;
}

Status serve_exchange_peer(int fd, const BaselineOptions& options, const std::vector<size_t>& sizes, size_t pairs) {
  auto eps = open_endpoints(options, sizes, pairs, "B");
  if (!eps.ok()) return eps.status();
  EPX_RETURN_IF_ERROR(connect_across(fd, *eps, options.stall_timeout));
  for (size_t bytes : sizes) {
    EPX_RETURN_IF_ERROR(meet(fd, options.stall_timeout, "the start of " + std::to_string(bytes) + " bytes"));
    const Status ran = run_size(*eps, options, bytes, nullptr);
    const uint8_t verdict = ran.ok() ? kSizeDone : kSizeFailed;
    EPX_RETURN_IF_ERROR(write_all(fd, &verdict, 1, "a verdict"));
    if (!ran.ok()) {
      const std::string why = ran.to_string();
      const uint32_t len = static_cast<uint32_t>(std::min<size_t>(why.size(), kMaxMessageBytes));
      EPX_RETURN_IF_ERROR(write_all(fd, &len, sizeof(len), "a failure's length"));
      EPX_RETURN_IF_ERROR(write_all(fd, why.data(), len, "a failure"));
      return ran;
    }
  }
  return Status();
}

}  // namespace epx::bench
