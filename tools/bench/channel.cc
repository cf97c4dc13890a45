#include "tools/bench/channel.h"

#include <rdma/fi_eq.h>
#include <rdma/fi_rma.h>
#include <sys/uio.h>

#include <cstdio>

#include "daemon/fabric/fi_handles.h"

namespace epx::bench {
namespace {

// Completions read per fi_cq_read: enough to empty a window's worth in a few calls.
constexpr size_t kCqBatch = 32;

std::string ms(std::chrono::milliseconds d) { return std::to_string(d.count()) + " ms"; }

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

Channel::Channel(BenchEndpoint& ep, const PairControl& control, std::chrono::milliseconds stall_timeout)
    : ep_(ep), control_(control), stall_timeout_(stall_timeout), slots_(ep.context_count()) {
  free_.reserve(slots_);
  for (size_t i = slots_; i > 0; --i) free_.push_back(static_cast<uint32_t>(i - 1));
}

Status Channel::write(size_t len, std::optional<uint64_t> data, uint64_t msg_flags, size_t offset) {
  if (offset > ep_.buffer_bytes() || len > ep_.buffer_bytes() - offset) {
    return invalid_argument(name() + ": a " + std::to_string(len) + "-byte write at offset " + std::to_string(offset) +
                            " leaves the " + std::to_string(ep_.buffer_bytes()) + "-byte buffer");
  }
  auto describe = [&] { return "a free context to post a " + std::to_string(len) + "-byte write"; };
  if (free_.empty()) EPX_RETURN_IF_ERROR(wait([&] { return !free_.empty(); }, describe));
  // Taken off the list before posting: polling on EAGAIN below returns other
  // slots to the list.
  const uint32_t slot = free_.back();
  free_.pop_back();
  fi_context2* ctx = ep_.contexts() + slot;
  fid_ep* ep = ep_.rail().ep();
  void* desc = ep_.desc();
  const RemoteBuffer target = ep_.peer_buffer();
  char* const src = ep_.buffer() + offset;
  const uint64_t dst = target.addr + offset;

  Clock::time_point since = Clock::now();
  uint64_t seen = events_;
  for (uint32_t spin = 1;; ++spin) {
    ssize_t ret;
    if (msg_flags != 0) {
      iovec iov = {src, len};
      fi_rma_iov rma_iov = {dst, len, target.key};
      fi_msg_rma msg = {};
      msg.msg_iov = &iov;
      msg.desc = &desc;
      msg.iov_count = 1;
      msg.addr = ep_.peer();
      msg.rma_iov = &rma_iov;
      msg.rma_iov_count = 1;
      msg.context = ctx;
      msg.data = data.value_or(0);
      ret = fi_writemsg(ep, &msg, msg_flags | (data ? FI_REMOTE_CQ_DATA : 0));
    } else if (data) {
      ret = fi_writedata(ep, src, len, desc, *data, ep_.peer(), dst, target.key, ctx);
    } else {
      ret = fi_write(ep, src, len, desc, ep_.peer(), dst, target.key, ctx);
    }
    if (ret == 0) return Status();
    if (ret != -FI_EAGAIN) {
      free_.push_back(slot);
      return daemon::fi_status(static_cast<int>(ret), std::string(msg_flags ? "fi_writemsg"
                                                                  : data    ? "fi_writedata"
                                                                            : "fi_write") +
                                                          " of " + std::to_string(len) + " bytes on " + name());
    }
    // EAGAIN: the transmit queue is full or the provider needs progress
    // first (rxm connecting to the peer); reading the CQ gives both.
    if (Status s = poll(); !s.ok()) {
      free_.push_back(slot);
      return s;
    }
    if ((spin & 63) != 0) continue;
    if (events_ != seen) {
      seen = events_;
      since = Clock::now();
    } else if (Clock::now() - since > stall_timeout_) {
      free_.push_back(slot);
      return stalled("the provider to accept a " + std::to_string(len) + "-byte write (EAGAIN)");
    }
    if (control_.failed.load(std::memory_order_relaxed)) {
      free_.push_back(slot);
      return peer_failed("the provider to accept a write");
    }
  }
}

Status Channel::poll() {
  fi_cq_data_entry entries[kCqBatch];
  const ssize_t n = fi_cq_read(ep_.rail().cq(), entries, kCqBatch);
  if (n == -FI_EAGAIN) return Status();
  if (n == -FI_EAVAIL) return cq_error();
  if (n < 0) return daemon::fi_status(static_cast<int>(n), "fi_cq_read on " + name());
  fi_context2* const base = ep_.contexts();
  for (ssize_t i = 0; i < n; ++i) {
    const fi_cq_data_entry& e = entries[i];
    if (e.flags & (FI_REMOTE_WRITE | FI_REMOTE_CQ_DATA)) {
      // The peer's write landed in our buffer; its context is not ours.
      ++remote_;
      last_data_ = e.data;
      continue;
    }
    auto* ctx = static_cast<fi_context2*>(e.op_context);
    if (ctx < base || ctx >= base + slots_) {
      return internal_error(name() + ": completion with unknown context " +
                            std::to_string(reinterpret_cast<uintptr_t>(e.op_context)) + " (flags " + hex(e.flags) +
                            ")");
    }
    free_.push_back(static_cast<uint32_t>(ctx - base));
    ++local_;
  }
  events_ += static_cast<uint64_t>(n);
  return Status();
}

Status Channel::drain() {
  return wait([&] { return free_.size() == slots_; },
              [&] { return "local completion of " + std::to_string(in_flight()) + " outstanding writes"; });
}

Status Channel::cq_error() {
  fi_cq_err_entry err = {};
  const ssize_t ret = fi_cq_readerr(ep_.rail().cq(), &err, 0);
  if (ret < 0) return daemon::fi_status(static_cast<int>(ret), "fi_cq_readerr on " + name());
  const bool remote = (err.flags & (FI_REMOTE_WRITE | FI_REMOTE_CQ_DATA)) != 0;
  fi_context2* const base = ep_.contexts();
  auto* ctx = static_cast<fi_context2*>(err.op_context);
  if (!remote && ctx >= base && ctx < base + slots_) free_.push_back(static_cast<uint32_t>(ctx - base));
  const char* detail = fi_cq_strerror(ep_.rail().cq(), err.prov_errno, err.err_data, nullptr, 0);
  return Status(err.err == FI_ECANCELED ? StatusCode::kCancelled : StatusCode::kInternal,
                name() + ": " + (remote ? "incoming write" : "write") + " failed: " + fi_strerror(err.err) +
                    " (provider: " + (detail ? detail : "?") + ", prov_errno " + std::to_string(err.prov_errno) + ", " +
                    std::to_string(err.len) + " bytes)");
}

Status Channel::stalled(const std::string& what) const {
  return deadline_exceeded(name() + ": no completion for " + ms(stall_timeout_) + " while waiting for " + what + " (" +
                           std::to_string(in_flight()) + " writes in flight, " + std::to_string(remote_) +
                           " incoming writes seen)");
}

Status Channel::peer_failed(const std::string& what) const {
  return Status(StatusCode::kAborted, name() + ": the other side failed while this one waited for " + what);
}

}  // namespace epx::bench
