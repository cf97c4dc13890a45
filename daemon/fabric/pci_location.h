// PciLocation: where a device sits on the node's PCIe tree and NUMA nodes,
// read from sysfs. The daemon uses it to serve a GPU from the NICs nearest
// to it (dataplane/rail_affinity.h): on p5/p5en hosts each GPU shares a
// PCIe switch with its own 2 or 4 EFA NICs, and a write from a GPU through
// a NIC under another switch crosses the CPU's root complex (or the socket
// interconnect) twice.
//
// sysfs_root is "/sys" normally; containers often mount the host's sysfs
// elsewhere, and tests build a tree of their own (config sysfs_root).
#pragma once

#include <string>
#include <vector>

#include "epx/status.h"

namespace epx::daemon {

struct PciLocation {
  // "0000:17:00.0"; empty: not a PCI device (veth, loopback, shm) or not
  // found in sysfs.
  std::string address;
  // The device's ancestors on the PCIe tree, from its root complex down to
  // itself: {"pci0000:00", "0000:00:01.0", "0000:01:00.0", ..., address}.
  std::vector<std::string> path;
  int numa_node = -1;  // -1: unknown (single-node hosts report -1 too)

  bool known() const { return !address.empty(); }
};

// Normalises a PCI address as CUDA and nvidia-smi print it ("0000:1A:00.0",
// "00000000:1a:00.0") to sysfs's form ("0000:1a:00.0"). INVALID_ARGUMENT
// for anything that is not DOMAIN:BUS:DEVICE.FUNCTION in hex: the address
// comes from a client and names a sysfs path.
Result<std::string> normalize_pci_address(const std::string& address);

// The PCI device `address` (normalised) under `sysfs_root`/bus/pci/devices:
// its path and NUMA node. NOT_FOUND when sysfs has no such device.
Result<PciLocation> pci_location(const std::string& sysfs_root, const std::string& address);

// The sysfs entries of a rail's NIC, found from its libfabric domain name:
// tcp names the network interface ("eth0": class/net/eth0), efa and verbs
// the RDMA device with a suffix ("rdmap16s27-rdm": class/infiniband/
// rdmap16s27). `pci_hint` is the address libfabric reported in the NIC's
// bus attributes, when it did.
struct RailDevice {
  PciLocation location;  // unknown for virtual interfaces (no device link)
  // A file whose content says whether the link is up (net: operstate,
  // infiniband: ports/1/state); empty: the rail has none (shm).
  std::string link_file;
  std::string sysfs_name;  // "net/eth0", "infiniband/rdmap16s27"; empty: not found
};
RailDevice rail_device(const std::string& sysfs_root, const std::string& domain_name, const std::string& pci_hint);

// The CPUs of NUMA node `node` (<sysfs_root>/devices/system/node/nodeN/
// cpulist, "0-47,96-143"); empty when unknown.
std::vector<int> numa_cpus(const std::string& sysfs_root, int node);

enum class LinkState { kUp, kDown, kUnknown };
const char* link_state_name(LinkState state);

// Reads a RailDevice::link_file. net operstate "up" or "unknown" (loopback
// and some virtual interfaces report no state) is up, "down",
// "lowerlayerdown", "notpresent" and "dormant" are down; infiniband
// "4: ACTIVE" is up, any other port state down. A file that cannot be read
// is kUnknown (the interface went away: the caller decides).
LinkState read_link_state(const std::string& link_file);

}  // namespace epx::daemon
