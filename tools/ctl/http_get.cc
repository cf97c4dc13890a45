#include "tools/ctl/http_get.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace epx::ctl {
namespace {

class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

int remaining_ms(std::chrono::steady_clock::time_point end) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

}  // namespace

Result<HttpReply> http_get(const std::string& address, const std::string& path, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) return invalid_argument("'" + address + "' is not host:port");
  std::string host = address.substr(0, colon);
  if (host.size() > 1 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";  // a wildcard listener answers locally
  const std::string port = address.substr(colon + 1);
  addrinfo hints = {};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return unavailable("http " + address + ": cannot resolve " + host + ": " + gai_strerror(rc));
  }
  Socket s(::socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  int rc = s.fd() < 0 ? -1 : ::connect(s.fd(), found->ai_addr, found->ai_addrlen);
  freeaddrinfo(found);
  if (rc != 0 && errno != EINPROGRESS) return unavailable("http " + address + ": connect: " + std::strerror(errno));
  pollfd p{s.fd(), POLLOUT, 0};
  if (::poll(&p, 1, remaining_ms(end)) <= 0)
    return deadline_exceeded("http " + address + ": no connection within timeout");
  int err = 0;
  socklen_t len = sizeof(err);
  getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) return unavailable("http " + address + ": connect: " + std::strerror(err));

  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: " + address + "\r\nConnection: close\r\n\r\n";
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(s.fd(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN) return unavailable("http " + address + ": send: " + std::strerror(errno));
    pollfd w{s.fd(), POLLOUT, 0};
    if (::poll(&w, 1, remaining_ms(end)) <= 0)
      return deadline_exceeded("http " + address + ": request not sent in time");
  }
  std::string response;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::recv(s.fd(), buf, sizeof(buf), 0);
    if (n > 0) {
      response.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) break;  // the server closes after its answer
    if (errno != EAGAIN) return unavailable("http " + address + ": recv: " + std::strerror(errno));
    pollfd r{s.fd(), POLLIN, 0};
    if (::poll(&r, 1, remaining_ms(end)) <= 0) {
      return deadline_exceeded("http " + address + path + ": no full answer within " + std::to_string(timeout.count()) +
                               " ms");
    }
  }
  const auto head_end = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos || response.size() < 12) {
    return unavailable("http " + address + path + ": not an HTTP answer");
  }
  HttpReply reply;
  reply.code = std::atoi(response.c_str() + 9);
  reply.body = response.substr(head_end + 4);
  return reply;
}

}  // namespace epx::ctl
