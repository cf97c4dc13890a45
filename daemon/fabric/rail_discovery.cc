#include "daemon/fabric/rail_discovery.h"

#include <dirent.h>
#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

namespace epx::daemon {
namespace {

// libfabric API version EPX is written against; newer libraries (AWS EFA's)
// still honour it.
constexpr uint32_t kFiVersion = FI_VERSION(1, 14);

// "tcp;ofi_rxm" -> "tcp": the core provider under utility layers.
std::string core_provider(const fi_info& info) {
  std::string name = info.fabric_attr->prov_name ? info.fabric_attr->prov_name : "";
  return name.substr(0, name.find(';'));
}

// The signal immediate is 32 bits (EFA's limit), so 4 bytes of CQ data suffice.
bool usable(const fi_info& info) { return info.domain_attr->cq_data_size >= 4; }

// libfabric reads its tuning from the environment when a provider first
// initialises. rxm (the RDM layer over tcp/verbs) defaults to 16 KiB bounce
// buffers in pools sized for messaging; EPX only does RMA writes, which rxm
// passes straight to the msg endpoint, so 4 KiB buffers cut the daemon's
// idle RSS from ~90 MiB to ~40 MiB without touching the data path. An
// operator's own setting wins (overwrite = 0).
void tune_provider_defaults() {
  static const bool once = [] {
    setenv("FI_OFI_RXM_BUFFER_SIZE", "4096", 0);
    return true;
  }();
  (void)once;
}

Result<FiInfoPtr> get_info(const char* provider, uint64_t extra_caps = 0) {
  tune_provider_defaults();
  FiInfoPtr hints = rail_hints();
  hints->caps |= extra_caps;
  if (provider != nullptr) hints->fabric_attr->prov_name = strdup(provider);
  fi_info* list = nullptr;
  int ret = fi_getinfo(kFiVersion, nullptr, nullptr, 0, hints.get(), &list);
  if (ret == -FI_ENODATA) return FiInfoPtr();
  if (ret != 0) return fi_status(ret, std::string("fi_getinfo(") + (provider ? provider : "any") + ")");
  return FiInfoPtr(list);
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out.empty() ? "none" : out;
}

// Entry names of a directory, sorted, "." and ".." left out; empty when it
// cannot be read.
std::vector<std::string> directory_names(const std::string& path) {
  std::vector<std::string> names;
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) return names;
  while (dirent* e = readdir(dir)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

// The last component of a symlink's target ("efa" for .../drivers/efa).
std::string link_basename(const std::string& path) {
  char buf[PATH_MAX];
  const ssize_t n = readlink(path.c_str(), buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  const std::string target(buf, static_cast<size_t>(n));
  return target.substr(target.rfind('/') + 1);
}

}  // namespace

std::string rdma_devices_description() {
  std::vector<std::string> uverbs;
  for (const auto& name : directory_names("/dev/infiniband")) {
    if (name.rfind("uverbs", 0) == 0) uverbs.push_back("/dev/infiniband/" + name);
  }
  std::vector<std::string> devices;
  for (const auto& name : directory_names("/sys/class/infiniband")) {
    const std::string driver = link_basename("/sys/class/infiniband/" + name + "/device/driver");
    devices.push_back(driver.empty() ? name : name + " (" + driver + ")");
  }
  return "device nodes: " + (uverbs.empty() ? std::string("no /dev/infiniband/uverbs*") : join(uverbs)) +
         "; RDMA devices in /sys/class/infiniband: " + join(devices);
}

Result<ProviderChoice> choose_provider(const std::string& configured, bool require_rdma) {
  const std::vector<std::string> present = available_providers();
  auto has = [&](const std::string& p) { return std::find(present.begin(), present.end(), p) != present.end(); };
  if (configured != "auto") {
    if (!has(configured)) {
      return failed_precondition("provider '" + configured +
                                 "' is not available (RDM endpoints with RMA and remote CQ data); libfabric offers: " +
                                 join(present) + "; " + rdma_devices_description());
    }
    return ProviderChoice{configured, ""};
  }
  for (const char* p : {"efa", "verbs"}) {
    if (has(p)) return ProviderChoice{p, ""};
  }
  const std::string why = "provider auto found neither efa nor verbs (libfabric offers: " + join(present) + "; " +
                          rdma_devices_description() + ")";
  if (require_rdma) {
    return failed_precondition(why + "; require_provider forbids falling back to tcp");
  }
  if (!has("tcp")) return failed_precondition(why + " and no tcp either");
  return ProviderChoice{"tcp", why + ": falling back to tcp, which moves data with the CPU over sockets"};
}

FiInfoPtr rail_hints() {
  FiInfoPtr hints(fi_allocinfo());
  // Remote CQ data is not a capability bit: usable() checks cq_data_size.
  hints->caps = FI_RMA | FI_WRITE | FI_REMOTE_WRITE;
  // The data plane passes a fi_context2 with every operation.
  hints->mode = FI_CONTEXT | FI_CONTEXT2;
  hints->ep_attr->type = FI_EP_RDM;
  hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_HMEM;
  // One proxy thread owns each rail, so the provider may skip its locks.
  hints->domain_attr->threading = FI_THREAD_DOMAIN;
  return hints;
}

std::vector<std::string> available_providers() {
  std::set<std::string> names;
  auto list = get_info(nullptr);
  if (list.ok()) {
    for (fi_info* i = list->get(); i != nullptr; i = i->next) {
      if (usable(*i)) names.insert(core_provider(*i));
    }
  }
  return {names.begin(), names.end()};
}

Result<std::vector<std::unique_ptr<Rail>>> open_rails(const std::string& provider,
                                                      const std::vector<std::string>& domains,
                                                      uint32_t rails_per_domain) {
  if (rails_per_domain == 0) return invalid_argument("rails_per_domain must be at least 1");
  EPX_ASSIGN_OR_RETURN(ProviderChoice choice, choose_provider(provider, /*require_rdma=*/false));
  const std::string chosen = choice.provider;

  // Device windows register GPU memory, which providers accept only on a
  // domain opened with FI_HMEM (libfabric otherwise treats every
  // registration as host memory). Ask for it where it can work (NIC DMA:
  // efa, verbs) and take the plain rails when the provider refuses it.
  // A domain the FI_HMEM query does not list (or a query that fails) still
  // gets its plain rail.
  Result<FiInfoPtr> hmem_list = FiInfoPtr();
  if (chosen == "efa" || chosen == "verbs") hmem_list = get_info(chosen.c_str(), FI_HMEM);
  EPX_ASSIGN_OR_RETURN(FiInfoPtr list, get_info(chosen.c_str()));
  // One rail per domain; among a domain's entries prefer IPv4 addressing
  // (tcp lists IPv4 and IPv6 fabrics for every interface).
  std::map<std::string, const fi_info*> by_domain;
  std::vector<std::string> order;
  std::set<std::string> seen, with_hmem;
  auto consider = [&](const fi_info* head, bool hmem) {
    for (const fi_info* i = head; i != nullptr; i = i->next) {
      if (core_provider(*i) != chosen || !usable(*i)) continue;
      std::string domain = i->domain_attr->name ? i->domain_attr->name : "";
      seen.insert(domain);
      if (!domains.empty() && std::find(domains.begin(), domains.end(), domain) == domains.end()) continue;
      if (!hmem && with_hmem.count(domain)) continue;  // its FI_HMEM entry wins
      if (hmem) with_hmem.insert(domain);
      auto it = by_domain.find(domain);
      if (it == by_domain.end()) {
        by_domain[domain] = i;
        order.push_back(domain);
      } else if (it->second->addr_format != FI_SOCKADDR_IN && i->addr_format == FI_SOCKADDR_IN) {
        it->second = i;
      }
    }
  };
  if (hmem_list.ok() && hmem_list.value()) consider(hmem_list->get(), true);
  consider(list.get(), false);
  if (order.empty()) {
    return failed_precondition("provider '" + chosen + "': no domain matches rail_domains [" + join(domains) +
                               "]; domains present: " + join({seen.begin(), seen.end()}));
  }
  std::vector<std::unique_ptr<Rail>> rails;
  for (const auto& domain : order) {
    for (uint32_t k = 0; k < rails_per_domain; ++k) {
      EPX_ASSIGN_OR_RETURN(auto rail, Rail::open(*by_domain[domain], static_cast<uint32_t>(rails.size())));
      rails.push_back(std::move(rail));
    }
  }
  return rails;
}

}  // namespace epx::daemon
