#include "daemon/dataplane/rail_affinity.h"

#include <doctest/doctest.h>

#include "tests/harness/sysfs_tree.h"

namespace epx::daemon {
namespace {

PciLocation at(const std::string& chain, int numa) {
  PciLocation p;
  std::string rest = chain;
  for (size_t slash; (slash = rest.find('/')) != std::string::npos; rest = rest.substr(slash + 1)) {
    p.path.push_back(rest.substr(0, slash));
  }
  p.path.push_back(rest);
  p.address = p.path.back();
  p.numa_node = numa;
  return p;
}

// A p5-like node, two GPUs of it: each GPU under its own sub-switch with two
// NICs, both sub-switches under one top switch; rails 4 and 5 on the other
// socket's root complex; rail 6 a virtual interface.
std::vector<PciLocation> node_rails() {
  return {
      at("pci0000:10/0000:10:01.0/0000:11:00.0/0000:12:00.0/0000:13:00.0/0000:14:00.0", 0),  // GPU A's switch
      at("pci0000:10/0000:10:01.0/0000:11:00.0/0000:12:00.0/0000:13:01.0/0000:15:00.0", 0),  // GPU A's switch
      at("pci0000:10/0000:10:01.0/0000:11:00.0/0000:12:04.0/0000:23:00.0/0000:24:00.0", 0),  // GPU B's switch
      at("pci0000:10/0000:10:01.0/0000:11:00.0/0000:12:04.0/0000:23:01.0/0000:25:00.0", 0),  // GPU B's switch
      at("pci0000:80/0000:80:01.0/0000:81:00.0/0000:82:00.0", 1),
      at("pci0000:80/0000:80:03.0/0000:91:00.0/0000:92:00.0", 1),
      PciLocation{},
  };
}

}  // namespace

TEST_CASE("a GPU is served by the NICs under its own PCIe switch, the deepest shared bridge first") {
  const auto rails = node_rails();
  GpuRails a =
      nearest_rails(at("pci0000:10/0000:10:01.0/0000:11:00.0/0000:12:00.0/0000:13:02.0/0000:16:00.0", 0), rails);
  CHECK(a.rails == std::vector<uint32_t>{0, 1});
  CHECK(a.why.find("same PCIe switch") != std::string::npos);
  CHECK(a.why.find("0000:12:00.0") != std::string::npos);
  GpuRails b =
      nearest_rails(at("pci0000:10/0000:10:01.0/0000:11:00.0/0000:12:04.0/0000:23:02.0/0000:26:00.0", 0), rails);
  CHECK(b.rails == std::vector<uint32_t>{2, 3});
}

TEST_CASE("without a shared switch: the root complex, then the NUMA node, then every rail") {
  const auto rails = node_rails();
  GpuRails rc = nearest_rails(at("pci0000:80/0000:80:05.0/0000:a1:00.0", 1), rails);
  CHECK(rc.rails == std::vector<uint32_t>{4, 5});
  CHECK(rc.why.find("root complex") != std::string::npos);

  GpuRails numa = nearest_rails(at("pci0000:c0/0000:c0:01.0/0000:c1:00.0", 1), rails);
  CHECK(numa.rails == std::vector<uint32_t>{4, 5});
  CHECK(numa.why.find("NUMA node") != std::string::npos);

  GpuRails far = nearest_rails(at("pci0000:c0/0000:c0:01.0/0000:c1:00.0", 3), rails);
  CHECK(far.rails.size() == rails.size());
  CHECK(far.why.find("every rail") != std::string::npos);

  GpuRails unknown = nearest_rails(PciLocation{}, rails);
  CHECK(unknown.rails.size() == rails.size());

  // Virtual rails only (veth, loopback): nothing to be near.
  GpuRails virt = nearest_rails(at("pci0000:10/0000:10:01.0/0000:16:00.0", 0), {PciLocation{}, PciLocation{}});
  CHECK(virt.rails == std::vector<uint32_t>{0, 1});
  CHECK(virt.why.find("no rail is a PCI device") != std::string::npos);
}

TEST_CASE("RailAffinity reads the GPU from sysfs, honours config gpu_rails and remembers GPUs for status") {
  SysfsTree sys;
  sys.add_pci("pci0000:10/0000:10:01.0/0000:11:00.0/0000:12:00.0/0000:14:00.0", 0);  // NIC 0
  sys.add_pci("pci0000:10/0000:10:01.0/0000:11:00.0/0000:12:01.0/0000:19:00.0", 0);  // GPU, same switch
  sys.add_pci("pci0000:80/0000:80:01.0/0000:81:00.0/0000:82:00.0", 1);               // NIC 1
  sys.add_pci("pci0000:80/0000:80:02.0/0000:91:00.0", 1);                            // GPU, other socket
  std::vector<PciLocation> rails = {*pci_location(sys.root(), "0000:14:00.0"),
                                    *pci_location(sys.root(), "0000:82:00.0")};

  v1::DaemonConfig config;
  config.set_sysfs_root(sys.root());
  auto* fixed = config.add_gpu_rails();
  fixed->set_gpu("0000:91:00.0");
  fixed->add_rails(0);
  auto affinity = RailAffinity::create(config, rails);
  REQUIRE(affinity.ok());

  GpuRails near = affinity->rails_for("0000:19:00.0");
  CHECK(near.rails == std::vector<uint32_t>{0});
  CHECK(near.numa_node == 0);
  GpuRails configured = affinity->rails_for("0000:91:00.0");
  CHECK(configured.rails == std::vector<uint32_t>{0});
  CHECK(configured.why == "config gpu_rails");
  GpuRails absent = affinity->rails_for("0000:55:00.0");
  CHECK(absent.rails == std::vector<uint32_t>{0, 1});
  CHECK(absent.why.find("not found") != std::string::npos);
  CHECK(affinity->rails_for("").rails.size() == 2);

  auto status = affinity->status();
  REQUIRE(status.size() == 3);  // the configured GPU and the two asked about; not the empty address
  CHECK(status[0].gpu() == "0000:19:00.0");
  CHECK(status[0].rails_size() == 1);
}

TEST_CASE("config gpu_rails is checked when the daemon starts") {
  std::vector<PciLocation> rails(2);
  auto refused = [&](const std::string& gpu, std::vector<uint32_t> indices, const std::string& expect) {
    v1::DaemonConfig config;
    auto* g = config.add_gpu_rails();
    g->set_gpu(gpu);
    for (uint32_t r : indices) g->add_rails(r);
    if (expect == "twice-gpu") {
      *config.add_gpu_rails() = *g;
    }
    auto r = RailAffinity::create(config, rails);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    return r.status().message();
  };
  CHECK(refused("0000:19:00.0", {2}, "").find("rail 2 does not exist") != std::string::npos);
  CHECK(refused("0000:19:00.0", {}, "").find("names no rail") != std::string::npos);
  CHECK(refused("0000:19:00.0", {1, 1}, "").find("given twice") != std::string::npos);
  CHECK(refused("19:00.0", {0}, "").find("gpu_rails") != std::string::npos);
  CHECK(refused("0000:19:00.0", {0}, "twice-gpu").find("given twice") != std::string::npos);
}

}  // namespace epx::daemon
