#include "daemon/ops/http_endpoint.h"

#include <pthread.h>

#include <spdlog/spdlog.h>

#include <sstream>

#include "daemon/config/config.h"

namespace epx::daemon {
namespace {

using boost::asio::ip::tcp;

// A request line and headers longer than this are refused (scrapers and
// probes send a few hundred bytes).
constexpr size_t kMaxRequestBytes = 8192;
// A client that has not sent its request (or taken the answer) by then is
// dropped, so a stalled connection cannot pin the endpoint.
constexpr std::chrono::seconds kConnectionTimeout(10);

const char* reason_phrase(int code) {
  switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

// One connection: read the request head, answer, close.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, const HttpEndpoint::Handler& handler)
      : socket_(std::move(socket)), timer_(socket_.get_executor()), request_(kMaxRequestBytes), handler_(handler) {}

  void start() {
    auto self = shared_from_this();
    timer_.expires_after(kConnectionTimeout);
    timer_.async_wait([self](const boost::system::error_code& ec) {
      if (!ec) self->socket_.close();
    });
    boost::asio::async_read_until(socket_, request_, "\r\n\r\n",
                                  [self](const boost::system::error_code& ec, size_t) { self->answer(ec); });
  }

 private:
  void answer(const boost::system::error_code& ec) {
    HttpResponse response;
    bool head = false;
    if (ec == boost::asio::error::not_found) {  // the streambuf's limit: head too long
      response = {400, "text/plain; charset=utf-8", "request head longer than 8192 bytes\n"};
    } else if (ec) {
      return;  // closed or timed out
    } else {
      std::istream in(&request_);
      std::string method, target, version;
      in >> method >> target >> version;
      const std::string path = target.substr(0, target.find('?'));
      if (version.rfind("HTTP/1.", 0) != 0 || path.empty() || path[0] != '/') {
        response = {400, "text/plain; charset=utf-8", "expected a request line like: GET /metrics HTTP/1.1\n"};
      } else if (method != "GET" && method != "HEAD") {
        response = {405, "text/plain; charset=utf-8", "only GET and HEAD are served\n"};
      } else {
        head = method == "HEAD";
        response = handler_(path);
      }
    }
    std::ostringstream out;
    out << "HTTP/1.1 " << response.code << " " << reason_phrase(response.code) << "\r\n"
        << "Content-Type: " << response.content_type << "\r\n"
        << "Content-Length: " << response.body.size() << "\r\n"
        << "Connection: close\r\n\r\n";
    if (!head) out << response.body;
    reply_ = out.str();
    auto self = shared_from_this();
    boost::asio::async_write(socket_, boost::asio::buffer(reply_), [self](const boost::system::error_code&, size_t) {
      boost::system::error_code ignored;
      self->socket_.shutdown(tcp::socket::shutdown_both, ignored);
      self->socket_.close(ignored);
      self->timer_.cancel();
    });
  }

  tcp::socket socket_;
  boost::asio::steady_timer timer_;
  boost::asio::streambuf request_;
  const HttpEndpoint::Handler& handler_;
  std::string reply_;
};

}  // namespace

HttpEndpoint::HttpEndpoint(Handler handler) : handler_(std::move(handler)), acceptor_(io_), retry_(io_) {}

Result<std::unique_ptr<HttpEndpoint>> HttpEndpoint::start(const std::string& listen, Handler handler) {
  EPX_ASSIGN_OR_RETURN(auto host_port, split_host_port(listen));
  std::unique_ptr<HttpEndpoint> e(new HttpEndpoint(std::move(handler)));
  boost::system::error_code ec;
  const std::string host = host_port.first.empty() ? "0.0.0.0" : host_port.first;
  const auto address = boost::asio::ip::make_address(host, ec);
  if (ec) return invalid_argument("metrics_listen " + listen + ": '" + host + "' is not an IP address");
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(host_port.second));
  e->acceptor_.open(endpoint.protocol(), ec);
  if (!ec) e->acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) e->acceptor_.bind(endpoint, ec);
  if (!ec) e->acceptor_.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec) return unavailable("metrics_listen " + listen + ": cannot listen: " + ec.message());
  e->port_ = e->acceptor_.local_endpoint().port();
  e->accept();
  e->thread_ = std::thread([raw = e.get()] {
    pthread_setname_np(pthread_self(), "epx-http");
    raw->io_.run();
  });
  return e;
}

HttpEndpoint::~HttpEndpoint() {
  io_.stop();
  if (thread_.joinable()) thread_.join();
}

void HttpEndpoint::accept() {
  acceptor_.async_accept([this](const boost::system::error_code& ec, tcp::socket socket) {
    if (ec == boost::asio::error::operation_aborted) return;
    if (!ec) {
      std::make_shared<Connection>(std::move(socket), handler_)->start();
      accept();
      return;
    }
    // Out of descriptors or memory: try again shortly rather than spin.
    spdlog::warn("metrics endpoint: accept failed: {}", ec.message());
    retry_.expires_after(std::chrono::milliseconds(200));
    retry_.async_wait([this](const boost::system::error_code& e) {
      if (!e) accept();
    });
  });
}

}  // namespace epx::daemon
