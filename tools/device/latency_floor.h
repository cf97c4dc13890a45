// GPU <-> CPU round trips through host-pinned memory with no daemon and no
// fabric: the floor a GPU-initiated one-way latency is judged against, and
// what EPX's device ring API adds on top of it. Used by gpu_bench (f).
#pragma once

#include <cstdint>

#include "epx/device.cuh"
#include "epx/status.h"

namespace epx::gpu {

enum class FloorMode : int {
  kFlagFenced = 0,         // volatile flag store + system fence, volatile spin (DEVICE.md's probe)
  kFlagReleaseFenced = 1,  // release store + system fence, epx::wait_signal
  kRingPost = 2,           // epx::post_signal into a ring, epx::wait_signal
  kFlagSpinWait = 3,       // release store + system fence, relaxed spin + acquire fence
  kFlagSent = 4,           // PTX st.mmio flag store, no fence, epx::wait_signal
  // kRingPost with the publication of sessions 2-13: release seq, release
  // doorbell, trailing system fence (three system fences).
  kRingPostReleased = 5,
  // kRingPost with one fence and the seq and doorbell stored by PTX st.mmio
  // (never held in the GPU's caches), no trailing fence.
  kRingPostSent = 6,
};

// One thread, `iters` rounds: round i tells the CPU (flag `to_cpu` = i, or a
// signal-only descriptor posted into `ring`) and waits for signal word 0 of
// `signals` to reach i. elapsed_ns_dev[0] = total time; *ok_dev = 0 on a
// timeout. `to_cpu` is host-pinned and mapped.
Status launch_floor_pingpong(FloorMode mode, uint64_t* to_cpu, DeviceRing ring, DeviceSignals signals, uint32_t iters,
                             uint64_t* elapsed_ns_dev, int* ok_dev, void* stream);

}  // namespace epx::gpu
