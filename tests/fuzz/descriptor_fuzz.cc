// Fuzz target: the proxy's descriptor checks (daemon/proxy/descriptor_check.h)
// on a job view and ring slots both made from the input. Every write the
// checks accept is read in full from its local window (exact-size buffers,
// so AddressSanitizer reports one byte too far) and checked against its
// destination window, the way the proxy would post it; every element of an
// accepted strided write (kWriteStrided) likewise: its first and last
// element read in full, one byte of each other, and every element's
// destination range checked in 128-bit arithmetic.
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/proxy/descriptor_check.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using epx::daemon::JobView;
using epx::daemon::LocalWindow;
using epx::daemon::PendingWrite;
using epx::daemon::RankView;
using epx::daemon::RemoteRail;
using epx::daemon::RemoteWindow;
using epx::fuzz::FuzzInput;
namespace ring = epx::ring;

constexpr uint32_t kMaxRanks = 4;
constexpr uint32_t kMaxWindows = 4;
constexpr uint32_t kMaxRails = 3;
constexpr uint64_t kMaxWindowBytes = 4096;

// The job the descriptors are checked against; local window memory is owned
// here, one exact-size heap block per window.
struct Job {
  JobView view;
  std::vector<std::unique_ptr<uint8_t[]>> memory;
};

RemoteWindow remote_window(FuzzInput& in, uint32_t rails) {
  RemoteWindow w;
  w.size = in.take<uint16_t>() % (kMaxWindowBytes + 1);
  w.rails.resize(in.take<uint8_t>() % (rails + 1));
  for (RemoteRail& r : w.rails) r = RemoteRail{in.take<uint8_t>(), uint64_t{in.take<uint16_t>()} << 16};
  return w;
}

Job make_job(FuzzInput& in, uint32_t local_rails) {
  Job job;
  job.view.generation = 1 + in.take<uint8_t>() % 2;
  job.view.job_id = "fuzz";
  job.view.world = 1 + in.take<uint8_t>() % kMaxRanks;
  job.view.ranks.resize(job.view.world);
  for (RankView& rank : job.view.ranks) {
    rank.present = in.take_bool();
    rank.addrs.resize(in.take<uint8_t>() % (local_rails + 1));
    for (fi_addr_t& a : rank.addrs) a = in.take_bool() ? FI_ADDR_UNSPEC : in.take<uint8_t>();
    rank.remote_rails = in.take<uint8_t>() % (kMaxRails + 1);
    rank.windows.resize(in.take<uint8_t>() % (kMaxWindows + 1));
    for (RemoteWindow& w : rank.windows) w = remote_window(in, rank.remote_rails);
    rank.signal_base = in.take<uint16_t>();
    rank.signal_count = in.take<uint8_t>();
    rank.signal_target = remote_window(in, rank.remote_rails);
    rank.local_windows.resize(in.take<uint8_t>() % (kMaxWindows + 1));
    for (LocalWindow& w : rank.local_windows) {
      w.size = in.take<uint16_t>() % (kMaxWindowBytes + 1);
      job.memory.push_back(std::make_unique<uint8_t[]>(w.size));
      w.data = job.memory.back().get();
      w.descs.resize(in.take<uint8_t>() % (local_rails + 1));
    }
  }
  return job;
}

// What the provider would read and write for an accepted write.
void use_write(const JobView& view, const PendingWrite& w, uint64_t max_bytes) {
  if (w.length == 0 || w.length > max_bytes) std::abort();
  const RankView& dst = view.ranks.at(w.dst_rank);
  const RemoteWindow& rw = dst.windows.at(w.dst_window);
  if (w.dst_end > rw.size || w.dst_end < w.length) std::abort();
  if (w.src_end > w.src_limit || w.dst_end > w.dst_limit) std::abort();
  volatile uint8_t sum = 0;
  for (uint64_t i = 0; i < w.length; ++i) sum = sum + w.src[i];  // ASan: must stay in the source window
}

// What the provider would read and write for an accepted strided write.
void use_strided(const JobView& view, const PendingWrite& w, uint64_t max_bytes) {
  if (w.count <= 1) return use_write(view, w, max_bytes);
  if (w.length == 0 || w.length > max_bytes) std::abort();
  const RemoteWindow& rw = view.ranks.at(w.dst_rank).windows.at(w.dst_window);
  const uint64_t src_offset = w.src_end - w.length, dst_offset = w.dst_end - w.length;
  const unsigned __int128 last = w.count - 1;
  if (dst_offset + last * w.dst_stride + w.length > rw.size) std::abort();
  if (src_offset + last * w.src_stride + w.length > w.src_limit) std::abort();
  volatile uint8_t sum = 0;
  for (uint64_t i = 0; i < w.count; ++i) {
    const uint8_t* element = w.src + i * w.src_stride;
    if (i == 0 || i + 1 == w.count) {
      for (uint64_t b = 0; b < w.length; ++b) sum = sum + element[b];  // ASan: inside the source window
    } else {
      sum = sum + element[w.length - 1];
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const uint32_t local_rails = 1 + in.take<uint8_t>() % kMaxRails;
  const uint32_t rail = in.take<uint8_t>() % local_rails;
  const uint64_t max_bytes = 1 + in.take<uint16_t>() % (2 * kMaxWindowBytes);
  Job job = make_job(in, local_rails);
  const uint32_t src_rank = in.take<uint8_t>() % job.view.world;

  std::optional<PendingWrite> pending;
  while (in.remaining() >= sizeof(ring::RingSlot)) {
    ring::RingSlot d;
    const std::string raw = in.take_bytes(sizeof(d));
    std::memcpy(&d, raw.data(), sizeof(d));
    if (pending && extends(*pending, job.view, d, max_bytes)) {
      pending->length += d.length;
      pending->src_end += d.length;
      pending->dst_end += d.length;
      ++pending->descriptors;
      use_write(job.view, *pending, max_bytes);
      continue;
    }
    pending.reset();
    if (ring::ring_check_slot(d) != ring::RingError::kNone) continue;
    const auto op = static_cast<ring::RingOp>(d.op);
    PendingWrite w;
    if ((op == ring::RingOp::kWrite || op == ring::RingOp::kWriteSignal) && d.length > 0) {
      if (check_write(job.view, src_rank, d, rail, max_bytes, &w).ok()) {
        use_write(job.view, w, max_bytes);
        pending = w;
      }
    } else if (op == ring::RingOp::kWriteStrided) {
      if (check_strided(job.view, src_rank, d, rail, max_bytes, &w).ok()) {
        use_strided(job.view, w, max_bytes);
        if (d.signal != 0 && w.imm == 0) std::abort();  // a strided write's signal is kept
        if (w.count == 1) pending = w;                  // a batch merged into one write may be extended
      }
    } else if (op == ring::RingOp::kSignal) {
      if (check_signal(job.view, d, rail, &w).ok() && w.imm == 0) std::abort();  // a signal always names one
    }
  }
  return 0;
}
