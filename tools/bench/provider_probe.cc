#include "tools/bench/provider_probe.h"

#include <algorithm>
#include <atomic>

#include "daemon/fabric/rail.h"
#include "tools/bench/bench_endpoint.h"
#include "tools/bench/pair_runner.h"

namespace epx::bench {
namespace {

constexpr uint64_t kConnectData = 0x1;
constexpr uint64_t kProbeData = 0x5eed;
constexpr auto kProbeTimeout = std::chrono::milliseconds(2000);
// How long B holds back from reading its CQ while A watches for the probed
// write's local completion.
constexpr auto kHoldBack = std::chrono::milliseconds(100);

// On a fresh pair: a plain 8-byte write first, because shm and rxm both need
// the target to progress once before the first write to it is accepted
// (connection set-up). Then B stops reading its CQ, A posts the probed write
// and watches for its local completion for kHoldBack, B resumes and must
// see the probed write's CQ data.
ProbeCheck probe_write(const BaselineOptions& options, size_t len, uint64_t msg_flags) {
  ProbeCheck result;
  auto pair = open_pair(options.provider, options.domains, 4096, 2);
  if (!pair.ok()) {
    result.detail = pair.status().to_string();
    return result;
  }
  const auto stall = std::min(options.stall_timeout, std::chrono::milliseconds(kProbeTimeout));
  PairControl control;
  std::atomic<bool> resume{false};
  bool early = false;

  auto side_a = [&](Channel& a) -> Status {
    EPX_RETURN_IF_ERROR(a.write(8, kConnectData));
    EPX_RETURN_IF_ERROR(a.wait([&] { return control.received.load(std::memory_order_acquire) >= 1; },
                               [] { return std::string("side B to see the connecting write"); }));
    EPX_RETURN_IF_ERROR(a.drain());
    // B is now not reading its CQ.
    const uint64_t before = a.local_completions();
    EPX_RETURN_IF_ERROR(a.write(len, kProbeData, msg_flags));
    const Clock::time_point posted = Clock::now();
    while (Clock::now() - posted < kHoldBack && a.local_completions() == before) EPX_RETURN_IF_ERROR(a.poll());
    early = a.local_completions() > before;
    resume.store(true, std::memory_order_release);
    EPX_RETURN_IF_ERROR(a.wait([&] { return control.received.load(std::memory_order_acquire) >= 2; },
                               [] { return std::string("side B to see the probed write's CQ data"); }));
    EPX_RETURN_IF_ERROR(a.drain());
    control.stop.store(true, std::memory_order_release);
    return Status();
  };
  auto side_b = [&](Channel& b) -> Status {
    EPX_RETURN_IF_ERROR(
        b.wait([&] { return b.remote_completions() >= 1; }, [] { return std::string("the connecting write"); }));
    control.received.store(1, std::memory_order_release);
    // Deliberately no progress here, bounded by A's hold-back or failure.
    while (!resume.load(std::memory_order_acquire) && !control.failed.load(std::memory_order_relaxed)) {
    }
    EPX_RETURN_IF_ERROR(
        b.wait([&] { return b.remote_completions() >= 2; }, [] { return std::string("the probed write's CQ data"); }));
    if (b.last_remote_data() != kProbeData) {
      return internal_error(b.name() + ": probed write arrived with CQ data " + std::to_string(b.last_remote_data()) +
                            ", expected " + std::to_string(kProbeData));
    }
    control.received.store(2, std::memory_order_release);
    return b.wait([&] { return control.stop.load(std::memory_order_acquire); },
                  [] { return std::string("side A to finish"); });
  };
  Status status = run_pair(*pair, control, stall, side_a, side_b, options.pin_threads);
  result.works = status.ok();
  result.waits_for_target = status.ok() && !early;
  if (!status.ok()) {
    result.detail = status.to_string();
  } else if (early) {
    result.detail = "ok; completes locally before the target reads its CQ";
  } else {
    result.detail = "ok; local completion waits for the target to read its CQ";
  }
  return result;
}

}  // namespace

Result<ProviderReport> probe_provider(const BaselineOptions& options) {
  ProviderReport report;
  {
    auto pair = open_pair(options.provider, options.domains, 4096, 1);
    if (!pair.ok()) return pair.status().with_context("probing provider " + options.provider);
    const daemon::Rail& rail = pair->a->rail();
    report.provider = rail.provider();
    report.domain = rail.domain_name();
    report.mr_mode = daemon::mr_mode_string(rail.mr_mode());
    report.tx_depth = rail.info().tx_attr->size;
    report.inject_size = rail.info().tx_attr->inject_size;
    report.cq_data_size = rail.info().domain_attr->cq_data_size;
  }
  report.plain_writedata = probe_write(options, 8, 0);
  report.delivery_complete = probe_write(options, 8, FI_DELIVERY_COMPLETE);
  report.zero_byte_writedata = probe_write(options, 0, 0);
  return report;
}

}  // namespace epx::bench
