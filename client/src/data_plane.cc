// The SDK's data-plane objects: Window, Signals, Ring, and the Job calls that
// create them.
#include <emmintrin.h>

#include <thread>

#include "client_session.h"
#include "fd_socket.h"
#include "epx/client.h"
#include "mapped_region.h"
#include "proto/ring/ring_host.h"

namespace epx {

Window::Window(uint32_t id, std::shared_ptr<MappedRegion> region) : id_(id), region_(std::move(region)) {}
uint8_t* Window::data() const { return region_->data(); }
size_t Window::size() const { return region_->size(); }

// ---------------------------------------------------------------------------

Signals::Signals(std::shared_ptr<ClientSession> session, std::string job_id, std::shared_ptr<MappedRegion> region,
                 uint32_t count)
    : session_(std::move(session)), job_id_(std::move(job_id)), region_(std::move(region)), count_(count) {}

uint64_t* Signals::words() const { return reinterpret_cast<uint64_t*>(region_->data()); }

uint64_t Signals::value(uint32_t index) const {
  if (index >= count_) return 0;
  // acquire: pairs with the daemon's release fetch_add when it applies a
  // remote write's immediate; the counted data is visible after this load.
  return __atomic_load_n(reinterpret_cast<const uint64_t*>(region_->data()) + index, __ATOMIC_ACQUIRE);
}

Status Signals::check_peers(const std::string& waiting_for) const {
  return session_->job_health(job_id_).with_context("while waiting for " + waiting_for);
}

Status Signals::wait(uint32_t index, uint64_t target, std::chrono::milliseconds timeout) const {
  return wait_all({index}, target, timeout);
}

Status Signals::wait_all(const std::vector<uint32_t>& indices, uint64_t target,
                         std::chrono::milliseconds timeout) const {
  for (uint32_t i : indices) {
    if (i >= count_) {
      return invalid_argument("signal " + std::to_string(i) + " beyond this rank's " + std::to_string(count_) +
                              " signals");
    }
  }
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + timeout;
  auto next_check = start;
  for (uint64_t spins = 0;; ++spins) {
    bool all = true;
    for (uint32_t i : indices) all = all && value(i) >= target;
    if (all) return Status();
    if ((spins & 255) == 0) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= next_check) {
        // Peers and the daemon: checked about every millisecond, so a lost
        // rank ends the wait long before the timeout.
        EPX_RETURN_IF_ERROR(check_peers("signals of job " + job_id_));
        next_check = now + std::chrono::milliseconds(1);
      }
      if (now >= deadline) {
        std::string short_of;
        int shown = 0;
        for (uint32_t i : indices) {
          const uint64_t v = value(i);
          if (v >= target) continue;
          if (shown++ < 8) short_of += (short_of.empty() ? "" : ", ") + std::string("signal ") + std::to_string(i) + " is " + std::to_string(v);
        }
        return deadline_exceeded("job " + job_id_ + ": after " + std::to_string(timeout.count()) + " ms waiting for " +
                                 std::to_string(target) + ": " + short_of);
      }
      if (now - start > std::chrono::microseconds(200)) std::this_thread::yield();
    }
    _mm_pause();
  }
}

// ---------------------------------------------------------------------------

struct Ring::Producer {
  explicit Producer(void* mem) : producer(mem) {}
  ring::RingProducer producer;
};

Ring::Ring(uint32_t id, std::shared_ptr<MappedRegion> region)
    : id_(id), region_(std::move(region)), producer_(std::make_unique<Producer>(region_->data())) {}
Ring::~Ring() = default;

uint32_t Ring::capacity() const { return producer_->producer.capacity(); }

Status Ring::error() const {
  const uint64_t e = producer_->producer.error();
  if (e == 0) return Status();
  return failed_precondition("ring " + std::to_string(id_) + ": the daemon rejected the descriptor at position " +
                             std::to_string(ring::error_position(e)) + " (" +
                             ring::ring_error_message(ring::error_code(e)) + "); epxctl status shows why");
}

Status Ring::post(const ring::RingSlot& slot, std::chrono::milliseconds timeout) {
  EPX_RETURN_IF_ERROR(error());
  if (!producer_->producer.post(slot, timeout)) {
    return deadline_exceeded("ring " + std::to_string(id_) + " stayed full for " + std::to_string(timeout.count()) +
                             " ms (is the daemon's proxy running? epxctl status)");
  }
  return Status();
}

namespace {

Status check_write(const Window& src, uint64_t src_offset, uint32_t dst_window, uint64_t dst_offset,
                   uint32_t length) {
  if (src_offset > src.size() || length > src.size() - src_offset) {
    return invalid_argument("write of " + std::to_string(length) + " bytes at offset " + std::to_string(src_offset) +
                            " beyond source window " + std::to_string(src.id()) + " (" + std::to_string(src.size()) +
                            " bytes)");
  }
  if (dst_window > ring::kMaxWindow || dst_offset > ring::kMaxOffset) {
    return invalid_argument("destination window/offset out of the descriptor's range");
  }
  return Status();
}

}  // namespace

Status Ring::post_write(uint32_t dst_rank, const Window& src, uint64_t src_offset, uint32_t dst_window,
                        uint64_t dst_offset, uint32_t length, std::chrono::milliseconds timeout) {
  EPX_RETURN_IF_ERROR(check_write(src, src_offset, dst_window, dst_offset, length));
  return post(ring::make_write(static_cast<uint16_t>(dst_rank), ring::pack_address(src.id(), src_offset),
                               ring::pack_address(dst_window, dst_offset), length),
              timeout);
}

Status Ring::post_write_signal(uint32_t dst_rank, const Window& src, uint64_t src_offset, uint32_t dst_window,
                               uint64_t dst_offset, uint32_t length, SignalRef signal,
                               std::chrono::milliseconds timeout) {
  EPX_RETURN_IF_ERROR(check_write(src, src_offset, dst_window, dst_offset, length));
  if (!ring::signal_fits(signal.index, signal.increment) || signal.increment == 0) {
    return invalid_argument("signal index " + std::to_string(signal.index) + " / increment " +
                            std::to_string(signal.increment) + " does not fit the 20/12-bit immediate");
  }
  return post(ring::make_write_signal(static_cast<uint16_t>(dst_rank), ring::pack_address(src.id(), src_offset),
                                      ring::pack_address(dst_window, dst_offset), length,
                                      ring::encode_signal(signal.index, signal.increment)),
              timeout);
}

Status Ring::post_signal(uint32_t dst_rank, SignalRef signal, std::chrono::milliseconds timeout) {
  if (!ring::signal_fits(signal.index, signal.increment) || signal.increment == 0) {
    return invalid_argument("signal index " + std::to_string(signal.index) + " / increment " +
                            std::to_string(signal.increment) + " does not fit the 20/12-bit immediate");
  }
  return post(ring::make_signal(static_cast<uint16_t>(dst_rank), ring::encode_signal(signal.index, signal.increment)),
              timeout);
}

Status Ring::flush(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  EPX_RETURN_IF_ERROR(post(ring::make_flush(), timeout));
  const uint64_t target = ++fences_posted_;
  auto* header = ring::ring_header(region_->data());
  for (uint64_t spins = 0;; ++spins) {
    // acquire: pairs with the proxy's release store after the fence completed.
    if (ring::ring_load_acquire(&header->fences_done) >= target) return error();
    if ((spins & 1023) == 0) {
      EPX_RETURN_IF_ERROR(error());
      if (std::chrono::steady_clock::now() >= deadline) {
        return deadline_exceeded("ring " + std::to_string(id_) + ": flush did not complete within " +
                                 std::to_string(timeout.count()) + " ms");
      }
      std::this_thread::yield();
    }
    _mm_pause();
  }
}

// ---------------------------------------------------------------------------

Result<Window> Job::create_window(uint64_t bytes) {
  v1::CreateWindowRequest req;
  req.set_client_id(session_->client_id());
  req.set_job_id(table_.job_id);
  req.set_bytes(bytes);
  v1::RegionReply reply;
  auto ctx = session_->context(session_->options().rpc_timeout * 2);
  grpc::Status s = session_->stub().CreateWindow(ctx.get(), req, &reply);
  if (!s.ok()) return session_->explain(s, "create window of " + std::to_string(bytes) + " bytes");
  auto region = MappedRegion::fetch(session_->fd_socket(), reply.token(), bytes);
  if (!region.ok()) return region.status();
  return Window(reply.id(), std::move(region.value()));
}

Result<uint64_t> Job::send_fd(int fd) { return submit_fd(session_->fd_socket(), session_->client_id(), fd); }

Result<uint32_t> Job::create_device_window(uint64_t fd_token, const DeviceMemory& memory) {
  v1::CreateDeviceWindowRequest req;
  req.set_client_id(session_->client_id());
  req.set_job_id(table_.job_id);
  req.set_bytes(memory.bytes);
  req.set_device_va(memory.device_va);
  req.set_cuda_device(memory.cuda_device);
  req.set_pci_bus_id(memory.pci_bus_id);
  req.set_fd_token(fd_token);
  v1::RegionReply reply;
  auto ctx = session_->context(session_->options().rpc_timeout * 2);
  grpc::Status s = session_->stub().CreateDeviceWindow(ctx.get(), req, &reply);
  if (!s.ok()) return session_->explain(s, "create device window of " + std::to_string(memory.bytes) + " bytes");
  return reply.id();
}

Result<Signals> Job::open_signals(uint32_t count) {
  v1::OpenSignalsRequest req;
  req.set_client_id(session_->client_id());
  req.set_job_id(table_.job_id);
  req.set_count(count);
  v1::RegionReply reply;
  auto ctx = session_->context(session_->options().rpc_timeout * 2);
  grpc::Status s = session_->stub().OpenSignals(ctx.get(), req, &reply);
  if (!s.ok()) return session_->explain(s, "open " + std::to_string(count) + " signals");
  auto region = MappedRegion::fetch(session_->fd_socket(), reply.token(), uint64_t{count} * sizeof(uint64_t));
  if (!region.ok()) return region.status();
  return Signals(session_, table_.job_id, std::move(region.value()), count);
}

Result<std::unique_ptr<Ring>> Job::open_ring(uint32_t capacity) {
  auto r = open_ring_region(capacity, false);
  if (!r.ok()) return r.status();
  return std::make_unique<Ring>(r->first, std::move(r->second));
}

Result<std::pair<uint32_t, std::shared_ptr<MappedRegion>>> Job::open_ring_region(uint32_t capacity,
                                                                                 bool device_producers) {
  v1::OpenRingRequest req;
  req.set_client_id(session_->client_id());
  req.set_job_id(table_.job_id);
  req.set_capacity(capacity);
  req.set_device_producers(device_producers);
  v1::RegionReply reply;
  auto ctx = session_->context(session_->options().rpc_timeout);
  grpc::Status s = session_->stub().OpenRing(ctx.get(), req, &reply);
  if (!s.ok()) return session_->explain(s, "open ring of " + std::to_string(capacity) + " slots");
  auto region = MappedRegion::fetch(session_->fd_socket(), reply.token(), ring::ring_bytes(capacity));
  if (!region.ok()) return region.status();
  // The mapping is whole pages; the ring is its first ring_bytes(capacity).
  const ring::RingCheck check = ring::ring_check((*region)->data(), ring::ring_bytes(capacity));
  if (check != ring::RingCheck::kOk) {
    return internal_error("ring " + std::to_string(reply.id()) + " from the daemon fails the ABI check: " +
                          ring::ring_check_message(check));
  }
  return std::make_pair(reply.id(), std::move(region.value()));
}

Status Job::barrier(std::chrono::milliseconds timeout) {
  v1::BarrierRequest req;
  req.set_client_id(session_->client_id());
  req.set_job_id(table_.job_id);
  req.set_timeout_ms(static_cast<uint32_t>(timeout.count()));
  v1::BarrierReply reply;
  auto ctx = session_->context(timeout + std::chrono::seconds(5));
  grpc::Status s = session_->stub().Barrier(ctx.get(), req, &reply);
  if (!s.ok()) return session_->explain(s, "barrier of job " + table_.job_id);
  return Status();
}

Result<std::vector<PeerBuffer>> Job::exchange_ipc(const std::string& handle, uint64_t bytes,
                                                 std::chrono::milliseconds timeout) {
  v1::ExchangeIpcRequest req;
  req.set_client_id(session_->client_id());
  req.set_job_id(table_.job_id);
  req.set_handle(handle);
  req.set_bytes(bytes);
  req.set_timeout_ms(static_cast<uint32_t>(timeout.count()));
  v1::ExchangeIpcReply reply;
  auto ctx = session_->context(timeout + std::chrono::seconds(5));
  grpc::Status s = session_->stub().ExchangeIpc(ctx.get(), req, &reply);
  if (!s.ok()) return session_->explain(s, "same-node handle exchange of job " + table_.job_id);
  std::vector<PeerBuffer> out;
  for (const auto& p : reply.peers()) out.push_back({p.rank(), p.local_rank(), p.pid(), p.handle(), p.bytes()});
  return out;
}

}  // namespace epx
