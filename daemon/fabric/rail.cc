#include "daemon/fabric/rail.h"

#include <rdma/fi_cm.h>

#include <cstdio>

namespace epx::daemon {

Result<std::unique_ptr<Rail>> Rail::open(const fi_info& info, uint32_t index) {
  std::unique_ptr<Rail> rail(new Rail());
  rail->index_ = index;
  rail->info_.reset(fi_dupinfo(&info));
  if (!rail->info_) return internal_error("fi_dupinfo failed for rail " + std::to_string(index));
  fi_info* fi = rail->info_.get();
  rail->provider_ = fi->fabric_attr->prov_name ? fi->fabric_attr->prov_name : "?";
  rail->fabric_name_ = fi->fabric_attr->name ? fi->fabric_attr->name : "?";
  rail->domain_name_ = fi->domain_attr->name ? fi->domain_attr->name : "?";
  const std::string where = "rail " + std::to_string(index) + " (" + rail->provider_ + " " + rail->domain_name_ + ")";

  fid_fabric* fabric = nullptr;
  EPX_RETURN_IF_ERROR(fi_status(fi_fabric(fi->fabric_attr, &fabric, nullptr), "fi_fabric on " + where));
  rail->fabric_.reset(fabric);

  fid_domain* domain = nullptr;
  EPX_RETURN_IF_ERROR(fi_status(fi_domain(fabric, fi, &domain, nullptr), "fi_domain on " + where));
  rail->domain_.reset(domain);

  fi_av_attr av_attr = {};
  av_attr.type = FI_AV_TABLE;  // peers are dense indices: fi_addr_t == insertion order
  fid_av* av = nullptr;
  EPX_RETURN_IF_ERROR(fi_status(fi_av_open(domain, &av_attr, &av, nullptr), "fi_av_open on " + where));
  rail->av_.reset(av);

  fi_cq_attr cq_attr = {};
  cq_attr.format = FI_CQ_FORMAT_DATA;  // remote CQ data carries the signal immediate
  cq_attr.wait_obj = FI_WAIT_NONE;     // proxies poll; no fd wake-ups on the data path
  cq_attr.size = std::max(fi->tx_attr->size, fi->rx_attr->size);
  fid_cq* cq = nullptr;
  EPX_RETURN_IF_ERROR(fi_status(fi_cq_open(domain, &cq_attr, &cq, nullptr), "fi_cq_open on " + where));
  rail->cq_.reset(cq);

  fid_ep* ep = nullptr;
  EPX_RETURN_IF_ERROR(fi_status(fi_endpoint(domain, fi, &ep, nullptr), "fi_endpoint on " + where));
  rail->ep_.reset(ep);
  EPX_RETURN_IF_ERROR(fi_status(fi_ep_bind(ep, &av->fid, 0), "fi_ep_bind(av) on " + where));
  EPX_RETURN_IF_ERROR(fi_status(fi_ep_bind(ep, &cq->fid, FI_TRANSMIT | FI_RECV), "fi_ep_bind(cq) on " + where));
  EPX_RETURN_IF_ERROR(fi_status(fi_enable(ep), "fi_enable on " + where));

  char name[256];
  size_t len = sizeof(name);
  EPX_RETURN_IF_ERROR(fi_status(fi_getname(&ep->fid, name, &len), "fi_getname on " + where));
  rail->address_.assign(name, len);
  return rail;
}

std::string Rail::nic_pci_address() const {
  const fid_nic* nic = info_->nic;
  if (nic == nullptr || nic->bus_attr == nullptr || nic->bus_attr->bus_type != FI_BUS_PCI) return "";
  const fi_pci_attr& pci = nic->bus_attr->attr.pci;
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%04x:%02x:%02x.%x", pci.domain_id, pci.bus_id, pci.device_id, pci.function_id);
  return buf;
}

std::string mr_mode_string(int mr_mode) {
  static const std::pair<int, const char*> kBits[] = {
      {FI_MR_LOCAL, "local"},         {FI_MR_RAW, "raw"},           {FI_MR_VIRT_ADDR, "virt_addr"},
      {FI_MR_ALLOCATED, "allocated"}, {FI_MR_PROV_KEY, "prov_key"}, {FI_MR_MMU_NOTIFY, "mmu_notify"},
      {FI_MR_RMA_EVENT, "rma_event"}, {FI_MR_ENDPOINT, "endpoint"}, {FI_MR_HMEM, "hmem"},
  };
  std::string out;
  for (const auto& [bit, name] : kBits) {
    if (mr_mode & bit) out += (out.empty() ? "" : "|") + std::string(name);
  }
  return out.empty() ? "none" : out;
}

}  // namespace epx::daemon
