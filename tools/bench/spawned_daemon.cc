#include "tools/bench/spawned_daemon.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <thread>
#include <vector>

#include "epx/v1/local.grpc.pb.h"

extern char** environ;

namespace epx::bench {

Result<std::unique_ptr<SpawnedDaemon>> SpawnedDaemon::start(const std::string& epxd, const std::string& dir,
                                                            const std::string& name, const std::string& provider,
                                                            const std::string& domain, int proxy_core, bool busy_poll,
                                                            const std::vector<std::string>& extra_args) {
  std::unique_ptr<SpawnedDaemon> d(new SpawnedDaemon());
  d->socket_ = dir + "/" + name + ".sock";
  std::vector<std::string> args = {epxd, "--node-name", name, "--control-socket", d->socket_};
  args.insert(args.end(), {"--peer-listen", "127.0.0.1:0", "--provider", provider});
  if (busy_poll) args.insert(args.end(), {"--proxy-busy-poll", "true"});
  args.insert(args.end(), {"--log-file", dir + "/" + name + ".log", "--log-level", "warn"});
  if (!domain.empty()) args.insert(args.end(), {"--rail-domains", domain});
  if (proxy_core >= 0) args.insert(args.end(), {"--proxy-cores", std::to_string(proxy_core)});
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  // EPXD_ARGS (space-separated, as tools/device/normal_bench.sh takes them)
  // lets a benchmark run be repeated with other daemon settings.
  if (const char* more = std::getenv("EPXD_ARGS")) {
    std::istringstream in(more);
    for (std::string word; in >> word;) args.push_back(word);
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  if (posix_spawn(&d->pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
    return unavailable("cannot start " + epxd);
  }
  for (int i = 0; i < 200; ++i) {
    if (std::filesystem::exists(d->socket_) && d->status().ok()) return d;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return unavailable("epxd " + name + " did not answer on " + d->socket_ + " within 10 s (see " + dir + "/" + name +
                     ".log)");
}

SpawnedDaemon::~SpawnedDaemon() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    int st = 0;
    waitpid(pid_, &st, 0);
  }
}

Result<v1::DaemonStatus> SpawnedDaemon::status() const { return daemon_status(socket_); }

Result<v1::DaemonStatus> daemon_status(const std::string& control_socket) {
  auto stub = v1::Local::NewStub(grpc::CreateChannel("unix:" + control_socket, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::DaemonStatus st;
  grpc::Status s = stub->Status(&ctx, v1::StatusRequest(), &st);
  if (!s.ok()) return unavailable("status of epxd at " + control_socket + ": " + s.error_message());
  return st;
}

std::string find_epxd(const std::string& relative_to_bazel_bin) {
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe");
  for (auto candidate : {self.parent_path() / relative_to_bazel_bin, self.parent_path() / "epxd"}) {
    if (std::filesystem::exists(candidate)) return candidate.string();
  }
  return "";
}

}  // namespace epx::bench
