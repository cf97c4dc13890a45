// ClientSession: the SDK's side of one Hello stream, plus the stub for the
// unary calls. Shared by a Client and the Jobs it returned, so a Job can
// leave even after its Client was destroyed.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <vector>
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
  // For a wait that depends on the job's peers (a flush, a post waiting for
  // ring space) and began at `since`: OK while it may go on; UNAVAILABLE
  // naming the lost rank and its node (or why the job or the session ended)
  // once that trouble is kTroubleGrace old, counted from `since` at the
  // earliest. The grace lets a wait that does not involve the lost rank
  // complete; one that does (writes to a stopped daemon never complete)
  // ends then instead of at its own timeout.
  static constexpr std::chrono::milliseconds kTroubleGrace{1000};
  Status peer_wait_status(const std::string& job_id, std::chrono::steady_clock::time_point since) const;

  // Status to return from a call that failed with `s`: when the session is
  // gone, say why (the daemon shut down) rather than a bare UNAVAILABLE.
  Status explain(const grpc::Status& s, const std::string& what) const;
  Status session_status() const;
  // Ranks of `job_id` the daemon reported lost (RankLost), ascending.
  std::vector<uint32_t> lost_ranks(const std::string& job_id) const;
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
  std::chrono::steady_clock::time_point ended_at_;
  std::deque<Event> events_;
  struct Trouble {
    std::string what;  // the first lost rank, or the abort
    std::chrono::steady_clock::time_point at;
  };
  std::map<std::string, Trouble> job_trouble_;
  std::map<std::string, std::set<uint32_t>> lost_ranks_;

};

}  // namespace epx
