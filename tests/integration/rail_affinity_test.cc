// GPU-to-NIC affinity and the link watch against a real epxd whose sysfs is
// a tree built by the test (config sysfs_root): the daemon reads where its
// rail's NIC sits, a rank joins with its GPU's PCI address and status shows
// the GPU -> rails map and why; a link reported down makes the rail
// unhealthy within the watch period, and up brings it back. Bad addresses
// and bad gpu_rails entries are refused by name.
#include <doctest/doctest.h>

#include <future>
#include <thread>

#include "epx/client.h"
#include "epx/job.h"
#include "tests/harness/daemon_process.h"
#include "tests/harness/sysfs_tree.h"
#include "tools/ctl/http_get.h"

using namespace epx;
using namespace epx::test;
using namespace std::chrono_literals;

namespace {

// The loopback interface (the harness's tcp rail) as a NIC under a PCIe
// switch with GPU 0000:19:00.0; GPU 0000:a1:00.0 on the other socket.
void build_host(daemon::SysfsTree& sys) {
  sys.add_pci("pci0000:10/0000:10:01.0/0000:11:00.0/0000:12:00.0/0000:14:00.0", 0);
  sys.add_pci("pci0000:10/0000:10:01.0/0000:11:00.0/0000:12:01.0/0000:19:00.0", 0);
  sys.add_pci("pci0000:80/0000:80:01.0/0000:a1:00.0", 1);
  sys.add_net("lo", "pci0000:10/0000:10:01.0/0000:11:00.0/0000:12:00.0/0000:14:00.0", "up");
}

const v1::GpuRailsStatus* gpu_entry(const v1::DaemonStatus& st, const std::string& gpu) {
  for (const auto& g : st.gpu_rails()) {
    if (g.gpu() == gpu) return &g;
  }
  return nullptr;
}

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 5s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return pred();
}

}  // namespace

TEST_CASE("a rank joins with its GPU: status shows the NIC's location and the GPU -> rails map with why") {
  daemon::SysfsTree sys;
  build_host(sys);
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp", {"--sysfs-root", sys.root()}});
  v1::DaemonStatus st = a.status();
  REQUIRE(st.rails_size() == 1);
  CHECK(st.rails(0).pci_address() == "0000:14:00.0");
  CHECK(st.rails(0).numa_node() == 0);
  CHECK(st.rails(0).sysfs_device() == "net/lo");
  CHECK(st.rails(0).link() == "up");
  CHECK(st.gpu_rails_size() == 0);

  auto near = a.connect("near");
  JoinOptions o = join_options("affine", 2, 0, a.peer_address());
  o.gpu_pci_address = "0000:19:00.0";
  auto far = a.connect("far");
  JoinOptions o1 = join_options("affine", 2, 1, a.peer_address());
  o1.gpu_pci_address = "0000:A1:00.0";  // as cudaDeviceGetPCIBusId prints it
  auto j1 = std::async(std::launch::async, [&] { return far->join(o1); });
  auto j0 = near->join(o);
  REQUIRE_MESSAGE(j0.ok(), j0.status().to_string());
  auto job1 = j1.get();
  REQUIRE_MESSAGE(job1.ok(), job1.status().to_string());
  // The map is made when a rank opens its rings.
  auto r0 = j0->open_ring(64);
  REQUIRE_MESSAGE(r0.ok(), r0.status().to_string());
  auto r1 = job1->open_ring(64);
  REQUIRE_MESSAGE(r1.ok(), r1.status().to_string());

  st = a.status();
  const v1::GpuRailsStatus* g0 = gpu_entry(st, "0000:19:00.0");
  REQUIRE(g0 != nullptr);
  CHECK(g0->rails_size() == 1);
  CHECK(g0->numa_node() == 0);
  CHECK(g0->why().find("same PCIe switch") != std::string::npos);
  const v1::GpuRailsStatus* g1 = gpu_entry(st, "0000:a1:00.0");
  REQUIRE(g1 != nullptr);
  CHECK(g1->numa_node() == 1);
  CHECK(g1->why().find("every rail") != std::string::npos);

  auto [code, text] = a.epxctl({"status"});
  CHECK(code == 0);
  CHECK(text.find("GPU -> rails") != std::string::npos);
  CHECK(text.find("PCI 0000:14:00.0") != std::string::npos);
  CHECK(text.find("link up") != std::string::npos);
}

TEST_CASE("a malformed GPU address is refused at join, naming the field") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp", {}});
  auto c = a.connect();
  JoinOptions o = join_options("bad-gpu", 1, 0, a.peer_address());
  o.gpu_pci_address = "../../../etc/passwd";
  auto job = c->join(o);
  REQUIRE_FALSE(job.ok());
  CHECK(job.status().code() == StatusCode::kInvalidArgument);
  CHECK(job.status().message().find("gpu_pci_address") != std::string::npos);
  // The daemon is unharmed: the same client joins with a good one.
  o.gpu_pci_address = "0000:19:00.0";
  CHECK(c->join(o).ok());
}

TEST_CASE("the link watch: a link reported down makes the rail unhealthy at once; up brings it back") {
  daemon::SysfsTree sys;
  build_host(sys);
  TempDir dir;
  // A cool-down far beyond the test: only the link can bring the rail back.
  DaemonProcess a(
      dir,
      {"a", "tcp", {"--sysfs-root", sys.root(), "--rail-cooldown-ms", "3600000", "--metrics-listen", "127.0.0.1:0"}});
  auto metrics = [&] {
    auto reply = ctl::http_get(a.status().metrics_address(), "/metrics", 5s);
    REQUIRE_MESSAGE(reply.ok(), reply.status().to_string());
    return reply->body;
  };
  CHECK(metrics().find("epx_rail_link_up{rail=\"0\"} 1") != std::string::npos);
  sys.set_operstate("lo", "down");
  CHECK(eventually([&] {
    const auto r = a.status().rails(0);
    return r.health() == "unhealthy" && r.link() == "down";
  }));
  const auto down = a.status().rails(0);
  CHECK(down.health_reason().find("link down: net/lo reports the link down") != std::string::npos);
  CHECK(a.process().wait_output("rail 0: net/lo reports the link down", 2s));
  const std::string down_metrics = metrics();
  CHECK(down_metrics.find("epx_rail_link_up{rail=\"0\"} 0") != std::string::npos);
  CHECK(down_metrics.find("epx_rail_usable{rail=\"0\"} 0") != std::string::npos);
  CHECK(down_metrics.find("epx_rail_unhealthy_total{rail=\"0\"} 1") != std::string::npos);

  sys.set_operstate("lo", "up");
  CHECK(eventually([&] {
    const auto r = a.status().rails(0);
    return r.health() != "unhealthy" && r.link() == "up";
  }));
  // And it carries traffic: a one-rank job's exchange with itself completes.
  auto c = a.connect();
  auto job = c->join(join_options("after-link", 1, 0, a.peer_address()));
  REQUIRE(job.ok());
}

TEST_CASE("config gpu_rails naming a rail the node does not have stops the daemon with the entry named") {
  TempDir dir;
  Process epxd({runfile("daemon/epxd"), "--node-name", "g", "--control-socket", dir.path() + "/g.sock", "--peer-listen",
                "127.0.0.1:0", "--provider", "tcp", "--rail-domains", "lo", "--gpu-rails", "0000:19:00.0=0+3"},
               dir.path() + "/g.log");
  auto code = epxd.wait(20s);
  REQUIRE_MESSAGE(code.has_value(), "epxd did not exit:\n" << epxd.output());
  CHECK(*code != 0);
  CHECK(epxd.output().find("gpu_rails: GPU 0000:19:00.0: rail 3 does not exist") != std::string::npos);
}

TEST_CASE("a peer's rail going down reaches the other daemons of its jobs through their pings") {
  daemon::SysfsTree sys;
  build_host(sys);
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp", {}});
  DaemonProcess b(dir, {"b", "tcp", {"--sysfs-root", sys.root(), "--rail-cooldown-ms", "3600000"}});
  auto ca = a.connect("rank0");
  auto cb = b.connect("rank1");
  auto j1 =
      std::async(std::launch::async, [&] { return cb->join(join_options("peer-rails", 2, 1, a.peer_address())); });
  auto j0 = ca->join(join_options("peer-rails", 2, 0, a.peer_address()));
  REQUIRE_MESSAGE(j0.ok(), j0.status().to_string());
  REQUIRE(j1.get().ok());

  sys.set_operstate("lo", "down");
  CHECK_MESSAGE(a.process().wait_output("its rail 0 is not usable: link down: net/lo reports the link down", 10s),
                a.process().output());
  sys.set_operstate("lo", "up");
  CHECK_MESSAGE(a.process().wait_output("its rail 0 is usable again", 10s), a.process().output());
}
