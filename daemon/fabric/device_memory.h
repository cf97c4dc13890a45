// GPU memory on rails: whether a rail can register a client's GPU memory
// (device windows) and the registration itself.
//
// The daemon never links CUDA. The client exports its allocation as a
// dma-buf and hands the descriptor over; the NIC's kernel driver imports it
// (fi_mr_regattr with FI_MR_DMABUF), so nothing in this process maps or
// copies GPU memory. That rules out providers that move data with the CPU
// (shm, tcp): their "FI_HMEM" means cudaMemcpy in the calling process, which
// cannot reach another process's GPU. Only efa and verbs DMA from registered
// memory.
#pragma once

#include <cstdint>
#include <string>

#include "daemon/fabric/fi_handles.h"
#include "daemon/fabric/rail.h"
#include "epx/status.h"

namespace epx::daemon {

// OK when `rail` can register GPU memory from a dma-buf; otherwise
// FAILED_PRECONDITION whose message names the rail and every reason, e.g.
// "rail 0 (shm): provider copies with the CPU; device windows need efa or
// verbs with FI_HMEM; built against libfabric 1.17 headers at /usr, which
// have no FI_MR_DMABUF (needs >= 1.20: bazel build --config=aws)".
Status device_window_support(const Rail& rail);

// True when this build can register dma-bufs at all (compiled against
// libfabric >= 1.20 headers, and running on such a library).
bool dmabuf_registration_built();

// One client GPU allocation exported as a dma-buf.
struct DmabufRange {
  int fd = -1;             // the dma-buf (borrowed; must stay open during the call)
  uint64_t length = 0;     // bytes from offset 0 of the dma-buf
  uint64_t device_va = 0;  // the client's CUDA address of byte 0: the MR's base
  int cuda_device = 0;     // the client's CUDA ordinal (libfabric records it)
};

// Registers `range` on `rail` for local reads (source of writes) and remote
// writes, with the client's address as its base, so FI_MR_VIRT_ADDR peers
// address it by that VA and local writes name it as their source. Must run
// on the rail's proxy thread; only after device_window_support(rail) is OK.
Result<MrPtr> register_dmabuf(Rail& rail, const DmabufRange& range, uint64_t requested_key);

// "1.17.0 (built against 1.17 headers at /usr; no FI_MR_DMABUF)": what
// `epxctl status` shows.
std::string libfabric_description();

}  // namespace epx::daemon
