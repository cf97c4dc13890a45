#include "daemon/fabric/device_memory.h"

#include <rdma/fabric.h>
#include <rdma/fi_domain.h>

#include <vector>

// EPX_LIBFABRIC_PREFIX: where the headers came from (third_party/libfabric/repository.bzl).
#include "epx_libfabric_prefix.h"

// FI_MR_DMABUF (fi_mr_attr.dmabuf) arrived in libfabric 1.20. Debian 12's
// 1.17 headers lack it: the registration below then compiles to a refusal.
#if defined(FI_MR_DMABUF) && FI_VERSION_GE(FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION), FI_VERSION(1, 20))
#define EPX_HAVE_FI_MR_DMABUF 1
#else
#define EPX_HAVE_FI_MR_DMABUF 0
#endif

// tools/check-libfabric-prefix.sh builds with this to prove that a newer
// libfabric's headers select the registration path.
#if defined(EPX_REQUIRE_FI_MR_DMABUF) && !EPX_HAVE_FI_MR_DMABUF
#error "EPX_REQUIRE_FI_MR_DMABUF: this libfabric's headers have no FI_MR_DMABUF (need >= 1.20)"
#endif

namespace epx::daemon {
namespace {

constexpr uint32_t kDmabufVersion = FI_VERSION(1, 20);

std::string version_string(uint32_t v) { return std::to_string(FI_MAJOR(v)) + "." + std::to_string(FI_MINOR(v)); }

// "tcp;ofi_rxm" -> "tcp".
std::string core_provider(const Rail& rail) { return rail.provider().substr(0, rail.provider().find(';')); }

// Providers whose RMA is NIC DMA from registered memory. shm and tcp (and
// udp, sockets) copy with the CPU of the process that posts, which here is
// the daemon: it cannot dereference a client's GPU address.
bool provider_dmas(const std::string& core) { return core == "efa" || core == "verbs"; }

}  // namespace

bool dmabuf_registration_built() { return EPX_HAVE_FI_MR_DMABUF && FI_VERSION_GE(fi_version(), kDmabufVersion); }

Status device_window_support(const Rail& rail) {
  std::vector<std::string> why;
  const std::string core = core_provider(rail);
  if (!provider_dmas(core)) {
    why.push_back("provider copies with the CPU; device windows need efa or verbs with FI_HMEM");
  } else if (!rail.supports_hmem()) {
    why.push_back("provider does not report FI_HMEM (no GPUDirect RDMA: EFA without p2p, verbs without "
                  "nvidia-peermem/dma-buf?)");
  }
  if (!EPX_HAVE_FI_MR_DMABUF) {
    why.push_back("built against libfabric " + version_string(FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION)) +
                  " headers at " EPX_LIBFABRIC_PREFIX ", which have no FI_MR_DMABUF (needs >= 1.20: bazel build "
                  "--config=aws, or --repo_env=EPX_LIBFABRIC_PREFIX=<newer libfabric>)");
  } else if (!FI_VERSION_GE(fi_version(), kDmabufVersion)) {
    why.push_back("libfabric at run time is " + version_string(fi_version()) + ", older than the " +
                  version_string(FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION)) +
                  " headers epxd was built with; FI_MR_DMABUF needs >= 1.20");
  }
  if (why.empty()) return Status();
  std::string message = "rail " + std::to_string(rail.index()) + " (" + core + " " + rail.domain_name() + "): ";
  for (size_t i = 0; i < why.size(); ++i) message += (i ? "; " : "") + why[i];
  return failed_precondition(message);
}

Result<MrPtr> register_dmabuf(Rail& rail, const DmabufRange& range, uint64_t requested_key) {
  const std::string what = "registering " + std::to_string(range.length) + " bytes of GPU memory (dma-buf) on rail " +
                           std::to_string(rail.index());
#if EPX_HAVE_FI_MR_DMABUF
  fi_mr_dmabuf dmabuf = {};
  dmabuf.fd = range.fd;
  dmabuf.offset = 0;
  dmabuf.len = range.length;
  // The MR's address is base_addr + offset: the client's VA, so remote
  // FI_MR_VIRT_ADDR writes and our local write sources use that address.
  dmabuf.base_addr = reinterpret_cast<void*>(range.device_va);
  fi_mr_attr attr = {};
  attr.dmabuf = &dmabuf;
  attr.iov_count = 1;
  attr.access = FI_WRITE | FI_REMOTE_WRITE | FI_READ | FI_REMOTE_READ;
  attr.requested_key = requested_key;
  attr.iface = FI_HMEM_CUDA;
  attr.device.cuda = range.cuda_device;
  fid_mr* mr = nullptr;
  int ret = fi_mr_regattr(rail.domain(), &attr, FI_MR_DMABUF, &mr);
  // A provider that cannot register this memory (no peer-memory support,
  // EFA without p2p, ...) is a precondition, so the SDK falls back to a host
  // window instead of failing.
  if (ret != 0) return failed_precondition(what + ": fi_mr_regattr(FI_MR_DMABUF): " + fi_strerror(-ret));
  return MrPtr(mr);
#else
  (void)range;
  (void)requested_key;
  return failed_precondition(what + ": this epxd was built without FI_MR_DMABUF");
#endif
}

std::string libfabric_description() {
  const uint32_t v = fi_version();
  return version_string(v) + " (built against " +
         version_string(FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION)) + " headers at " EPX_LIBFABRIC_PREFIX +
         (EPX_HAVE_FI_MR_DMABUF ? "; FI_MR_DMABUF)" : "; no FI_MR_DMABUF)");
}

}  // namespace epx::daemon
