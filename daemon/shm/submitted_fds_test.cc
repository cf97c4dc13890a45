// SubmittedFds: owner checks, one use per token, limits, expiry, release on
// session end, and that every descriptor it lets go of is closed.
#include "daemon/shm/submitted_fds.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/mman.h>

using namespace epx;
using namespace epx::daemon;
using namespace std::chrono_literals;

namespace {

UniqueFd fresh_fd() {
  int fd = ::memfd_create("submitted-fds-test", MFD_CLOEXEC);
  REQUIRE(fd >= 0);
  return UniqueFd(fd);
}

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

}  // namespace

TEST_CASE("only the submitting process and client claim a descriptor, once") {
  SubmittedFds fds(10s);
  UniqueFd fd = fresh_fd();
  const int raw = fd.get();
  auto token = fds.add(std::move(fd), /*owner=*/100, /*client_id=*/7);
  REQUIRE(token.ok());
  CHECK(*token != 0);
  CHECK(fds.take(*token, 101, 7).status().code() == StatusCode::kPermissionDenied);
  CHECK(fds.take(*token, 100, 8).status().code() == StatusCode::kPermissionDenied);
  CHECK(fds.take(*token + 1, 100, 7).status().code() == StatusCode::kNotFound);
  auto claimed = fds.take(*token, 100, 7);
  REQUIRE(claimed.ok());
  CHECK(claimed->get() == raw);
  CHECK(fds.take(*token, 100, 7).status().code() == StatusCode::kNotFound);
  CHECK(fds.size() == 0);
}

TEST_CASE("unclaimed descriptors are closed at their deadline and when their client goes") {
  SubmittedFds fds(100ms);
  const auto now = SubmittedFds::Clock::now();
  UniqueFd a = fresh_fd(), b = fresh_fd(), c = fresh_fd();
  const int ra = a.get(), rb = b.get(), rc = c.get();
  REQUIRE(fds.add(std::move(a), 1, 1, now).ok());
  REQUIRE(fds.add(std::move(b), 1, 1, now + 1s).ok());
  REQUIRE(fds.add(std::move(c), 2, 2, now + 1s).ok());
  fds.expire(now + 500ms);
  CHECK_FALSE(is_open(ra));
  CHECK(is_open(rb));
  CHECK(fds.size() == 2);
  fds.drop_client(1);
  CHECK_FALSE(is_open(rb));
  CHECK(is_open(rc));
  CHECK(fds.size() == 1);
}

TEST_CASE("a client cannot pile up descriptors") {
  SubmittedFds fds(10s);
  for (size_t i = 0; i < SubmittedFds::kMaxPerClient; ++i) REQUIRE(fds.add(fresh_fd(), 1, 1).ok());
  UniqueFd extra = fresh_fd();
  const int raw = extra.get();
  auto refused = fds.add(std::move(extra), 1, 1);
  CHECK(refused.status().code() == StatusCode::kResourceExhausted);
  CHECK_FALSE(is_open(raw));  // closed, not kept
  CHECK(fds.add(fresh_fd(), 2, 2).ok());  // other clients are not affected
}
