#include "client/src/normal/stage_clock.h"

#include <cuda_runtime_api.h>

#include <utility>

#include "cuda/cuda_status.h"

namespace epx {

Result<StageClock> StageClock::create(std::vector<std::string> kernels, const std::string& who) {
  StageClock c;
  c.kernels_ = std::move(kernels);
  for (size_t i = 0; i <= c.kernels_.size(); ++i) {
    EPX_ASSIGN_OR_RETURN(cuda_handles::TimingEvent e, cuda_handles::create_timing_event(who + " stage timing"));
    c.raw_.push_back(e.get());
    c.events_.push_back(std::move(e));
  }
  return c;
}

void* const* StageClock::arm() {
  armed_ = true;
  return raw_.data();
}

Result<std::vector<NormalStageTime>> StageClock::times(const std::string& who) const {
  if (!armed_) return failed_precondition(who + ": no call was timed since stage timing was turned on");
  EPX_RETURN_IF_ERROR(cuda_status(cudaEventSynchronize(events_.back().get()), who + ": waiting for the timed call"));
  std::vector<NormalStageTime> out;
  for (size_t i = 0; i < kernels_.size(); ++i) {
    float ms = 0;
    EPX_RETURN_IF_ERROR(cuda_status(cudaEventElapsedTime(&ms, events_[i].get(), events_[i + 1].get()),
                                    who + ": timing " + kernels_[i]));
    out.push_back({kernels_[i], 1000.0 * ms});
  }
  return out;
}

}  // namespace epx
