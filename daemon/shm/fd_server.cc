#include "daemon/shm/fd_server.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

#include <spdlog/spdlog.h>

#include "daemon/shm/local_socket.h"
#include "fd_protocol.h"

namespace epx::daemon {

using boost::asio::local::stream_protocol;

FdServer::FdServer(boost::asio::io_context& io, const RegionTable& regions, SubmittedFds& submitted,
                   SubmitterCheck check_submitter)
    : io_(io), acceptor_(io), regions_(regions), submitted_(submitted), check_submitter_(std::move(check_submitter)) {}

FdServer::~FdServer() { close(); }

Status FdServer::listen(const std::string& path, const std::string& group) {
  EPX_RETURN_IF_ERROR(bind_local_socket(acceptor_, path, group));
  path_ = path;
  accept_next();
  return Status();
}

namespace {

// A client attaching more descriptors than this to one message is refused;
// the kernel closes any that do not fit the control buffer.
constexpr size_t kMaxPassedFds = 4;
constexpr size_t kRequestBytes = sizeof(fdproto::FdRequest);

// One request/reply exchange; owns its socket and its timeout.
struct Exchange : std::enable_shared_from_this<Exchange> {
  Exchange(boost::asio::io_context& io, stream_protocol::socket s, const RegionTable& r, SubmittedFds& f,
           const FdServer::SubmitterCheck& c)
      : socket(std::move(s)), timer(io), regions(r), submitted(f), check_submitter(c) {}

  void start() {
    auto self = shared_from_this();
    timer.expires_after(std::chrono::seconds(1));
    timer.async_wait([self](const boost::system::error_code& ec) {
      if (!ec) self->socket.close();  // silent client: drop it
    });
    read_more();
  }

  void read_more() {
    auto self = shared_from_this();
    socket.async_wait(stream_protocol::socket::wait_read, [self](const boost::system::error_code& ec) {
      if (ec) return;  // closed by the timer, or the io_context stops
      self->receive();
    });
  }

  // recvmsg, not a plain read: a read would discard (close) descriptors
  // the client attached to the request.
  void receive() {
    iovec iov{request + received, kRequestBytes - received};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxPassedFds)] = {};
    msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t n = ::recvmsg(socket.native_handle(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return read_more();
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        passed.emplace_back(fd);
      }
    }
    if ((msg.msg_flags & MSG_CTRUNC) != 0) too_many_fds = true;
    if (n <= 0) {  // the client hung up (or the socket failed) before a whole request
      timer.cancel();
      return;
    }
    received += static_cast<size_t>(n);
    if (received < kRequestBytes) return read_more();
    timer.cancel();
    answer();
  }

  void answer() {
    uint64_t magic = 0, argument = 0;
    std::memcpy(&magic, request, sizeof(magic));
    std::memcpy(&argument, request + sizeof(magic), sizeof(argument));
    fdproto::FdReply reply = {};
    reply.magic = fdproto::kMagic;
    ucred cred = {};
    socklen_t len = sizeof(cred);
    int send_fd = -1;
    Status status;
    const char* what = "fd request";
    if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      status = internal_error(std::string("SO_PEERCRED: ") + std::strerror(errno));
    } else if (magic == fdproto::kMagic) {
      if (!passed.empty()) {
        status = invalid_argument("a fetch request carries no descriptors");
      } else {
        auto region = regions.fetch(argument, cred.pid);
        if (region.ok()) {
          send_fd = (*region)->fd();
          reply.size = (*region)->size();
          held = std::move(region.value());  // keep the fd open until sent
        } else {
          status = region.status();
        }
      }
    } else if (magic == fdproto::kSubmitMagic) {
      what = "fd submit";
      if (passed.size() != 1 || too_many_fds) {
        status = invalid_argument("a submit carries exactly one descriptor; got " +
                                  std::string(too_many_fds ? "more than " : "") + std::to_string(passed.size()));
      } else if (Status owner = check_submitter(argument, cred.pid); !owner.ok()) {
        status = owner;
      } else {
        // dma-bufs answer SEEK_END with their size: the daemon checks the
        // window against it later; here it is only reported back. Nothing
        // else is asked of other descriptors (a file on a FUSE mount could
        // block the call), the window call refuses them.
        const off_t size = is_dmabuf(passed[0].get()) ? ::lseek(passed[0].get(), 0, SEEK_END) : 0;
        auto token = submitted.add(std::move(passed[0]), cred.pid, argument);
        passed.clear();
        if (token.ok()) {
          reply.token = *token;
          reply.size = size > 0 ? static_cast<uint64_t>(size) : 0;
          spdlog::debug("fd socket: pid {} submitted a descriptor for client {} ({} bytes)", cred.pid, argument,
                        reply.size);
        } else {
          status = token.status();
        }
      }
    } else {
      status = invalid_argument("bad fd request magic");
    }
    passed.clear();  // anything not kept is closed here
    reply.status = static_cast<int32_t>(status.code());
    std::strncpy(reply.message, status.message().c_str(), sizeof(reply.message) - 1);

    iovec iov{&reply, sizeof(reply)};
    msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    if (send_fd >= 0) {
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(c), &send_fd, sizeof(int));
    }
    // The reply is 256 bytes on a fresh unix socket: it fits the send buffer.
    if (::sendmsg(socket.native_handle(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT) != static_cast<ssize_t>(sizeof(reply))) {
      spdlog::warn("fd socket: reply to pid {} failed: {}", cred.pid, std::strerror(errno));
    }
    if (!status.ok()) spdlog::warn("fd socket: {} of pid {} refused: {}", what, cred.pid, status.message());
  }

  stream_protocol::socket socket;
  boost::asio::steady_timer timer;
  const RegionTable& regions;
  SubmittedFds& submitted;
  FdServer::SubmitterCheck check_submitter;  // a copy: an exchange may outlive the server
  char request[kRequestBytes] = {};
  size_t received = 0;
  std::vector<UniqueFd> passed;  // descriptors the client attached
  bool too_many_fds = false;
  std::shared_ptr<SharedRegion> held;
};

}  // namespace

void FdServer::accept_next() {
  acceptor_.async_accept([this](const boost::system::error_code& ec, stream_protocol::socket socket) {
    if (ec == boost::asio::error::operation_aborted) return;
    if (!ec) std::make_shared<Exchange>(io_, std::move(socket), regions_, submitted_, check_submitter_)->start();
    accept_next();
  });
}

void FdServer::close() { close_local_socket(acceptor_, path_); }

}  // namespace epx::daemon
