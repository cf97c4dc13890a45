#include "fd_socket.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "proto/fd/scm_rights.h"

namespace epx {
namespace {

// A unix stream socket connected to `path`; sends and receives time out
// after 5 s (the daemon answers at once).
Result<UniqueFd> connect_fd_socket(const std::string& path) {
  UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!sock) return unavailable(std::string("socket: ") + std::strerror(errno));
  timeval tv{5, 0};  // the daemon answers at once; never wait longer than this
  ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(sock.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return invalid_argument("fd socket path too long: " + path);
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return unavailable("connect to epxd fd socket " + path + ": " + std::strerror(errno));
  }
  return sock;
}

}  // namespace

Result<FdAnswer> fd_request(const std::string& fd_socket, const void* request, size_t bytes, int attach,
                            const std::string& what) {
  EPX_ASSIGN_OR_RETURN(UniqueFd sock, connect_fd_socket(fd_socket));
  const std::vector<int> attached = attach >= 0 ? std::vector<int>{attach} : std::vector<int>{};
  // One sendmsg: a descriptor travels with the request's first byte.
  EPX_RETURN_IF_ERROR(send_with_fds(sock.get(), request, bytes, attached)
                          .with_context(what + ": request to epxd fd socket " + fd_socket));
  FdAnswer answer;
  auto received = receive_with_fds(sock.get(), &answer.reply, sizeof(answer.reply), 1, MSG_WAITALL);
  if (!received.ok()) {
    return unavailable("bad reply from epxd fd socket " + fd_socket + ": " + received.status().message());
  }
  if (received->bytes != sizeof(answer.reply) || answer.reply.magic != fdproto::kMagic) {
    return unavailable("bad reply from epxd fd socket " + fd_socket);
  }
  if (answer.reply.status != 0) {
    answer.reply.message[sizeof(answer.reply.message) - 1] = '\0';
    return Status(static_cast<StatusCode>(answer.reply.status), what + ": " + answer.reply.message);
  }
  if (!received->fds.empty()) answer.fd = std::move(received->fds.front());
  return answer;
}

Result<uint64_t> submit_fd(const std::string& fd_socket, uint64_t client_id, int fd) {
  if (fd < 0) return invalid_argument("no descriptor to send (fd " + std::to_string(fd) + ")");
  const fdproto::FdSubmit submit{fdproto::kSubmitMagic, client_id};
  EPX_ASSIGN_OR_RETURN(FdAnswer answer, fd_request(fd_socket, &submit, sizeof(submit), fd,
                                                   "sending a descriptor to epxd"));
  if (answer.reply.token == 0) return internal_error("epxd took the descriptor but sent no token");
  return answer.reply.token;
}

}  // namespace epx
