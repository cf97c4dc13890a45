// ClientSession: the SDK's side of one Hello stream, plus the stub for the
// unary calls. Shared by a Client and the Jobs it returned, so a Job can
// leave even after its Client was destroyed.
#pragma once

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "epx/client.h"
#include "epx/v1/local.grpc.pb.h"

namespace epx {

class ClientSession {
 public:
  ClientSession(std::string socket_path, ClientOptions options);
  ~ClientSession();

  // Starts the Hello stream and waits for Welcome.
  Status open();

  v1::Local::Stub& stub() { return *stub_; }
  const ClientOptions& options() const { return options_; }
  const std::string& socket_path() const { return socket_path_; }
  uint64_t client_id() const { return client_id_; }
  const std::string& fd_socket() const { return fd_socket_; }
  // OK while every rank of `job_id` is present and the session is up; else
  // UNAVAILABLE naming the lost rank (or why the session or job ended).
  Status job_health(const std::string& job_id) const;

  // Status to return from a call that failed with `s`: when the session is
  // gone, say why (the daemon shut down) rather than a bare UNAVAILABLE.
  Status explain(const grpc::Status& s, const std::string& what) const;
  Status session_status() const;
  std::optional<Event> next_event(std::chrono::milliseconds timeout);
  // A context whose deadline is `timeout` from now.
  std::unique_ptr<grpc::ClientContext> context(std::chrono::milliseconds timeout) const;

 private:
  void read_events();

  const std::string socket_path_;
  const ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Local::Stub> stub_;
  grpc::ClientContext stream_context_;
  std::unique_ptr<grpc::ClientReader<v1::ClientEvent>> stream_;
  std::thread reader_;
  uint64_t client_id_ = 0;
  std::string fd_socket_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool welcomed_ = false;
  bool ended_ = false;
  Status end_status_;  // why the session ended, once ended_
  std::deque<Event> events_;
  std::map<std::string, std::string> job_trouble_;  // job -> first lost rank / abort

};

}  // namespace epx
