// CUDA events between the kernels of a normal-mode call, so a rank can say
// where a call's time went (NormalBuffer::set_stage_timing): event 0 before
// the first kernel, event i + 1 after kernel i.
#pragma once

#include <string>
#include <vector>

#include "client/src/cuda/cuda_handles.h"
#include "epx/normal.h"
#include "epx/status.h"

namespace epx {

class StageClock {
 public:
  // One event per kernel, plus the start; `who` names the buffer in errors.
  static Result<StageClock> create(std::vector<std::string> kernels, const std::string& who);

  // For the launcher's args of a call that is timed; the call is then the
  // one times() reports.
  void* const* arm();
  // Each kernel's time in the last armed call; waits for it to finish.
  // FAILED_PRECONDITION when no call was armed.
  Result<std::vector<NormalStageTime>> times(const std::string& who) const;

 private:
  std::vector<std::string> kernels_;
  std::vector<cuda_handles::TimingEvent> events_;
  std::vector<void*> raw_;  // events_ as the launcher takes them
  bool armed_ = false;
};

}  // namespace epx
