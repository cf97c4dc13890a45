#include "daemon/control/session_stream.h"

#include <spdlog/spdlog.h>

#include "daemon/control/local_arguments.h"
#include "grpc_status.h"

namespace epx::daemon {

SessionStream::SessionStream(LocalParts& parts, grpc::CallbackServerContext* context,
                             const v1::HelloRequest& request)
    : parts_(parts) {
  const std::string connection = context->peer();
  auto creds = parts_.connections.lookup(connection);
  if (!creds) {
    std::lock_guard<std::mutex> lock(mu_);
    finish_locked(grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "unknown local connection " + connection));
    return;
  }
  if (parts_.node.shutting_down()) {
    std::lock_guard<std::mutex> lock(mu_);
    finish_locked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "epxd is shutting down"));
    return;
  }
  if (auto s = check_client_name(request.client_name()); !s.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    finish_locked(to_grpc(s));
    return;
  }
  creds_ = *creds;
  auto id = parts_.clients.attach(request.client_name(), connection, creds_, this);
  if (!id.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    finish_locked(to_grpc(id.status()));
    return;
  }
  client_id_ = *id;
  spdlog::info("client {} attached: '{}' pid {} uid {} gid {}", client_id_, request.client_name(), creds_.pid,
               creds_.uid, creds_.gid);
  v1::ClientEvent welcome;
  welcome.mutable_welcome()->set_client_id(client_id_);
  welcome.mutable_welcome()->set_node(parts_.node.config.node_name());
  welcome.mutable_welcome()->set_daemon_version(kVersion);
  welcome.mutable_welcome()->set_pid(creds_.pid);
  welcome.mutable_welcome()->set_fd_socket(parts_.node.fd_socket);
  push(welcome);
}

void SessionStream::push(const v1::ClientEvent& event) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_ || closing_) return;
  queue_.push_back(event);
  if (!writing_) {
    writing_ = true;
    StartWrite(&queue_.front());
  }
}

void SessionStream::close(const Status& status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_ || closing_) return;
  closing_ = true;
  close_status_ = to_grpc(status);
  if (!writing_) finish_locked(close_status_);
}

void SessionStream::OnWriteDone(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_.pop_front();
  if (!ok) {
    // The client is gone; OnDone releases what it held.
    writing_ = false;
    finish_locked(grpc::Status(grpc::StatusCode::CANCELLED, "client gone"));
    return;
  }
  if (!queue_.empty()) {
    StartWrite(&queue_.front());
    return;
  }
  writing_ = false;
  if (closing_) finish_locked(close_status_);
}

void SessionStream::OnCancel() {
  // The client went away (exit, crash, SIGKILL). A write in flight ends in
  // OnWriteDone(false), which finishes; otherwise finish here.
  std::lock_guard<std::mutex> lock(mu_);
  closing_ = true;
  if (!writing_) finish_locked(grpc::Status(grpc::StatusCode::CANCELLED, "client gone"));
}

void SessionStream::finish_locked(const grpc::Status& status) {
  if (finished_) return;
  finished_ = true;
  Finish(status);
}

void SessionStream::OnDone() {
  if (client_id_ != 0) {
    // After detach() no one can push to this stream any more.
    std::vector<Membership> held = parts_.clients.detach(client_id_);
    parts_.data_plane.submitted_fds().drop_client(client_id_);  // descriptors sent but never claimed
    spdlog::info("client {} (pid {}) detached, releasing {} job rank(s)", client_id_, creds_.pid, held.size());
    parts_.release.release(held, "client pid " + std::to_string(creds_.pid) + " on " +
                                              parts_.node.config.node_name() + " disconnected");
  }
  delete this;
}

}  // namespace epx::daemon
