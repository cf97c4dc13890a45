// A Rail is one NIC (libfabric domain) of the node with one reliable-datagram
// endpoint on it: fabric, domain, address vector, completion queue and
// endpoint, opened once when the daemon starts and owned by the daemon.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "daemon/fabric/fi_handles.h"
#include "epx/status.h"

namespace epx::daemon {

class Rail {
 public:
  // Opens the rail described by `info` (one entry of fi_getinfo's list).
  static Result<std::unique_ptr<Rail>> open(const fi_info& info, uint32_t index);

  uint32_t index() const { return index_; }
  const std::string& provider() const { return provider_; }  // "tcp;ofi_rxm", "efa", ...
  const std::string& fabric_name() const { return fabric_name_; }
  const std::string& domain_name() const { return domain_name_; }
  // fi_getname() of the endpoint: what peers insert into their address vector.
  const std::string& address() const { return address_; }
  uint64_t max_msg_size() const { return info_->ep_attr->max_msg_size; }
  int mr_mode() const { return info_->domain_attr->mr_mode; }
  bool supports_hmem() const { return (info_->caps & FI_HMEM) != 0; }
  // The NIC's PCI address as libfabric reports it in its bus attributes
  // ("0000:17:00.0"); empty when the provider reports none (tcp often
  // does not: pci_location.h then finds the NIC from the domain name).
  std::string nic_pci_address() const;
  const fi_info& info() const { return *info_; }

  fid_domain* domain() const { return domain_.get(); }
  fid_av* av() const { return av_.get(); }
  fid_cq* cq() const { return cq_.get(); }
  fid_ep* ep() const { return ep_.get(); }

 private:
  Rail() = default;

  uint32_t index_ = 0;
  std::string provider_, fabric_name_, domain_name_, address_;
  // Declared in libfabric's open order so destruction closes them in
  // reverse: ep, cq, av, domain, fabric.
  FiInfoPtr info_;
  FabricPtr fabric_;
  DomainPtr domain_;
  AvPtr av_;
  CqPtr cq_;
  EpPtr ep_;
};

// "local|virt_addr|prov_key": the FI_MR_* bits a provider asks for.
std::string mr_mode_string(int mr_mode);

}  // namespace epx::daemon
