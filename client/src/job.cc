#include "epx/job.h"

#include <utility>

#include "client_session.h"
#include "fd_socket.h"
#include "mapped_region.h"
#include "proto/ring/ring_host.h"

namespace epx {

Job::Job(std::shared_ptr<ClientSession> session, RankTable table, uint32_t rank, std::string provider_fallback)
    : session_(std::move(session)),
      table_(std::move(table)),
      rank_(rank),
      joined_(true),
      provider_fallback_(std::move(provider_fallback)) {}

Job::Job(Job&& other) noexcept
    : session_(std::move(other.session_)),
      table_(std::move(other.table_)),
      rank_(other.rank_),
      joined_(other.joined_),
      provider_fallback_(std::move(other.provider_fallback_)) {
  other.joined_ = false;
}

Job& Job::operator=(Job&& other) noexcept {
  if (this != &other) {
    (void)leave();
    session_ = std::move(other.session_);
    table_ = std::move(other.table_);
    rank_ = other.rank_;
    joined_ = other.joined_;
    provider_fallback_ = std::move(other.provider_fallback_);
    other.joined_ = false;
  }
  return *this;
}

Job::~Job() { (void)leave(); }

Status Job::leave() {
  if (!joined_) return Status();
  joined_ = false;
  if (!session_->session_status().ok()) return Status();  // the daemon already released everything
  v1::LeaveJobRequest req;
  req.set_client_id(session_->client_id());
  req.set_job_id(table_.job_id);
  v1::LeaveJobReply reply;
  auto ctx = session_->context(session_->options().rpc_timeout);
  grpc::Status s = session_->stub().LeaveJob(ctx.get(), req, &reply);
  if (!s.ok()) return session_->explain(s, "leave " + table_.job_id);
  return Status();
}

Result<Window> Job::create_window(uint64_t bytes) {
  v1::CreateWindowRequest req;
  req.set_client_id(session_->client_id());
  req.set_job_id(table_.job_id);
  req.set_bytes(bytes);
  v1::RegionReply reply;
  auto ctx = session_->context(session_->options().rpc_timeout * 2);
  grpc::Status s = session_->stub().CreateWindow(ctx.get(), req, &reply);
  if (!s.ok()) return session_->explain(s, "create window of " + std::to_string(bytes) + " bytes");
  EPX_ASSIGN_OR_RETURN(auto region, MappedRegion::fetch(session_->fd_socket(), reply.token(), bytes));
  return Window(reply.id(), std::move(region));
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

std::vector<uint32_t> Job::lost_ranks() const { return session_->lost_ranks(table_.job_id); }

Result<Signals> Job::open_signals(uint32_t count) {
  v1::OpenSignalsRequest req;
  req.set_client_id(session_->client_id());
  req.set_job_id(table_.job_id);
  req.set_count(count);
  v1::RegionReply reply;
  auto ctx = session_->context(session_->options().rpc_timeout * 2);
  grpc::Status s = session_->stub().OpenSignals(ctx.get(), req, &reply);
  if (!s.ok()) return session_->explain(s, "open " + std::to_string(count) + " signals");
  EPX_ASSIGN_OR_RETURN(auto region,
                       MappedRegion::fetch(session_->fd_socket(), reply.token(), uint64_t{count} * sizeof(uint64_t)));
  return Signals(session_, table_.job_id, std::move(region), count);
}

Result<std::unique_ptr<Ring>> Job::open_ring(uint32_t capacity) {
  EPX_ASSIGN_OR_RETURN(auto opened, open_ring_region(capacity, /*device_producers=*/false));
  return std::make_unique<Ring>(session_, table_.job_id, opened.first, table_.world_size, std::move(opened.second));
}

Result<std::pair<uint32_t, std::shared_ptr<MappedRegion>>> Job::open_ring_region(uint32_t capacity,
                                                                                 bool device_producers,
                                                                                 uint32_t channels) {
  if (!ring::ring_capacity_valid(capacity) || !ring::group_channels_valid(channels)) {
    return invalid_argument("ring group of " + std::to_string(channels) + " rings of " + std::to_string(capacity) +
                            " slots: capacity must be a power of two in 2..2^24, channels 1.." +
                            std::to_string(ring::kMaxGroupChannels));
  }
  // What producers of this SDK rely on (ring.h, kCap*).
  const uint32_t needed =
      ring::kRingCapabilitiesV2 | (device_producers ? ring::kCapSingleProducer | ring::kCapEarlyDoorbell : 0u);
  v1::OpenRingRequest req;
  req.set_client_id(session_->client_id());
  req.set_job_id(table_.job_id);
  req.set_capacity(capacity);
  req.set_device_producers(device_producers);
  req.set_channels(channels);
  req.set_abi_version(ring::kRingVersion);
  req.set_capabilities(needed);
  v1::RegionReply reply;
  auto ctx = session_->context(session_->options().rpc_timeout);
  grpc::Status s = session_->stub().OpenRing(ctx.get(), req, &reply);
  if (!s.ok()) {
    return session_->explain(s, "open ring group of " + std::to_string(channels) + " x " + std::to_string(capacity) +
                                    " slots");
  }
  const uint64_t bytes = ring::group_bytes(channels, capacity);
  EPX_ASSIGN_OR_RETURN(auto region, MappedRegion::fetch(session_->fd_socket(), reply.token(), bytes));
  // The mapping is whole pages; the group is its first group_bytes().
  const ring::RingCheck check = ring::group_check(region->data(), bytes);
  if (check != ring::RingCheck::kOk) {
    return internal_error("ring group " + std::to_string(reply.id()) + " from the daemon fails the ABI check: " +
                          ring::ring_check_message(check));
  }
  const auto* group = ring::group_header(region->data());
  if (group->channels != channels || group->capacity != capacity) {
    return internal_error("ring group " + std::to_string(reply.id()) + " from the daemon has " +
                          std::to_string(group->channels) + " x " + std::to_string(group->capacity) +
                          " slots, not the " + std::to_string(channels) + " x " + std::to_string(capacity) +
                          " asked for");
  }
  for (uint32_t c = 0; c < channels; ++c) {
    const uint32_t caps = ring::ring_header(ring::group_ring(region->data(), c, capacity))->capabilities;
    if (!ring::ring_capabilities_cover(caps, needed)) {
      return failed_precondition("ring " + std::to_string(reply.id() + c) + " lacks capabilities the SDK needs (has " +
                                 std::to_string(caps) + ", needs " + std::to_string(needed) + ")");
    }
  }
  return std::make_pair(reply.id(), std::move(region));
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
