#include "tests/harness/daemon_process.h"

#include <doctest/doctest.h>
#include <google/protobuf/util/json_util.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

namespace epx::test {

std::string cluster_secret_file(const TempDir& dir) {
  const std::string path = dir.path() + "/cluster.secret";
  if (::access(path.c_str(), F_OK) == 0) return path;
  unsigned char raw[32];
  std::ifstream random("/dev/urandom", std::ios::binary);
  REQUIRE_MESSAGE(random.read(reinterpret_cast<char*>(raw), sizeof(raw)), "cannot read /dev/urandom");
  std::string hex;
  for (unsigned char c : raw) {
    hex += "0123456789abcdef"[c >> 4];
    hex += "0123456789abcdef"[c & 15];
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  REQUIRE_MESSAGE(fd >= 0, "cannot create " << path << ": " << std::strerror(errno));
  const bool written = ::write(fd, hex.data(), hex.size()) == static_cast<ssize_t>(hex.size());
  ::close(fd);
  REQUIRE_MESSAGE(written, "cannot write " << path);
  return path;
}

DaemonProcess::DaemonProcess(const TempDir& dir, DaemonOptions o) : dir_(dir) {
  socket_ = dir.path() + "/" + o.name + ".sock";
  std::vector<std::string> argv = {runfile("daemon/epxd"), "--node-name", o.name, "--control-socket", socket_};
  argv.insert(argv.end(), {"--peer-listen", "127.0.0.1:0", "--provider", o.provider});
  argv.insert(argv.end(), {"--log-level", "debug", "--rpc-timeout-ms", "2000"});
  if (o.provider == "tcp") argv.insert(argv.end(), {"--rail-domains", "lo"});
  // A test target that sets EPX_TEST_FAULT_INJECTION (a text-format
  // epx.v1.FaultInjection) runs every daemon's rails through the fault
  // injector, with the same assertions as without it.
  if (const char* faults = std::getenv("EPX_TEST_FAULT_INJECTION"); faults && *faults) {
    const std::string config = dir.path() + "/" + o.name + "-faults.conf";
    std::ofstream(config) << "fault_injection { " << faults << " }\n";
    argv.insert(argv.end(), {"--config", config});
  }
  if (o.cluster_secret) argv.insert(argv.end(), {"--peer-secret-file", cluster_secret_file(dir)});
  argv.insert(argv.end(), o.extra_args.begin(), o.extra_args.end());
  process_ = std::make_unique<Process>(argv, dir.path() + "/" + o.name + ".log", o.env);
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < end) {
    if (!process_->running()) FAIL("epxd " << o.name << " exited during start:\n" << process_->output());
    ClientOptions copts;
    copts.rpc_timeout = std::chrono::milliseconds(1000);
    auto client = Client::connect(socket_, copts);
    if (client.ok()) {
      auto info = (*client)->status();
      REQUIRE_MESSAGE(info.ok(), info.status().to_string());
      peer_address_ = info->peer_address;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  FAIL("epxd " << o.name << " did not answer within 20 s:\n" << process_->output());
}

std::unique_ptr<Client> DaemonProcess::connect(const std::string& client_name) const {
  ClientOptions copts;
  copts.name = client_name;
  auto client = Client::connect(socket_, copts);
  REQUIRE_MESSAGE(client.ok(), client.status().to_string());
  return std::move(client.value());
}

std::pair<int, std::string> DaemonProcess::epxctl(const std::vector<std::string>& args) const {
  static int n = 0;
  std::vector<std::string> argv = {runfile("tools/epxctl"), "--socket", socket_};
  argv.insert(argv.end(), args.begin(), args.end());
  Process p(argv, dir_.path() + "/epxctl-" + std::to_string(++n) + ".log");
  p.close_stdin();
  auto code = p.wait(std::chrono::seconds(30));
  REQUIRE_MESSAGE(code.has_value(), "epxctl did not exit within 30 s");
  return {*code, p.output()};
}

v1::DaemonStatus DaemonProcess::status() const {
  auto [code, out] = epxctl({"status", "--json"});
  REQUIRE_MESSAGE(code == 0, "epxctl status --json exited with " << code << ": " << out);
  v1::DaemonStatus status;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  const auto parsed = google::protobuf::util::JsonStringToMessage(out, &status, options);
  REQUIRE_MESSAGE(parsed.ok(), "epxctl status --json: " << parsed.ToString() << "\n" << out);
  return status;
}

bool DaemonProcess::coordinates_rank(const std::string& job, uint32_t rank) const {
  const v1::DaemonStatus st = status();
  for (const v1::JobStatus& j : st.jobs()) {
    if (j.job_id() != job || !j.coordinated_here()) continue;
    for (const v1::JobMemberStatus& m : j.members()) {
      if (m.rank() == rank && m.present()) return true;
    }
  }
  return false;
}

JoinOptions join_options(const std::string& job, uint32_t world, uint32_t rank, const std::string& coordinator,
                         std::chrono::milliseconds timeout) {
  JoinOptions o;
  o.job_id = job;
  o.world_size = world;
  o.rank = rank;
  o.coordinator = coordinator;
  o.timeout = timeout;
  return o;
}

std::vector<std::unique_ptr<Process>> start_exchange(const TempDir& dir, const std::vector<DaemonProcess*>& daemons,
                                                     const std::string& job, uint32_t world, uint32_t rounds,
                                                     uint64_t bytes_per_peer, uint64_t block_bytes) {
  std::vector<std::unique_ptr<Process>> ranks;
  for (uint32_t r = 0; r < world; ++r) {
    DaemonProcess* d = daemons[r * daemons.size() / world];
    std::vector<std::string> args{runfile("tools/epx_exchange"),
                                  "--socket",
                                  d->socket(),
                                  "--job",
                                  job,
                                  "--world",
                                  std::to_string(world),
                                  "--rank",
                                  std::to_string(r),
                                  "--coordinator",
                                  daemons[0]->peer_address(),
                                  "--rounds",
                                  std::to_string(rounds),
                                  "--bytes-per-peer",
                                  std::to_string(bytes_per_peer),
                                  "--timeout-ms",
                                  "20000"};
    if (block_bytes != 0) args.insert(args.end(), {"--block-bytes", std::to_string(block_bytes)});
    ranks.push_back(std::make_unique<Process>(args, dir.path() + "/" + job + "-rank" + std::to_string(r) + ".log"));
  }
  return ranks;
}

}  // namespace epx::test
