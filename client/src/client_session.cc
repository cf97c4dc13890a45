#include "client_session.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "grpc_status.h"

namespace epx {

ClientSession::ClientSession(std::string socket_path, ClientOptions options)
    : socket_path_(std::move(socket_path)), options_(std::move(options)) {}

ClientSession::~ClientSession() {
  stream_context_.TryCancel();
  if (reader_.joinable()) reader_.join();
}

std::unique_ptr<grpc::ClientContext> ClientSession::context(std::chrono::milliseconds timeout) const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  return ctx;
}

Status ClientSession::open() {
  struct stat st;
  if (::stat(socket_path_.c_str(), &st) != 0) {
    return unavailable("no epxd at " + socket_path_ + ": " + std::strerror(errno) + " (is epxd running?)");
  }
  if (!S_ISSOCK(st.st_mode)) return unavailable(socket_path_ + " is not a socket (is it epxd's control_socket?)");
  channel_ = grpc::CreateChannel("unix:" + socket_path_, grpc::InsecureChannelCredentials());
  if (!channel_->WaitForConnected(std::chrono::system_clock::now() + options_.rpc_timeout)) {
    return unavailable("cannot connect to epxd at " + socket_path_ + " within " +
                       std::to_string(options_.rpc_timeout.count()) + " ms (stale socket or daemon not running?)");
  }
  stub_ = v1::Local::NewStub(channel_);

  v1::HelloRequest hello;
  hello.set_client_name(options_.name.empty() ? "pid " + std::to_string(::getpid()) : options_.name);
  stream_ = stub_->Hello(&stream_context_, hello);
  reader_ = std::thread([this] { read_events(); });

  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, options_.rpc_timeout, [&] { return welcomed_ || ended_; })) {
    lock.unlock();
    stream_context_.TryCancel();
    return deadline_exceeded("epxd at " + socket_path_ + " did not answer Hello within " +
                             std::to_string(options_.rpc_timeout.count()) + " ms");
  }
  if (!welcomed_) return end_status_.with_context("epxd at " + socket_path_ + " refused the session");
  return Status();
}

void ClientSession::read_events() {
  v1::ClientEvent event;
  bool said_goodbye = false;
  std::string goodbye;  // the daemon's reason, kept here: the app may pop the event
  while (stream_->Read(&event)) {
    std::lock_guard<std::mutex> lock(mu_);
    Event e;
    switch (event.event_case()) {
      case v1::ClientEvent::kWelcome:
        client_id_ = event.welcome().client_id();
        fd_socket_ = event.welcome().fd_socket();
        welcomed_ = true;
        cv_.notify_all();
        continue;
      case v1::ClientEvent::kRankLost:
        e.kind = Event::Kind::kRankLost;
        e.job_id = event.rank_lost().job_id();
        e.rank = event.rank_lost().rank();
        e.node = event.rank_lost().node();
        e.reason = event.rank_lost().reason();
        lost_ranks_[e.job_id].insert(e.rank);
        job_trouble_.emplace(e.job_id, Trouble{"rank " + std::to_string(e.rank) + " (node " + e.node + ") lost: " + e.reason,
                                               std::chrono::steady_clock::now()});
        break;
      case v1::ClientEvent::kJobAborted:
        e.kind = Event::Kind::kJobAborted;
        e.job_id = event.job_aborted().job_id();
        e.reason = event.job_aborted().reason();
        job_trouble_.emplace(e.job_id, Trouble{"job aborted: " + e.reason, std::chrono::steady_clock::now()});
        break;
      case v1::ClientEvent::kDaemonShutdown:
        e.kind = Event::Kind::kDaemonShutdown;
        e.reason = event.daemon_shutdown().reason();
        said_goodbye = true;
        goodbye = e.reason;
        break;
      default:
        continue;  // newer daemon, unknown event: skip
    }
    events_.push_back(std::move(e));
    cv_.notify_all();
  }
  grpc::Status s = stream_->Finish();
  std::lock_guard<std::mutex> lock(mu_);
  ended_ = true;
  ended_at_ = std::chrono::steady_clock::now();
  if (said_goodbye) {
    end_status_ = unavailable("epxd shutting down: " + goodbye);
  } else if (s.ok() || s.error_code() == grpc::StatusCode::CANCELLED) {
    end_status_ = unavailable("epxd session at " + socket_path_ + " closed");
  } else {
    end_status_ = from_grpc(s).with_context("epxd session at " + socket_path_);
  }
  if (welcomed_ && !said_goodbye) {
    Event e;
    e.kind = Event::Kind::kSessionLost;
    e.reason = end_status_.message();
    events_.push_back(std::move(e));
  }
  cv_.notify_all();
}

Status ClientSession::explain(const grpc::Status& s, const std::string& what) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (ended_ && (s.error_code() == grpc::StatusCode::UNAVAILABLE || s.error_code() == grpc::StatusCode::CANCELLED)) {
    return end_status_.with_context(what);
  }
  return from_grpc(s).with_context(what);
}

Status ClientSession::job_health(const std::string& job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (ended_) return end_status_;
  auto it = job_trouble_.find(job_id);
  if (it != job_trouble_.end()) return unavailable("job " + job_id + ": " + it->second.what);
  return Status();
}

Status ClientSession::peer_wait_status(const std::string& job_id, std::chrono::steady_clock::time_point since) const {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = job_trouble_.find(job_id);
  if (it != job_trouble_.end() && now >= std::max(it->second.at, since) + kTroubleGrace) {
    return unavailable("job " + job_id + ": " + it->second.what);
  }
  if (ended_ && now >= std::max(ended_at_, since) + kTroubleGrace) return end_status_;
  return Status();
}

std::vector<uint32_t> ClientSession::lost_ranks(const std::string& job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = lost_ranks_.find(job_id);
  if (it == lost_ranks_.end()) return {};
  return std::vector<uint32_t>(it->second.begin(), it->second.end());
}

Status ClientSession::session_status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ended_ ? end_status_ : Status();
}

std::optional<Event> ClientSession::next_event(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return !events_.empty(); });
  if (events_.empty()) return std::nullopt;
  Event e = std::move(events_.front());
  events_.pop_front();
  return e;
}

}  // namespace epx
