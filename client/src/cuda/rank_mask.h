// The ranks a buffer's kernels neither send to nor wait for (lost ranks,
// DeepEP's shrink mode): a host copy, and device int32 [num_ranks] the
// kernels read (non-zero = masked). Shared by LowLatencyBuffer and
// NormalBuffer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "client/src/cuda/cuda_handles.h"
#include "epx/status.h"

namespace epx::cuda_handles {

class RankMask {
 public:
  // Nothing masked. On the current device.
  static Result<RankMask> create(int num_ranks, uint32_t self, const std::string& who);

  // INVALID_ARGUMENT for a rank outside the job or this rank itself
  // (`call` names the caller). Masking a masked rank does nothing. Returns
  // when the device copy holds it, so the next call enqueued sees it.
  Status mask(uint32_t rank, const std::string& call);

  const int32_t* device() const { return static_cast<const int32_t*>(device_.get()); }
  bool masked(uint32_t rank) const { return host_[rank] != 0; }
  std::vector<uint32_t> ranks() const;

 private:
  DeviceAllocation device_;
  std::vector<int32_t> host_;
  uint32_t self_ = 0;
};

}  // namespace epx::cuda_handles
