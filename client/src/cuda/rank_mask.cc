#include "client/src/cuda/rank_mask.h"

#include <cuda_runtime_api.h>

#include "cuda/cuda_status.h"

namespace epx::cuda_handles {

Result<RankMask> RankMask::create(int num_ranks, uint32_t self, const std::string& who) {
  RankMask m;
  EPX_ASSIGN_OR_RETURN(m.device_, allocate_zeroed_device(sizeof(int32_t) * num_ranks, who + " rank mask"));
  m.host_.assign(num_ranks, 0);
  m.self_ = self;
  return m;
}

Status RankMask::mask(uint32_t rank, const std::string& call) {
  if (rank >= host_.size()) {
    return invalid_argument(call + ": rank " + std::to_string(rank) + " is not in the job of " +
                            std::to_string(host_.size()));
  }
  if (rank == self_) return invalid_argument(call + ": a rank cannot mask itself");
  if (host_[rank] != 0) return Status();
  host_[rank] = 1;
  // Complete before the next call is enqueued: a host-to-device copy from
  // pageable memory may return before it lands, and non-blocking streams
  // do not wait for the legacy stream. Masking is rare; a device-wide sync
  // is affordable there.
  EPX_RETURN_IF_ERROR(cuda_status(cudaMemcpy(static_cast<int32_t*>(device_.get()) + rank, &host_[rank],
                                             sizeof(int32_t), cudaMemcpyHostToDevice),
                                  call + ": cudaMemcpy rank mask"));
  return cuda_status(cudaDeviceSynchronize(), call + ": cudaDeviceSynchronize after masking rank " + std::to_string(rank));
}

std::vector<uint32_t> RankMask::ranks() const {
  std::vector<uint32_t> out;
  for (size_t r = 0; r < host_.size(); ++r) {
    if (host_[r] != 0) out.push_back(static_cast<uint32_t>(r));
  }
  return out;
}

}  // namespace epx::cuda_handles
