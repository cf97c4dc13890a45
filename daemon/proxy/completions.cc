#include <spdlog/spdlog.h>

#include "daemon/proxy/counters.h"
#include "daemon/proxy/proxy.h"
#include "proto/ring/ring_host.h"

namespace epx::daemon {
namespace {

using ring::RingError;
using ring::RingOp;
using ring::RingSlot;

constexpr int kCqBatch = 32;
constexpr int kCqBatchesPerPass = 8;

}  // namespace

void Proxy::complete(OpContext& c) {
  RingBinding& ring = *c.ring;
  --ring.inflight;
  bump(ring.completed, c.descriptors);
  // A failed operation completes too: the watermark passes it (the error
  // word tells the flusher what happened).
  --ring.entry(c.entry).open;
  publish_watermark(ring);
  // A held signal may be free to go now: visit the ring in the next pass.
  if (!ring.held.empty()) activate(ring);
}

bool Proxy::poll_cq() {
  // Several batches when the CQ is busy: with many writes in flight one
  // batch per pass reaps slower than the rings post, and the provider then
  // refuses writes (its queue full of completed operations). Bounded, so a
  // flood of incoming signals cannot keep the proxy from its rings.
  bool worked = false;
  for (int i = 0; i < kCqBatchesPerPass; ++i) {
    const size_t n = reap();
    worked |= n > 0;
    if (n < static_cast<size_t>(kCqBatch)) break;
  }
  return worked;
}

size_t Proxy::reap() {
  fi_cq_data_entry entries[kCqBatch];
  ssize_t n = transport_->read_completions(entries, kCqBatch);
  if (n == -FI_EAGAIN) return 0;
  if (n == -FI_EAVAIL) {
    fi_cq_err_entry err = {};
    if (transport_->read_error(&err) > 0) {
      const std::string text = transport_->error_text(err);
      auto* c = static_cast<OpContext*>(err.op_context);
      health_.on_failure(std::string("completion: ") + fi_strerror(err.err) + ": " + text, pass_now_);
      if (c != nullptr) {
        if (c->relayed) {
          // Another proxy's write: it decides whether to send it again.
          c->relayed->maybe_landed = true;
          c->relayed->error = std::string(fi_strerror(err.err)) + ": " + text;
          answer(std::move(c->relayed));
        } else if (c->ring && (c->reissued || (c->piece.imm == 0 &&
                                               reissue(*c, std::string("completion failed: ") +
                                                                fi_strerror(err.err) + ": " + text)))) {
          // Data only: its copy on another rail completes it (it may land
          // twice, the same bytes); this one only releases its hold.
          complete(*c);
        } else if (c->ring) {
          RingSlot d = {};
          reject(*c->ring, d, RingError::kTransport, std::string("write failed: ") + fi_strerror(err.err) + ": " + text);
          complete(*c);
        }
        uncount(*c);
        release_context(c);
      } else {
        spdlog::warn("rail {}: completion error without context: {}", rail_.index(), text);
      }
    }
    return 1;
  }
  if (n < 0) {
    spdlog::error("rail {}: fi_cq_read: {}", rail_.index(), fi_strerror(static_cast<int>(-n)));
    return 0;
  }
  for (ssize_t i = 0; i < n; ++i) {
    const fi_cq_data_entry& e = entries[i];
    if (e.flags & FI_REMOTE_CQ_DATA) {
      const uint32_t imm = static_cast<uint32_t>(e.data);
      if (signals_.apply(ring::signal_index(imm), ring::signal_increment(imm))) {
        bump(stat_signals_, 1);
      } else {
        bump(stat_bad_imm_, 1);
      }
      continue;
    }
    auto* c = static_cast<OpContext*>(e.op_context);
    if (c == nullptr) continue;
    health_.on_success(pass_now_);
    if (c->relayed) {
      c->relayed->ok = true;
      answer(std::move(c->relayed));
    } else if (c->ring) {
      complete(*c);
    }
    uncount(*c);
    release_context(c);
  }
  return static_cast<size_t>(n);
}

}  // namespace epx::daemon
