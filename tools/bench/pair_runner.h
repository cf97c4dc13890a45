// The two-thread harness every measurement shares: side A on the calling
// thread, side B on a thread of its own, each driving its endpoint through a
// Channel. FI_THREAD_DOMAIN lets one thread use a domain; each side has its
// own domain, and only this harness hands an endpoint to a thread.
#pragma once

#include <chrono>
#include <functional>

#include "epx/status.h"
#include "tools/bench/bench_endpoint.h"
#include "tools/bench/channel.h"

namespace epx::bench {

using SideFn = std::function<Status(Channel&)>;

// Runs both sides to the end. A failing side sets control.failed so the
// other stops waiting (ABORTED); the first real cause is returned, with the
// other side's state appended. Every wait inside gives up after
// `stall_timeout` without a completion, so this returns in bounded time.
//
// With `pin_threads`, and when at least two CPUs are allowed, A and B are
// pinned to two different CPUs for the run (A's previous affinity is
// restored): two busy-polling threads left on one CPU answer each other
// only at scheduler time slices, milliseconds instead of microseconds.
Status run_pair(EndpointPair& pair, PairControl& control, std::chrono::milliseconds stall_timeout, const SideFn& side_a,
                const SideFn& side_b, bool pin_threads = true);

}  // namespace epx::bench
