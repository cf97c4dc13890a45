#include "daemon/fabric/pci_location.h"

#include <doctest/doctest.h>

#include "tests/harness/sysfs_tree.h"

namespace epx::daemon {

TEST_CASE("PCI addresses are normalised to sysfs's form and anything else is refused") {
  CHECK(*normalize_pci_address("0000:1A:00.0") == "0000:1a:00.0");      // cudaDeviceGetPCIBusId
  CHECK(*normalize_pci_address("00000000:19:00.0") == "0000:19:00.0");  // nvidia-smi
  CHECK(*normalize_pci_address("10000:01:00.1") == "10000:01:00.1");    // VMD domains are wider
  for (const char* bad : {"", "0000:19:00", "0000:19:00.8", "000:19:00.0", "0000:1:00.0", "0000:19:00.0/..",
                          "../../etc:19:00.0", "0000:19:0g.0", "0000:19:00.0:1"}) {
    INFO(bad);
    auto r = normalize_pci_address(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE("a device's location is its chain of bridges and its NUMA node") {
  SysfsTree sys;
  sys.add_pci("pci0000:10/0000:10:01.0/0000:11:00.0/0000:12:01.0/0000:19:00.0", 1);
  auto gpu = pci_location(sys.root(), "0000:19:00.0");
  REQUIRE(gpu.ok());
  CHECK(gpu->address == "0000:19:00.0");
  CHECK(gpu->numa_node == 1);
  REQUIRE(gpu->path.size() == 5);
  CHECK(gpu->path.front() == "pci0000:10");
  CHECK(gpu->path[2] == "0000:11:00.0");
  CHECK(gpu->path.back() == "0000:19:00.0");

  auto missing = pci_location(sys.root(), "0000:99:00.0");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == StatusCode::kNotFound);
  CHECK(missing.status().message().find("0000:99:00.0") != std::string::npos);
}

TEST_CASE("a rail finds its NIC from the domain name: interface, RDMA device with suffix, or virtual") {
  SysfsTree sys;
  sys.add_pci("pci0000:10/0000:10:01.0/0000:11:00.0/0000:12:02.0/0000:1a:00.0", 0);
  sys.add_pci("pci0000:10/0000:10:01.0/0000:11:00.0/0000:12:03.0/0000:1b:00.0", 0);
  sys.add_net("ens5", "pci0000:10/0000:10:01.0/0000:11:00.0/0000:12:02.0/0000:1a:00.0", "up");
  sys.add_infiniband("rdmap27s0", "pci0000:10/0000:10:01.0/0000:11:00.0/0000:12:03.0/0000:1b:00.0", "4: ACTIVE");
  sys.add_net("veth3", "", "down");

  RailDevice tcp = rail_device(sys.root(), "ens5", "");
  CHECK(tcp.sysfs_name == "net/ens5");
  CHECK(tcp.location.address == "0000:1a:00.0");
  CHECK(read_link_state(tcp.link_file) == LinkState::kUp);

  RailDevice efa = rail_device(sys.root(), "rdmap27s0-rdm", "");
  CHECK(efa.sysfs_name == "infiniband/rdmap27s0");
  CHECK(efa.location.address == "0000:1b:00.0");
  CHECK(efa.location.path.size() == 5);
  CHECK(read_link_state(efa.link_file) == LinkState::kUp);

  RailDevice veth = rail_device(sys.root(), "veth3", "");
  CHECK(veth.sysfs_name == "net/veth3");
  CHECK_FALSE(veth.location.known());
  CHECK(read_link_state(veth.link_file) == LinkState::kDown);

  // libfabric's own PCI attribute wins where the name finds nothing.
  RailDevice hinted = rail_device(sys.root(), "shm", "0000:1b:00.0");
  CHECK(hinted.sysfs_name.empty());
  CHECK(hinted.location.address == "0000:1b:00.0");

  // A domain name is never a path.
  CHECK(rail_device(sys.root(), "../../etc", "").sysfs_name.empty());
}

TEST_CASE("link states: up, down, and a file that is gone") {
  SysfsTree sys;
  sys.add_net("eth1", "", "up");
  sys.add_infiniband("mlx5_0", "", "1: DOWN");
  sys.add_net("lo", "", "unknown");
  CHECK(read_link_state(sys.root() + "/class/net/eth1/operstate") == LinkState::kUp);
  sys.set_operstate("eth1", "lowerlayerdown");
  CHECK(read_link_state(sys.root() + "/class/net/eth1/operstate") == LinkState::kDown);
  CHECK(read_link_state(sys.root() + "/class/infiniband/mlx5_0/ports/1/state") == LinkState::kDown);
  CHECK(read_link_state(sys.root() + "/class/net/lo/operstate") == LinkState::kUp);
  CHECK(read_link_state(sys.root() + "/class/net/nothing/operstate") == LinkState::kUnknown);
  CHECK(read_link_state("") == LinkState::kUnknown);
}

}  // namespace epx::daemon
