#include "daemon/shm/fd_server.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

#include <spdlog/spdlog.h>

#include "daemon/shm/fd_request.h"
#include "daemon/shm/local_socket.h"
#include "proto/fd/fd_protocol.h"
#include "proto/fd/scm_rights.h"

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
constexpr size_t kRequestBytes = kFdRequestBytes;

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
    auto got = receive_with_fds(socket.native_handle(), request + received, kRequestBytes - received, kMaxPassedFds,
                                MSG_DONTWAIT);
    if (got.ok() && got->would_block) return read_more();
    if (got.ok()) {
      for (UniqueFd& fd : got->fds) passed.push_back(std::move(fd));
      if (got->truncated) too_many_fds = true;
    }
    if (!got.ok() || got->bytes == 0) {  // the client hung up (or the socket failed) before a whole request
      timer.cancel();
      return;
    }
    received += got->bytes;
    if (received < kRequestBytes) return read_more();
    timer.cancel();
    answer();
  }

  void answer() {
    ucred cred = {};
    socklen_t len = sizeof(cred);
    FdAnswer answer;
    if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      answer.reply.magic = fdproto::kMagic;
      answer.status = internal_error(std::string("SO_PEERCRED: ") + std::strerror(errno));
      answer.reply.status = static_cast<int32_t>(answer.status.code());
      std::strncpy(answer.reply.message, answer.status.message().c_str(), sizeof(answer.reply.message) - 1);
      passed.clear();
    } else {
      answer = answer_fd_request(FdRequestFrom{request, cred.pid, std::move(passed), too_many_fds}, regions,
                                 submitted, check_submitter);
    }

    // The reply is 256 bytes on a fresh unix socket: it fits the send buffer.
    // answer.region keeps the descriptor open until it is sent.
    const std::vector<int> attached = answer.region ? std::vector<int>{answer.region->fd()} : std::vector<int>{};
    if (Status sent = send_with_fds(socket.native_handle(), &answer.reply, sizeof(answer.reply), attached,
                                    MSG_DONTWAIT);
        !sent.ok()) {
      spdlog::warn("fd socket: reply to pid {} failed: {}", cred.pid, sent.message());
    }
    if (!answer.status.ok()) {
      spdlog::warn("fd socket: {} of pid {} refused: {}", answer.what, cred.pid, answer.status.message());
    }
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
