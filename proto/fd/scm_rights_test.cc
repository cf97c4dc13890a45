// send_with_fds / receive_with_fds over a socketpair: descriptors arrive
// close-on-exec and name the same objects, extra ones are reported as
// truncated, nonblocking reads say would_block, and every failure is a
// Status (never a SIGPIPE).
#include "proto/fd/scm_rights.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <thread>
#include <pthread.h>

using namespace epx;

namespace {

struct SocketPair {
  SocketPair() {
    int fds[2] = {-1, -1};
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    a.reset(fds[0]);
    b.reset(fds[1]);
  }
  UniqueFd a, b;
};

UniqueFd memfd() {
  UniqueFd fd(::memfd_create("scm-rights-test", 0));  // no CLOEXEC: the receiver's copy must get it anyway
  REQUIRE(fd);
  return fd;
}

ino_t inode(int fd) {
  struct stat st = {};
  REQUIRE(::fstat(fd, &st) == 0);
  return st.st_ino;
}

}  // namespace

TEST_CASE("bytes and descriptors arrive together, close-on-exec, naming the same objects") {
  SocketPair s;
  UniqueFd one = memfd(), two = memfd();
  const char text[] = "hello";
  REQUIRE(send_with_fds(s.a.get(), text, sizeof(text), {one.get(), two.get()}).ok());
  char buffer[sizeof(text)] = {};
  auto r = receive_with_fds(s.b.get(), buffer, sizeof(buffer), 2, MSG_WAITALL);
  REQUIRE_MESSAGE(r.ok(), r.status().to_string());
  CHECK(r->bytes == sizeof(text));
  CHECK(std::memcmp(buffer, text, sizeof(text)) == 0);
  CHECK_FALSE(r->truncated);
  CHECK_FALSE(r->would_block);
  REQUIRE(r->fds.size() == 2);
  CHECK(inode(r->fds[0].get()) == inode(one.get()));
  CHECK(inode(r->fds[1].get()) == inode(two.get()));
  for (const UniqueFd& fd : r->fds) CHECK((::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC) != 0);
}

TEST_CASE("plain bytes carry no descriptors") {
  SocketPair s;
  const uint64_t value = 42;
  REQUIRE(send_with_fds(s.a.get(), &value, sizeof(value), {}).ok());
  uint64_t got = 0;
  auto r = receive_with_fds(s.b.get(), &got, sizeof(got), 1, MSG_WAITALL);
  REQUIRE(r.ok());
  CHECK(r->bytes == sizeof(got));
  CHECK(got == value);
  CHECK(r->fds.empty());
}

TEST_CASE("descriptors beyond what the receiver takes are reported and closed") {
  SocketPair s;
  std::vector<UniqueFd> owned;
  std::vector<int> fds;
  for (size_t i = 0; i < kMaxFdsPerMessage; ++i) {
    owned.push_back(memfd());
    fds.push_back(owned.back().get());
  }
  const char byte = 'x';
  REQUIRE(send_with_fds(s.a.get(), &byte, 1, fds).ok());
  char got = 0;
  auto r = receive_with_fds(s.b.get(), &got, 1, 1);
  REQUIRE(r.ok());
  CHECK(r->truncated);
  CHECK(r->fds.size() < kMaxFdsPerMessage);
}

TEST_CASE("a nonblocking receive with nothing to read would block; a closed peer reads 0 bytes") {
  SocketPair s;
  char got = 0;
  auto empty = receive_with_fds(s.b.get(), &got, 1, 1, MSG_DONTWAIT);
  REQUIRE(empty.ok());
  CHECK(empty->would_block);
  CHECK(empty->bytes == 0);
  s.a.reset();
  auto closed = receive_with_fds(s.b.get(), &got, 1, 1);
  REQUIRE(closed.ok());
  CHECK_FALSE(closed->would_block);
  CHECK(closed->bytes == 0);
}

TEST_CASE("bad arguments and a vanished peer are errors with a reason") {
  SocketPair s;
  const char byte = 'x';
  CHECK(send_with_fds(s.a.get(), &byte, 1, {-1}).code() == StatusCode::kInvalidArgument);
  CHECK(send_with_fds(s.a.get(), &byte, 0, {s.a.get()}).code() == StatusCode::kInvalidArgument);
  CHECK(send_with_fds(s.a.get(), &byte, 1, std::vector<int>(kMaxFdsPerMessage + 1, s.a.get())).code() ==
        StatusCode::kInvalidArgument);
  char got = 0;
  CHECK(receive_with_fds(s.b.get(), &got, 1, 0).status().code() == StatusCode::kInvalidArgument);
  CHECK(receive_with_fds(s.b.get(), &got, 1, kMaxFdsPerMessage + 1).status().code() == StatusCode::kInvalidArgument);
  s.b.reset();
  const Status sent = send_with_fds(s.a.get(), &byte, 1, {});  // EPIPE, and no SIGPIPE kills the test
  CHECK(sent.code() == StatusCode::kUnavailable);
  CHECK(sent.message().find("sendmsg") != std::string::npos);
  CHECK(receive_with_fds(-1, &got, 1, 1).status().code() == StatusCode::kUnavailable);
}

TEST_CASE("a blocking receive interrupted by a signal keeps waiting for the message") {
  // A handler without SA_RESTART: recvmsg then fails with EINTR instead of
  // being restarted by the kernel, as it does in a process whose signal
  // handlers were installed that way (or with SO_RCVTIMEO set).
  struct sigaction quiet = {}, previous = {};
  quiet.sa_handler = [](int) {};
  sigemptyset(&quiet.sa_mask);
  REQUIRE(::sigaction(SIGUSR1, &quiet, &previous) == 0);
  SocketPair s;
  Result<ReceivedFds> got = internal_error("not received");
  char byte = 0;
  std::thread receiver([&] { got = receive_with_fds(s.b.get(), &byte, 1, 1); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // it waits in recvmsg by now
  REQUIRE(::pthread_kill(receiver.native_handle(), SIGUSR1) == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const char sent = 'x';
  REQUIRE(::write(s.a.get(), &sent, 1) == 1);
  receiver.join();
  ::sigaction(SIGUSR1, &previous, nullptr);
  REQUIRE_MESSAGE(got.ok(), got.status().to_string());
  CHECK(got->bytes == 1);
  CHECK(byte == 'x');
}
