// Fuzz target: the fd socket's request handling (daemon/shm/fd_request.h):
// 16 request bytes, the caller's pid and the descriptors it attached, as a
// client on the socket controls them. The daemon's tables hold a few
// regions and submitted descriptors of two processes; tokens the input
// cannot guess are reached by index. The table state persists across
// inputs, as in a running daemon.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "daemon/shm/fd_request.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using epx::daemon::FdRequestFrom;
using epx::fuzz::FuzzInput;
namespace fdproto = epx::fdproto;

constexpr pid_t kOwner = 4242;  // the process the regions belong to
constexpr pid_t kOther = 4343;

struct Daemon {
  epx::daemon::RegionTable regions;
  epx::daemon::SubmittedFds submitted{std::chrono::milliseconds(fdproto::kSubmitTtlMs)};
  std::vector<uint64_t> tokens;  // regions' and submitted descriptors' tokens
  Daemon() {
    for (size_t size : {4096, 65536}) {
      auto region = epx::daemon::SharedRegion::create("fuzz", size);
      if (!region.ok()) std::abort();
      tokens.push_back(regions.add(std::move(region.value()), kOwner));
    }
  }
};

Daemon& daemon() {
  static Daemon* d = new Daemon();  // lives for the process, like epxd's
  return *d;
}

// Clients 1 and 2 belong to kOwner, client 3 to kOther.
epx::Status check_submitter(uint64_t client_id, pid_t pid) {
  const bool mine = (client_id == 1 || client_id == 2) ? pid == kOwner : client_id == 3 && pid == kOther;
  return mine ? epx::Status() : epx::permission_denied("client " + std::to_string(client_id) + " is not yours");
}

epx::UniqueFd some_descriptor(uint8_t kind) {
  switch (kind % 3) {
    case 0: return epx::UniqueFd(::memfd_create("fuzz", MFD_CLOEXEC));
    case 1: return epx::UniqueFd(::dup(STDIN_FILENO));
    default: {
      int pipe_fds[2];
      if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return epx::UniqueFd();
      ::close(pipe_fds[1]);
      return epx::UniqueFd(pipe_fds[0]);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Daemon& d = daemon();
  FuzzInput in(data, size);
  while (!in.empty()) {
    char bytes[epx::daemon::kFdRequestBytes] = {};
    const std::string raw = in.take_bytes(sizeof(bytes));
    std::memcpy(bytes, raw.data(), raw.size());
    const uint8_t shape = in.take<uint8_t>();
    uint64_t magic = (shape & 3) == 1 ? fdproto::kMagic : (shape & 3) == 2 ? fdproto::kSubmitMagic : 0;
    if (magic != 0) std::memcpy(bytes, &magic, sizeof(magic));
    if (shape & 4) {  // a token the daemon handed out, not a guess
      const uint64_t token = d.tokens[in.take<uint8_t>() % d.tokens.size()];
      std::memcpy(bytes + 8, &token, sizeof(token));
    }
    FdRequestFrom request;
    request.bytes = bytes;
    request.pid = (shape & 8) ? kOther : kOwner;
    for (uint8_t n = in.take<uint8_t>() % 4; n > 0; --n) request.passed.push_back(some_descriptor(in.take<uint8_t>()));
    request.too_many_fds = (shape & 16) != 0;
    const size_t passed = request.passed.size();

    auto answer = epx::daemon::answer_fd_request(std::move(request), d.regions, d.submitted, check_submitter);
    const auto& reply = answer.reply;
    if (reply.magic != fdproto::kMagic) std::abort();
    if (reply.message[sizeof(reply.message) - 1] != '\0') std::abort();  // the client reads it as a C string
    if (answer.status.ok() != (reply.status == 0)) std::abort();
    if (answer.region && (!answer.status.ok() || passed != 0 || reply.size != answer.region->size())) std::abort();
    if (reply.token != 0) {
      if (!answer.status.ok() || passed != 1) std::abort();
      if (d.tokens.size() < 64) d.tokens.push_back(reply.token);
    }
  }
  // Unclaimed descriptors do not pile up across inputs.
  d.submitted.drop_client(1);
  d.submitted.drop_client(2);
  d.submitted.drop_client(3);
  return 0;
}
