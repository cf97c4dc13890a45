// epxctl: operate an epxd.
//   epxctl [--socket PATH] status [--json] [--own]   rails, jobs, clients
//   epxctl [--socket PATH] jobs [--json] [--own]     jobs only
//     every tenant's clients and jobs for root, the daemon's user and
//     members of admin_group, the caller's own for others; --own asks for
//     the own view in any case. The first line says which view it is.
//   epxctl [--socket PATH] ping [--peer HOST:PORT]
//   epxctl [--socket PATH] join --job ID --world N --rank R [--local-rank L]
//          [--coordinator HOST:PORT] [--timeout-ms T] [--hold]
//     joins a job (a bootstrap smoke test across nodes), prints the rank
//     table; with --hold keeps the rank until stdin closes or SIGTERM,
//     printing events as they come.
//   epxctl [--socket PATH] health
//     grpc.health.v1, rails, peers, drain state and /readyz; exit 0 when ready.
//   epxctl [--socket PATH] drain [--wait-ms W] [--cancel]
//     refuses new joins, waits (at most W ms, default 600000) until no job is
//     left on the daemon; --cancel accepts joins again. README "Upgrading".
//   epxctl [--socket PATH] top [--interval-ms I] [--count N] [--json]
//     live view of rails, jobs and peers every I ms (default 1000); --json
//     prints one JSON object per line and interval; N intervals, or until ^C.
// Exit codes: 0 ok, 1 the operation failed (message on stderr), 2 bad usage.
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <iomanip>
#include <iostream>

#include "epx/client.h"
#include "epx/v1/local.grpc.pb.h"
#include "epx/v1/peer.grpc.pb.h"
#include "grpc_status.h"
#include "tools/ctl/commands.h"

namespace po = boost::program_options;
using namespace std::chrono_literals;

namespace {

int usage(const std::string& message) {
  std::cerr << "epxctl: " << message
            << "\nusage: epxctl [--socket PATH] (status|jobs|ping|join|health|drain|top) [options]; "
            << "epxctl --help\n";
  return 2;
}

int failed(const epx::Status& s) {
  std::cerr << "epxctl: " << s.to_string() << "\n";
  return 1;
}

// "2026-12-01 15:31:15 UTC" for a unix time in ms.
std::string format_unix_ms(uint64_t ms) {
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm = {};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::string hex_prefix(const std::string& bytes, size_t n = 8) {
  std::ostringstream out;
  for (size_t i = 0; i < bytes.size() && i < n; ++i) {
    out << std::hex << std::setw(2) << std::setfill('0') << (static_cast<unsigned>(bytes[i]) & 0xff);
  }
  if (bytes.size() > n) out << "..";
  return out.str();
}

using epx::ctl::fetch_status;

void print_jobs(const epx::v1::DaemonStatus& st) {
  std::cout << "jobs: " << st.jobs_size() << "\n";
  for (const auto& j : st.jobs()) {
    int present = 0;
    for (const auto& m : j.members()) present += m.present() ? 1 : 0;
    std::cout << "  " << j.job_id() << "  world " << j.world_size() << "  " << j.state() << "  coordinator "
              << j.coordinator() << (j.coordinated_here() ? " (here)" : "") << "  ranks present " << present << "/"
              << j.members_size() << "\n";
    for (const auto& m : j.members()) {
      std::cout << "    rank " << m.rank() << " local " << m.local_rank() << " node " << m.node() << " "
                << (m.present() ? "present" : "gone") << "\n";
    }
  }
}

int print_status(const epx::v1::DaemonStatus& st, bool json, bool jobs_only) {
  if (json) {
    std::string out;
    google::protobuf::util::JsonPrintOptions opts;
    opts.add_whitespace = true;
    opts.always_print_primitive_fields = true;
    if (jobs_only) {
      epx::v1::DaemonStatus only;
      *only.mutable_jobs() = st.jobs();
      only.set_view(st.view());
      (void)google::protobuf::util::MessageToJsonString(only, &out, opts);
    } else {
      (void)google::protobuf::util::MessageToJsonString(st, &out, opts);
    }
    std::cout << out;
    return 0;
  }
  std::cout << "view: " << st.view() << "\n";
  if (!jobs_only) {
    std::cout << "node " << st.node() << "  epxd " << st.version() << "  pid " << st.pid() << "  up "
              << st.uptime_ms() / 1000 << " s\n"
              << "peer address " << st.peer_address() << "  control socket " << st.control_socket() << "\n"
              << "libfabric " << st.libfabric() << "\n"
              << "rails: " << st.rails_size() << " (" << st.provider() << ")\n";
    if (!st.provider_fallback().empty()) std::cout << "warning: " << st.provider_fallback() << "\n";
    if (st.draining()) std::cout << "draining: new joins are refused (epxctl drain)\n";
    if (!st.metrics_address().empty()) std::cout << "metrics, /healthz, /readyz at " << st.metrics_address() << "\n";
    for (const auto& p : st.peers()) std::cout << "peer " << p.address() << ": " << (p.up() ? "up" : "DOWN") << "\n";
    for (const auto& r : st.rails()) {
      std::cout << "  " << r.index() << "  " << r.provider() << "  domain " << r.domain() << "  fabric " << r.fabric()
                << "  mr " << r.mr_mode() << "  hmem " << (r.fi_hmem() ? "yes" : "no") << "  addr "
                << hex_prefix(r.address()) << "\n"
                << "     device windows: "
                << (r.device_windows() ? std::string("yes") : "no (" + r.device_windows_reason() + ")") << "\n"
                << "     health: " << r.health() << " since " << format_unix_ms(r.health_since_ms())
                << (r.health_reason().empty() ? "" : " (" + r.health_reason() + ")") << "; went unhealthy "
                << r.health_changes() << "x, failed writes " << r.failed_ops() << "; posted " << r.posted_ops()
                << " writes, " << r.posted_bytes() << " bytes\n"
                << "     nic: " << (r.pci_address().empty() ? "no PCI device" : "PCI " + r.pci_address()) << "  NUMA "
                << (r.numa_node() < 0 ? std::string("?") : std::to_string(r.numa_node())) << "  sysfs "
                << (r.sysfs_device().empty() ? std::string("-") : r.sysfs_device()) << "  link " << r.link() << "\n"
                << "     writes elsewhere: striped " << r.striped_writes() << ", spread " << r.spread_writes()
                << ", failed over " << r.failover_writes() << "\n";
      for (const auto& p : st.proxies()) {
        if (p.rail() == r.index() && p.lone_job_bound()) {
          std::cout << "     a job alone here is held to the per-job in-flight bounds (single_job_bound)\n";
        }
      }
    }
    if (st.gpu_rails_size() > 0) std::cout << "GPU -> rails:\n";
    for (const auto& g : st.gpu_rails()) {
      std::cout << "  " << g.gpu() << "  NUMA "
                << (g.numa_node() < 0 ? std::string("?") : std::to_string(g.numa_node())) << "  rails";
      for (uint32_t r : g.rails()) std::cout << " " << r;
      std::cout << "  (" << g.why() << ")\n";
    }
    std::cout << "clients: " << st.clients_size() << "\n";
    for (const auto& c : st.clients()) {
      std::cout << "  " << c.client_id() << "  '" << c.name() << "'  pid " << c.pid() << " uid " << c.uid() << "  jobs";
      for (const auto& j : c.jobs()) std::cout << " " << j;
      std::cout << "  windows " << c.windows() << " (host " << c.host_windows() << ", device " << c.device_windows()
                << "; " << c.window_bytes() << " bytes)\n";
    }
  }
  print_jobs(st);
  return 0;
}

int ping(const std::string& socket, const std::string& peer, std::chrono::milliseconds timeout) {
  const auto start = std::chrono::steady_clock::now();
  if (peer.empty()) {
    auto st = fetch_status(socket, timeout);
    if (!st.ok()) return failed(st.status());
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
    std::cout << "epxd " << st->version() << " on " << st->node() << " at " << socket << ": " << us.count() << " us\n";
    return 0;
  }
  auto stub = epx::v1::Peer::NewStub(grpc::CreateChannel(peer, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  epx::v1::PingReply reply;
  grpc::Status s = stub->Ping(&ctx, epx::v1::PingRequest(), &reply);
  if (!s.ok()) return failed(epx::from_grpc(s).with_context("peer " + peer));
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
  std::cout << "epxd " << reply.version() << " on " << reply.node() << " at " << peer << ": " << us.count() << " us\n";
  for (int i = 0; i < reply.rails_size(); ++i) {
    const auto& r = reply.rails(i);
    std::cout << "  rail " << i << ": " << (r.usable() ? "usable" : "not usable (" + r.why() + ")") << "\n";
  }
  return 0;
}

volatile sig_atomic_t g_stop = 0;

int join(const std::string& socket, const po::variables_map& vm, std::chrono::milliseconds rpc_timeout) {
  if (!vm.count("job") || !vm.count("world") || !vm.count("rank")) return usage("join needs --job, --world and --rank");
  epx::ClientOptions copts;
  copts.name = "epxctl join";
  copts.rpc_timeout = rpc_timeout;
  auto client = epx::Client::connect(socket, copts);
  if (!client.ok()) return failed(client.status());
  epx::JoinOptions opts;
  opts.job_id = vm["job"].as<std::string>();
  opts.world_size = vm["world"].as<uint32_t>();
  opts.rank = vm["rank"].as<uint32_t>();
  opts.local_rank = vm.count("local-rank") ? vm["local-rank"].as<uint32_t>() : 0;
  opts.coordinator = vm.count("coordinator") ? vm["coordinator"].as<std::string>() : "";
  opts.timeout = std::chrono::milliseconds(vm.count("timeout-ms") ? vm["timeout-ms"].as<uint32_t>() : 60000);
  auto job = (*client)->join(opts);
  if (!job.ok()) return failed(job.status());
  if (!job->provider_fallback().empty()) std::cerr << "epxctl: warning: " << job->provider_fallback() << "\n";
  std::cout << job->table().to_string() << std::flush;
  if (!vm.count("hold")) return 0;

  std::cout << "holding rank " << job->rank() << " (close stdin or send SIGTERM to leave)" << std::endl;
  signal(SIGTERM, [](int) { g_stop = 1; });
  signal(SIGINT, [](int) { g_stop = 1; });
  while (!g_stop) {
    if (auto e = (*client)->next_event(100ms)) {
      std::cout << "event: " << e->to_string() << std::endl;
      if (e->kind == epx::Event::Kind::kDaemonShutdown || e->kind == epx::Event::Kind::kSessionLost) return 1;
    }
    pollfd p{STDIN_FILENO, POLLIN, 0};
    if (poll(&p, 1, 0) > 0) {
      char buf[256];
      if (read(STDIN_FILENO, buf, sizeof(buf)) <= 0) break;  // EOF: leave
    }
  }
  if (auto s = job->leave(); !s.ok()) return failed(s);
  std::cout << "left job " << opts.job_id << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description opts("epxctl options");
  opts.add_options()("help,h", "show this help")("socket,s", po::value<std::string>(),
                                                 "epxd control socket (default $EPX_SOCKET or /run/epx/epxd.sock)")(
      "json", "machine-readable output (status, jobs)")(
      "own", "status, jobs: only this user's clients and jobs, even for an admin")(
      "timeout-ms", po::value<uint32_t>(), "deadline of each call; for join, the barrier timeout")(
      "peer", po::value<std::string>(), "ping: a daemon's Peer address host:port")(
      "job", po::value<std::string>(), "join: job id")("world", po::value<uint32_t>(), "join: world size")(
      "rank", po::value<uint32_t>(), "join: rank")("local-rank", po::value<uint32_t>(), "join: local rank")(
      "coordinator", po::value<std::string>(), "join: coordinating daemon host:port (default: local daemon)")(
      "hold", "join: keep the rank until stdin closes or SIGTERM")(
      "wait-ms", po::value<uint32_t>(), "drain: how long to wait for running jobs (default 600000)")(
      "cancel", "drain: accept joins again")("interval-ms", po::value<uint32_t>(),
                                             "top: refresh interval (default 1000)")(
      "count", po::value<uint32_t>(), "top: intervals to show (default: until ^C)")(
      "command", po::value<std::string>(), "status | jobs | ping | join | health | drain | top");
  po::positional_options_description pos;
  pos.add("command", 1);
  po::variables_map vm;
  try {  // program_options reports by exception; it never leaves main.
    po::store(po::command_line_parser(argc, argv).options(opts).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return usage(e.what());
  }
  if (vm.count("help")) {
    std::cout << opts << "\n";
    return 0;
  }
  std::string socket = "/run/epx/epxd.sock";
  if (const char* env = std::getenv("EPX_SOCKET")) socket = env;
  if (vm.count("socket")) socket = vm["socket"].as<std::string>();
  const auto timeout = std::chrono::milliseconds(vm.count("timeout-ms") ? vm["timeout-ms"].as<uint32_t>() : 5000);
  if (!vm.count("command")) return usage("no command");
  const std::string cmd = vm["command"].as<std::string>();
  if (cmd == "status" || cmd == "jobs") {
    auto st = fetch_status(socket, timeout, vm.count("own") > 0);
    if (!st.ok()) return failed(st.status());
    return print_status(*st, vm.count("json") > 0, cmd == "jobs");
  }
  if (cmd == "ping") return ping(socket, vm.count("peer") ? vm["peer"].as<std::string>() : "", timeout);
  if (cmd == "join") return join(socket, vm, std::chrono::milliseconds(5000));
  if (cmd == "health") return epx::ctl::health(socket, timeout);
  if (cmd == "drain") {
    epx::ctl::DrainOptions d;
    d.cancel = vm.count("cancel") > 0;
    if (vm.count("wait-ms")) d.wait = std::chrono::milliseconds(vm["wait-ms"].as<uint32_t>());
    return epx::ctl::drain(socket, d, timeout);
  }
  if (cmd == "top") {
    epx::ctl::TopOptions t;
    t.json = vm.count("json") > 0;
    if (vm.count("interval-ms")) t.interval = std::chrono::milliseconds(vm["interval-ms"].as<uint32_t>());
    if (vm.count("count")) t.count = vm["count"].as<uint32_t>();
    return epx::ctl::top(socket, t, timeout);
  }
  return usage("unknown command '" + cmd + "'");
}
