#include "daemon/shm/local_socket.h"

#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

namespace epx::daemon {

using boost::asio::local::stream_protocol;

Status bind_local_socket(stream_protocol::acceptor& acceptor, const std::string& path, const std::string& group) {
  boost::system::error_code ec;
  {
    // Someone answering on the path means another daemon owns it.
    stream_protocol::socket probe(acceptor.get_executor());
    probe.connect(stream_protocol::endpoint(path), ec);
    if (!ec) return failed_precondition("another epxd is already serving " + path);
  }
  ::unlink(path.c_str());
  acceptor.open(stream_protocol(), ec);
  if (!ec) acceptor.bind(stream_protocol::endpoint(path), ec);
  if (ec) return unavailable("cannot bind " + path + ": " + ec.message());
  if (::chmod(path.c_str(), 0660) != 0) return permission_denied("chmod 0660 " + path + ": " + std::strerror(errno));
  if (!group.empty()) {
    struct group* g = ::getgrnam(group.c_str());
    if (g == nullptr) return invalid_argument("socket_group: no group named '" + group + "'");
    if (::chown(path.c_str(), static_cast<uid_t>(-1), g->gr_gid) != 0) {
      return permission_denied("chown :" + group + " " + path + ": " + std::strerror(errno));
    }
  }
  acceptor.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec) return unavailable("listen on " + path + ": " + ec.message());
  return Status();
}

void close_local_socket(stream_protocol::acceptor& acceptor, std::string& path) {
  boost::system::error_code ec;
  if (acceptor.is_open()) acceptor.close(ec);
  if (!path.empty()) {
    ::unlink(path.c_str());
    path.clear();
  }
}

}  // namespace epx::daemon
