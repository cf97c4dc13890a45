// HttpEndpoint: the small HTTP/1.1 server behind metrics_listen. It serves
// GET (and HEAD) of a few paths for Prometheus and Kubernetes probes, one
// request per connection, on its own thread, so a slow scrape never delays
// the daemon's event loop or its gRPC threads.
#pragma once

#include <boost/asio.hpp>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "epx/status.h"

namespace epx::daemon {

struct HttpResponse {
  int code = 200;  // 200, 404, 503, ...
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class HttpEndpoint {
 public:
  // Answers a GET of `path` (no query string); runs on the endpoint's thread.
  using Handler = std::function<HttpResponse(const std::string& path)>;

  // Listens on `listen` (host:port; port 0 picks one) and starts serving.
  // A port that cannot be bound is UNAVAILABLE naming it.
  static Result<std::unique_ptr<HttpEndpoint>> start(const std::string& listen, Handler handler);
  ~HttpEndpoint();  // stops accepting, closes connections, joins the thread

  int port() const { return port_; }

 private:
  explicit HttpEndpoint(Handler handler);
  void accept();

  Handler handler_;
  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer retry_;  // after a failed accept (e.g. out of descriptors)
  int port_ = 0;
  std::thread thread_;
};

}  // namespace epx::daemon
