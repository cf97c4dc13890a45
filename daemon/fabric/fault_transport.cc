#include "daemon/fabric/fault_transport.h"

#include <algorithm>

namespace epx::daemon {
namespace {

constexpr size_t kPullBatch = 32;

}  // namespace

FaultTransport::FaultTransport(std::unique_ptr<Transport> inner, FaultPlan plan)
    : inner_(std::move(inner)), plan_(plan), rng_(plan.seed) {}

bool FaultTransport::roll(uint32_t per_mille) {
  if (per_mille == 0) return false;
  return std::uniform_int_distribution<uint32_t>(0, 999)(rng_) < per_mille;
}

ssize_t FaultTransport::write(const fi_msg_rma& msg, uint64_t flags) {
  if (eagain_left_ > 0 || roll(plan_.eagain_per_mille)) {
    eagain_left_ = eagain_left_ > 0 ? eagain_left_ - 1 : (plan_.eagain_burst ? plan_.eagain_burst - 1 : 0);
    stats_.eagain.fetch_add(1, std::memory_order_relaxed);
    return -FI_EAGAIN;
  }
  if (roll(plan_.fail_write_per_mille)) {
    stats_.failed_writes.fetch_add(1, std::memory_order_relaxed);
    return -FI_EIO;
  }
  return inner_->write(msg, flags);
}

void FaultTransport::pull() {
  fi_cq_data_entry batch[kPullBatch];
  for (;;) {
    const ssize_t n = inner_->read_completions(batch, kPullBatch);
    if (n == -FI_EAVAIL) {
      Failed f{};
      if (inner_->read_error(&f.entry) <= 0) return;
      f.text = inner_->error_text(f.entry);
      f.entry.err_data = nullptr;  // owned by the inner CQ; the text was copied
      f.entry.err_data_size = 0;
      failed_.push_back(std::move(f));
      continue;
    }
    if (n <= 0) return;
    const auto now = Clock::now();
    for (ssize_t i = 0; i < n; ++i) {
      const fi_cq_data_entry& e = batch[i];
      const bool local = (e.flags & FI_REMOTE_CQ_DATA) == 0 && e.op_context != nullptr;
      if (local && roll(plan_.fail_completion_per_mille)) {
        Failed f{};
        f.entry.op_context = e.op_context;
        f.entry.flags = e.flags;
        f.entry.len = e.len;
        f.entry.err = FI_EIO;
        f.text = "injected completion failure";
        stats_.failed_completions.fetch_add(1, std::memory_order_relaxed);
        failed_.push_back(std::move(f));
        continue;
      }
      held_.push_back(Held{e, now, arrivals_++});
    }
    if (static_cast<size_t>(n) < kPullBatch) return;
  }
}

bool FaultTransport::due(Clock::time_point now) const {
  if (held_.empty()) return false;
  if (plan_.hold_count == 0 && plan_.hold_us == 0) return true;
  if (plan_.hold_count != 0 && held_.size() >= plan_.hold_count) return true;
  // A count alone could hold completions forever once the proxy has no
  // more operations to post: 1 ms bounds it.
  const uint32_t hold_us = plan_.hold_us ? plan_.hold_us : 1000;
  return now - held_.front().since >= std::chrono::microseconds(hold_us);
}

ssize_t FaultTransport::read_completions(fi_cq_data_entry* entries, size_t count) {
  pull();
  if (!failed_.empty()) return -FI_EAVAIL;
  if (!due(Clock::now())) return -FI_EAGAIN;
  if (plan_.reorder) std::shuffle(held_.begin(), held_.end(), rng_);
  const size_t n = std::min(count, held_.size());
  for (size_t i = 0; i < n; ++i) {
    entries[i] = held_.front().entry;
    // Reordered: it arrived before an entry that was handed out already.
    if (held_.front().order < next_in_order_) stats_.reordered.fetch_add(1, std::memory_order_relaxed);
    next_in_order_ = std::max(next_in_order_, held_.front().order + 1);
    held_.pop_front();
  }
  stats_.completions.fetch_add(n, std::memory_order_relaxed);
  return static_cast<ssize_t>(n);
}

ssize_t FaultTransport::read_error(fi_cq_err_entry* entry) {
  if (failed_.empty()) return -FI_EAGAIN;
  *entry = failed_.front().entry;
  last_error_text_ = std::move(failed_.front().text);
  failed_.pop_front();
  stats_.completions.fetch_add(1, std::memory_order_relaxed);
  return 1;
}

std::string FaultTransport::error_text(const fi_cq_err_entry&) { return last_error_text_; }

}  // namespace epx::daemon
