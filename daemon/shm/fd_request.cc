#include "daemon/shm/fd_request.h"

#include <unistd.h>

#include <cstring>

#include <spdlog/spdlog.h>

namespace epx::daemon {

FdAnswer answer_fd_request(FdRequestFrom request, const RegionTable& regions, SubmittedFds& submitted,
                           const FdSubmitterCheck& check_submitter) {
  uint64_t magic = 0, argument = 0;
  std::memcpy(&magic, request.bytes, sizeof(magic));
  std::memcpy(&argument, request.bytes + sizeof(magic), sizeof(argument));
  FdAnswer answer;
  answer.reply.magic = fdproto::kMagic;
  std::vector<UniqueFd>& passed = request.passed;
  if (magic == fdproto::kMagic) {
    if (!passed.empty()) {
      answer.status = invalid_argument("a fetch request carries no descriptors");
    } else if (auto region = regions.fetch(argument, request.pid); region.ok()) {
      answer.reply.size = (*region)->size();
      answer.region = std::move(region.value());
    } else {
      answer.status = region.status();
    }
  } else if (magic == fdproto::kSubmitMagic) {
    answer.what = "fd submit";
    if (passed.size() != 1 || request.too_many_fds) {
      answer.status = invalid_argument("a submit carries exactly one descriptor; got " +
                                       std::string(request.too_many_fds ? "more than " : "") +
                                       std::to_string(passed.size()));
    } else if (Status owner = check_submitter(argument, request.pid); !owner.ok()) {
      answer.status = owner;
    } else {
      // dma-bufs answer SEEK_END with their size: the daemon checks the
      // window against it later; here it is only reported back. Nothing
      // else is asked of other descriptors (a file on a FUSE mount could
      // block the call), the window call refuses them.
      const off_t size = is_dmabuf(passed[0].get()) ? ::lseek(passed[0].get(), 0, SEEK_END) : 0;
      auto token = submitted.add(std::move(passed[0]), request.pid, argument);
      if (token.ok()) {
        answer.reply.token = *token;
        answer.reply.size = size > 0 ? static_cast<uint64_t>(size) : 0;
        spdlog::debug("fd socket: pid {} submitted a descriptor for client {} ({} bytes)", request.pid, argument,
                      answer.reply.size);
      } else {
        answer.status = token.status();
      }
    }
  } else {
    answer.status = invalid_argument("bad fd request magic");
  }
  passed.clear();  // anything not kept is closed here
  answer.reply.status = static_cast<int32_t>(answer.status.code());
  std::strncpy(answer.reply.message, answer.status.message().c_str(), sizeof(answer.reply.message) - 1);
  return answer;
}

}  // namespace epx::daemon
