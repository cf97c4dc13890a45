// Pinning benchmark threads to CPUs. Best effort throughout: a thread left
// unpinned makes a run slower under contention, not wrong, so failures are
// not reported.
#pragma once

#include <sched.h>

namespace epx::bench {

// Pins the calling thread to CPU `cpu`; `cpu` < 0 leaves it as it is.
void pin_current_thread(int cpu);

// The CPUs the calling thread may run on now, and setting them back.
cpu_set_t current_thread_cpus();
void set_current_thread_cpus(const cpu_set_t& cpus);

}  // namespace epx::bench
