#include "tools/bench/pair_runner.h"

#include <sched.h>

#include <optional>
#include <thread>

#include "tools/bench/affinity.h"

namespace epx::bench {
namespace {

struct CpuPair {
  int a = -1, b = -1;
};

// The CPU this thread runs on and the next one it may run on. Best effort:
// no pinning when fewer than two CPUs are allowed or the kernel says no.
std::optional<CpuPair> pick_cpus(const cpu_set_t& allowed) {
  if (CPU_COUNT(&allowed) < 2) return std::nullopt;
  int here = sched_getcpu();
  if (here < 0 || here >= CPU_SETSIZE || !CPU_ISSET(here, &allowed)) {
    for (here = 0; here < CPU_SETSIZE && !CPU_ISSET(here, &allowed); ++here) {
    }
  }
  for (int step = 1; step < CPU_SETSIZE; ++step) {
    const int other = (here + step) % CPU_SETSIZE;
    if (CPU_ISSET(other, &allowed)) return CpuPair{here, other};
  }
  return std::nullopt;
}

}  // namespace

Status run_pair(EndpointPair& pair, PairControl& control, std::chrono::milliseconds stall_timeout, const SideFn& side_a,
                const SideFn& side_b, bool pin_threads) {
  const cpu_set_t a_affinity = current_thread_cpus();
  std::optional<CpuPair> cpus;
  if (pin_threads) cpus = pick_cpus(a_affinity);

  Status status_b;
  std::thread thread_b([&] {
    if (cpus) pin_current_thread(cpus->b);
    Channel b(*pair.b, control, stall_timeout);
    status_b = side_b(b);
    if (!status_b.ok()) control.failed.store(true, std::memory_order_relaxed);
  });
  if (cpus) pin_current_thread(cpus->a);
  Channel a(*pair.a, control, stall_timeout);
  Status status_a = side_a(a);
  if (!status_a.ok()) control.failed.store(true, std::memory_order_relaxed);
  thread_b.join();
  if (cpus) set_current_thread_cpus(a_affinity);

  // The side that failed first has the cause; the other usually says
  // ABORTED, which tells what it was waiting for at the time.
  const bool a_first = !status_a.ok() && (status_a.code() != StatusCode::kAborted || status_b.ok());
  if (a_first) {
    return status_b.ok() ? status_a : Status(status_a.code(), status_a.message() + " [" + status_b.message() + "]");
  }
  if (!status_b.ok()) {
    return status_a.ok() ? status_b : Status(status_b.code(), status_b.message() + " [" + status_a.message() + "]");
  }
  return Status();
}

}  // namespace epx::bench
