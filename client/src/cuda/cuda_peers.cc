// CudaPeers (epx/cuda.h): same-node GPU buffers through the daemon's
// handle exchange.
#include <cuda_runtime_api.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <type_traits>
#include <utility>

#include "client/src/cuda/cuda_handles.h"
#include "cuda/cuda_status.h"
#include "epx/cuda.h"

namespace epx {
namespace {

// What CudaPeers posts for its buffer (opaque bytes to the daemon): the
// CUDA IPC handle, and which process made it at which address, because
// CUDA IPC refuses to open a handle in the process that exported it. A rank
// of the same process uses the address itself.
struct PostedHandle {
  cudaIpcMemHandle_t ipc;
  uint64_t process;  // process_key() of the poster
  uint64_t pid;      // with the key: a forked child is another process
  uint64_t address;  // the buffer's device address in the poster
};
static_assert(std::is_trivially_copyable_v<PostedHandle>, "posted as raw bytes");
static_assert(sizeof(PostedHandle) <= 256, "the daemon relays handles of at most 256 bytes");

// Random per process and fixed for its lifetime: pids alone repeat across
// pid namespaces (containers sharing a node and its daemon).
uint64_t process_key() {
  static const uint64_t key = [] {
    std::random_device random;
    return (uint64_t{random()} << 32) ^ random();
  }();
  return key;
}

std::string encode(const PostedHandle& h) { return std::string(reinterpret_cast<const char*>(&h), sizeof(h)); }

bool decode(const std::string& bytes, PostedHandle* h) {
  if (bytes.size() != sizeof(*h)) return false;
  std::memcpy(h, bytes.data(), sizeof(*h));
  return true;
}

// Kernels on GPU `current` store to `ptr`, memory of this process on
// whichever GPU: enable peer access to that GPU when it is another one.
Status reach_from(int current, void* ptr) {
  cudaPointerAttributes attr = {};
  EPX_RETURN_IF_ERROR(cuda_status(cudaPointerGetAttributes(&attr, ptr), "cudaPointerGetAttributes"));
  if (attr.device == current) return Status();
  const cudaError_t e = cudaDeviceEnablePeerAccess(attr.device, 0);
  if (e == cudaErrorPeerAccessAlreadyEnabled) {
    (void)cudaGetLastError();  // not a failure: clear it so later checks do not see it
    return Status();
  }
  return cuda_status(e, "peer access from GPU " + std::to_string(current) + " to GPU " + std::to_string(attr.device));
}

}  // namespace

// The IPC mappings are closed before the table that points at them is freed
// (reverse order of declaration), though neither depends on the other.
struct CudaPeers::Resources {
  std::vector<cuda_handles::IpcMapping> opened;
  cuda_handles::DeviceAllocation table;
};

Result<std::unique_ptr<CudaPeers>> CudaPeers::open(Job& job, void* device_buffer, size_t bytes,
                                                   std::chrono::milliseconds timeout) {
  PostedHandle own = {};
  EPX_RETURN_IF_ERROR(cuda_status(cudaIpcGetMemHandle(&own.ipc, device_buffer), "cudaIpcGetMemHandle"));
  own.process = process_key();
  own.pid = static_cast<uint64_t>(::getpid());
  own.address = reinterpret_cast<uintptr_t>(device_buffer);
  EPX_ASSIGN_OR_RETURN(const std::vector<PeerBuffer> peers, job.exchange_ipc(encode(own), bytes, timeout));
  int current = 0;
  EPX_RETURN_IF_ERROR(cuda_status(cudaGetDevice(&current), "cudaGetDevice"));

  std::unique_ptr<CudaPeers> p(new CudaPeers());
  p->resources_ = std::make_unique<Resources>();
  p->pointers_.assign(job.world_size(), nullptr);
  for (const PeerBuffer& peer : peers) {
    PostedHandle posted;
    if (peer.rank >= job.world_size() || !decode(peer.handle, &posted)) {
      return internal_error("bad handle for rank " + std::to_string(peer.rank) + " from the daemon");
    }
    void* ptr = nullptr;
    if (posted.process == own.process && posted.pid == own.pid) {
      ptr = reinterpret_cast<void*>(static_cast<uintptr_t>(posted.address));
      EPX_RETURN_IF_ERROR(reach_from(current, ptr));
    } else {
      EPX_ASSIGN_OR_RETURN(cuda_handles::IpcMapping mapping,
                           cuda_handles::open_ipc(posted.ipc, "rank " + std::to_string(peer.rank) + "'s buffer"));
      ptr = mapping.get();
      p->resources_->opened.push_back(std::move(mapping));
    }
    p->pointers_[peer.rank] = static_cast<uint8_t*>(ptr);
  }
  const size_t table_bytes = sizeof(uint8_t*) * p->pointers_.size();
  EPX_ASSIGN_OR_RETURN(p->resources_->table, cuda_handles::allocate_device(table_bytes, "the peer table"));
  EPX_RETURN_IF_ERROR(cuda_status(
      cudaMemcpy(p->resources_->table.get(), p->pointers_.data(), table_bytes, cudaMemcpyHostToDevice),
      "copying the peer table"));
  p->device_ = DevicePeers{static_cast<uint8_t* const*>(p->resources_->table.get()),
                           static_cast<uint32_t>(p->pointers_.size())};
  return p;
}

CudaPeers::~CudaPeers() = default;

}  // namespace epx
