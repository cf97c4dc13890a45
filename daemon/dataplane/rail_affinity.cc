#include "daemon/dataplane/rail_affinity.h"

#include <algorithm>
#include <set>

namespace epx::daemon {
namespace {

// How near a rail is to a GPU; lower is nearer.
enum Level { kSameSwitch = 0, kSameRootComplex = 1, kSameNuma = 2, kFar = 3 };

// Leading path entries (root complex first) two locations share.
size_t shared_path(const PciLocation& a, const PciLocation& b) {
  size_t n = 0;
  while (n < a.path.size() && n < b.path.size() && a.path[n] == b.path[n]) ++n;
  return n;
}

}  // namespace

GpuRails nearest_rails(const PciLocation& gpu, const std::vector<PciLocation>& rails) {
  GpuRails out;
  out.numa_node = gpu.numa_node;
  auto every = [&](const std::string& why) {
    out.rails.clear();
    for (uint32_t i = 0; i < rails.size(); ++i) out.rails.push_back(i);
    out.why = why;
    return out;
  };
  if (rails.empty()) return every("the node has no rails");
  if (!gpu.known()) return every("GPU location unknown: every rail");
  struct Candidate {
    Level level;
    size_t depth;
    uint32_t index;
  };
  std::vector<Candidate> candidates;
  bool any_known = false;
  for (uint32_t i = 0; i < rails.size(); ++i) {
    const PciLocation& rail = rails[i];
    any_known = any_known || rail.known();
    const size_t depth = rail.known() ? shared_path(gpu, rail) : 0;
    Level level = kFar;
    // path[0] is the root complex, path[1] the root port: sharing the root
    // port means sharing the switch below it (a root port has one link).
    if (depth >= 2) {
      level = kSameSwitch;
    } else if (depth == 1) {
      level = kSameRootComplex;
    } else if (gpu.numa_node >= 0 && rail.numa_node == gpu.numa_node) {
      level = kSameNuma;
    }
    candidates.push_back({level, depth, i});
  }
  const Level best = std::min_element(candidates.begin(), candidates.end(), [](const auto& a, const auto& b) {
                       return a.level < b.level;
                     })->level;
  if (best == kFar) {
    return every(any_known
                     ? "no rail shares GPU " + gpu.address + "'s PCIe switch, root complex or NUMA node: every rail"
                     : "no rail is a PCI device sysfs shows: every rail");
  }
  // Under nested switches, the deepest shared bridge: the GPU's own NICs,
  // not those of its neighbour under the same top switch.
  size_t deepest = 0;
  for (const auto& c : candidates) {
    if (c.level == best) deepest = std::max(deepest, c.depth);
  }
  for (const auto& c : candidates) {
    if (c.level == best && (best != kSameSwitch || c.depth == deepest)) out.rails.push_back(c.index);
  }
  switch (best) {
    case kSameSwitch:
      out.why = "same PCIe switch as GPU " + gpu.address + " (below " + gpu.path[deepest - 1] + ")";
      break;
    case kSameRootComplex: out.why = "same PCIe root complex as GPU " + gpu.address + " (" + gpu.path[0] + ")"; break;
    default: out.why = "same NUMA node as GPU " + gpu.address + " (node " + std::to_string(gpu.numa_node) + ")"; break;
  }
  return out;
}

Result<RailAffinity> RailAffinity::create(const v1::DaemonConfig& config, std::vector<PciLocation> rails) {
  const std::string root = config.sysfs_root().empty() ? "/sys" : config.sysfs_root();
  std::map<std::string, GpuRails> configured;
  for (const auto& entry : config.gpu_rails()) {
    auto gpu = normalize_pci_address(entry.gpu());
    if (!gpu.ok()) return gpu.status().with_context("gpu_rails");
    const std::string where = "gpu_rails: GPU " + *gpu;
    if (entry.rails().empty()) return invalid_argument(where + " names no rail");
    std::set<uint32_t> seen;
    GpuRails g;
    for (uint32_t r : entry.rails()) {
      if (r >= rails.size()) {
        return invalid_argument(where + ": rail " + std::to_string(r) + " does not exist (the node has " +
                                std::to_string(rails.size()) + " rails: epxctl status lists them)");
      }
      if (!seen.insert(r).second) return invalid_argument(where + ": rail " + std::to_string(r) + " given twice");
      g.rails.push_back(r);
    }
    g.why = "config gpu_rails";
    auto location = pci_location(root, *gpu);
    if (location.ok()) g.numa_node = location->numa_node;
    if (!configured.emplace(*gpu, std::move(g)).second) return invalid_argument(where + " is given twice");
  }
  return RailAffinity(root, std::move(rails), std::move(configured));
}

RailAffinity::RailAffinity(RailAffinity&& other) noexcept
    : sysfs_root_(other.sysfs_root_), rails_(other.rails_), known_(std::move(other.known_)) {}

GpuRails RailAffinity::every_rail(const std::string& why) const {
  GpuRails out;
  for (uint32_t i = 0; i < rails_.size(); ++i) out.rails.push_back(i);
  out.why = why;
  return out;
}

GpuRails RailAffinity::rails_for(const std::string& gpu) {
  if (gpu.empty()) return every_rail("no GPU address sent at join: every rail");
  std::lock_guard<std::mutex> lock(mu_);
  auto hit = known_.find(gpu);
  if (hit != known_.end()) return hit->second;
  auto location = pci_location(sysfs_root_, gpu);
  GpuRails out = location.ok()
                     ? nearest_rails(*location, rails_)
                     : every_rail("GPU " + gpu + " not found under " + sysfs_root_ + "/bus/pci/devices: every rail");
  if (known_.size() < kMaxGpus) known_.emplace(gpu, out);
  return out;
}

std::vector<v1::GpuRailsStatus> RailAffinity::status() const {
  std::vector<v1::GpuRailsStatus> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [gpu, g] : known_) {
    v1::GpuRailsStatus s;
    s.set_gpu(gpu);
    s.set_numa_node(g.numa_node);
    for (uint32_t r : g.rails) s.add_rails(r);
    s.set_why(g.why);
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace epx::daemon
