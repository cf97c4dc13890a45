// RailAffinity: which of the node's rails serve a GPU's rings.
//
// A GPU's writes leave through the NIC that reads its memory: one under the
// GPU's own PCIe switch moves the bytes switch-locally, one elsewhere
// crosses the root complex (or the socket link) on every write. So a rank
// is served from the rails nearest its GPU, by the first of these that
// holds any rail: the GPU's PCIe switch (they share a bridge below the root
// port; the deepest shared bridge first), its root complex, its NUMA node.
// When none holds one (virtual interfaces, a GPU or NIC sysfs does not
// show), every rail serves it. Config gpu_rails overrides the choice for
// the GPUs it names.
//
// The rank's ring groups go to the least loaded of its rails, its large
// writes are striped over them, and writes leaving a failing rail go to
// another of them first (proxy/relay.cc).
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/fabric/pci_location.h"
#include "epx/status.h"
#include "epx/v1/config.pb.h"
#include "epx/v1/status.pb.h"

namespace epx::daemon {

struct GpuRails {
  std::vector<uint32_t> rails;  // nearest first; never empty when the node has rails
  std::string why;              // "same PCIe switch as 0000:19:00.0", "config gpu_rails", ...
  int numa_node = -1;           // the GPU's
};

// Pure: the rails nearest `gpu` among rails at `rails` (index = rail index).
GpuRails nearest_rails(const PciLocation& gpu, const std::vector<PciLocation>& rails);

class RailAffinity {
 public:
  // Checks config gpu_rails (PCI addresses, rail indices below the rail
  // count, no GPU twice: INVALID_ARGUMENT naming the entry) and keeps the
  // rails' locations.
  static Result<RailAffinity> create(const v1::DaemonConfig& config, std::vector<PciLocation> rails);

  RailAffinity(RailAffinity&& other) noexcept;

  // The rails for a GPU given by PCI address (normalised, or empty: every
  // rail). Remembered for status (a bounded number of GPUs).
  GpuRails rails_for(const std::string& gpu);

  // Every GPU asked about and every configured one.
  std::vector<v1::GpuRailsStatus> status() const;

  // GPUs remembered at most: a client sends its own address, so the table
  // cannot grow without bound. Later GPUs are answered, not remembered.
  static constexpr size_t kMaxGpus = 256;

 private:
  RailAffinity(std::string sysfs_root, std::vector<PciLocation> rails, std::map<std::string, GpuRails> configured)
      : sysfs_root_(std::move(sysfs_root)), rails_(std::move(rails)), known_(std::move(configured)) {}
  GpuRails every_rail(const std::string& why) const;

  const std::string sysfs_root_;
  const std::vector<PciLocation> rails_;
  mutable std::mutex mu_;
  std::map<std::string, GpuRails> known_;  // by normalised address
};

}  // namespace epx::daemon
