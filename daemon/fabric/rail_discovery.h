// Finding the node's NICs: which libfabric provider to use and one Rail per
// domain (NIC) of it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "epx/status.h"
#include "daemon/fabric/rail.h"

namespace epx::daemon {

// The hints every rail needs: reliable datagrams, RMA writes with remote CQ
// data (the signal immediate), and the MR modes the data plane handles.
FiInfoPtr rail_hints();

// Core provider names fi_getinfo reports for rail_hints() ("efa", "tcp", ...).
std::vector<std::string> available_providers();

// The provider the rails use. With "auto" and neither efa nor verbs
// usable, `fallback` says so and why (what libfabric offers, which RDMA
// device nodes exist); empty otherwise.
struct ProviderChoice {
  std::string provider;
  std::string fallback;
};

// Resolves `configured` (auto | efa | verbs | tcp | shm). With
// `require_rdma` an auto that would fall back is FAILED_PRECONDITION
// instead (config require_provider). A named provider that is not there is
// an error listing the ones that are.
Result<ProviderChoice> choose_provider(const std::string& configured, bool require_rdma);

// What the node shows of RDMA NICs, the way libfabric's efa and verbs
// providers find them (through rdma-core): device nodes
// /dev/infiniband/uverbsN and their sysfs entries
// /sys/class/infiniband/NAME with the kernel driver bound to each
// ("rdmap16s27 (efa)"). Network interfaces are not consulted: a pod often
// has no EFA interface yet can use the NIC through its device node.
std::string rdma_devices_description();

// Opens `rails_per_domain` rails (each an endpoint of its own, served by
// its own proxy) on every domain of `provider` ("auto" prefers efa > verbs
// > tcp), restricted to `domains` when not empty. A provider that is not
// there is an error listing the ones that are.
Result<std::vector<std::unique_ptr<Rail>>> open_rails(const std::string& provider,
                                                      const std::vector<std::string>& domains,
                                                      uint32_t rails_per_domain = 1);

}  // namespace epx::daemon
