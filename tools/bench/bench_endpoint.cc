#include "tools/bench/bench_endpoint.h"

#include <rdma/fi_domain.h>

#include <algorithm>
#include <cstring>

#include "daemon/fabric/rail_discovery.h"

namespace epx::bench {
namespace {

constexpr size_t kPageBytes = 4096;

// Requested MR key when the provider does not choose keys (no FI_MR_PROV_KEY).
// Each side has a domain of its own, so one key per domain cannot collide.
constexpr uint64_t kRequestedKey = 0xe9;

}  // namespace

Result<std::unique_ptr<BenchEndpoint>> BenchEndpoint::create(std::unique_ptr<daemon::Rail> rail,
                                                             const std::string& side, size_t buffer_bytes,
                                                             size_t contexts) {
  std::unique_ptr<BenchEndpoint> ep(new BenchEndpoint());
  ep->name_ = "side " + side + " (" + rail->provider() + " " + rail->domain_name() + ")";
  const int mr_mode = rail->mr_mode();
  ep->contexts_.resize(contexts);
  ep->rail_ = std::move(rail);

  // Page-aligned and at least a page, so a 0- or 8-byte buffer is still a
  // registrable region and large writes start on a page boundary as EPX's
  // windows do. Touched once so the timed loops see no first-touch faults.
  const size_t bytes = (std::max(buffer_bytes, kPageBytes) + kPageBytes - 1) / kPageBytes * kPageBytes;
  ep->buffer_.reset(std::aligned_alloc(kPageBytes, bytes));
  if (!ep->buffer_) return resource_exhausted(ep->name_ + ": cannot allocate " + std::to_string(bytes) + " bytes");
  std::memset(ep->buffer_.get(), 0, bytes);
  ep->buffer_bytes_ = bytes;

  fid_mr* mr = nullptr;
  // FI_WRITE: source of this side's writes; FI_REMOTE_WRITE: target of the peer's.
  int ret = fi_mr_reg(ep->rail_->domain(), ep->buffer_.get(), bytes, FI_WRITE | FI_REMOTE_WRITE, 0, kRequestedKey, 0,
                      &mr, nullptr);
  EPX_RETURN_IF_ERROR(daemon::fi_status(ret, "fi_mr_reg of " + std::to_string(bytes) + " bytes on " + ep->name_));
  ep->mr_.reset(mr);
  if (mr_mode & FI_MR_ENDPOINT) {
    // Such providers scope MRs to an endpoint: bind, then enable.
    EPX_RETURN_IF_ERROR(daemon::fi_status(fi_mr_bind(mr, &ep->rail_->ep()->fid, 0), "fi_mr_bind on " + ep->name_));
    EPX_RETURN_IF_ERROR(daemon::fi_status(fi_mr_enable(mr), "fi_mr_enable on " + ep->name_));
  }
  if (mr_mode & FI_MR_LOCAL) ep->desc_ = fi_mr_desc(mr);
  ep->remote_.key = fi_mr_key(mr);
  if (ep->remote_.key == FI_KEY_NOTAVAIL) {
    // Only FI_MR_RAW providers answer this; rail_hints() does not ask for raw keys.
    return failed_precondition(ep->name_ + ": fi_mr_key gives FI_KEY_NOTAVAIL (raw MR keys are not supported)");
  }
  ep->remote_.addr = (mr_mode & FI_MR_VIRT_ADDR) ? reinterpret_cast<uint64_t>(ep->buffer_.get()) : 0;
  return ep;
}

Status BenchEndpoint::connect(const BenchEndpoint& peer) {
  return connect(peer.name(), peer.rail().address(), peer.remote());
}

Status BenchEndpoint::connect(const std::string& peer_name, const std::string& address, RemoteBuffer buffer) {
  fi_addr_t addr = FI_ADDR_UNSPEC;
  int ret = fi_av_insert(rail_->av(), address.data(), 1, &addr, 0, nullptr);
  // fi_av_insert returns how many addresses went in, not 0, on success.
  if (ret < 0) return daemon::fi_status(ret, "fi_av_insert of " + peer_name + "'s address on " + name_);
  if (ret != 1) {
    return internal_error("fi_av_insert of " + peer_name + "'s address on " + name_ + " inserted " +
                          std::to_string(ret) + " of 1 addresses");
  }
  peer_ = addr;
  peer_buffer_ = buffer;
  return Status();
}

namespace {

// The first rail of `provider` matching `domains` (open_rails gives one per
// matching domain; the others close here), checked for a buffer of
// `buffer_bytes` and `contexts` writes in flight.
Result<std::unique_ptr<daemon::Rail>> first_rail(const std::string& provider, const std::vector<std::string>& domains,
                                                 const std::string& side, size_t buffer_bytes, size_t contexts) {
  if (provider.empty()) return invalid_argument("no provider given (tcp, shm, efa or verbs)");
  auto rails = daemon::open_rails(provider, domains);
  if (!rails.ok()) return rails.status().with_context("opening side " + side);
  std::unique_ptr<daemon::Rail> rail = std::move(rails->front());
  rails->clear();
  const fi_info& info = rail->info();
  if (buffer_bytes > info.ep_attr->max_msg_size) {
    return invalid_argument("size " + std::to_string(buffer_bytes) + " exceeds " + rail->provider() +
                            "'s max_msg_size " + std::to_string(info.ep_attr->max_msg_size));
  }
  if (contexts > info.tx_attr->size) {
    return invalid_argument("window " + std::to_string(contexts) + " exceeds " + rail->provider() +
                            "'s transmit queue depth " + std::to_string(info.tx_attr->size));
  }
  return rail;
}

}  // namespace

Result<std::unique_ptr<BenchEndpoint>> open_endpoint(const std::string& provider,
                                                     const std::vector<std::string>& domains, const std::string& side,
                                                     size_t buffer_bytes, size_t contexts) {
  auto rail = first_rail(provider, domains, side, buffer_bytes, contexts);
  if (!rail.ok()) return rail.status();
  return BenchEndpoint::create(std::move(rail.value()), side, buffer_bytes, contexts);
}

Result<EndpointPair> open_pair(const std::string& provider, const std::vector<std::string>& domains,
                               size_t buffer_bytes, size_t contexts) {
  // Side B is side A's twin, opened on the same fi_info.
  auto first = first_rail(provider, domains, "A", buffer_bytes, contexts);
  if (!first.ok()) return first.status();
  std::unique_ptr<daemon::Rail> rail_a = std::move(first.value());
  const fi_info& info = rail_a->info();
  auto rail_b = daemon::Rail::open(info, 1);
  if (!rail_b.ok()) return rail_b.status().with_context("opening side B");

  EndpointPair pair;
  auto a = BenchEndpoint::create(std::move(rail_a), "A", buffer_bytes, contexts);
  if (!a.ok()) return a.status();
  pair.a = std::move(a.value());
  auto b = BenchEndpoint::create(std::move(rail_b.value()), "B", buffer_bytes, contexts);
  if (!b.ok()) return b.status();
  pair.b = std::move(b.value());
  EPX_RETURN_IF_ERROR(pair.a->connect(*pair.b));
  EPX_RETURN_IF_ERROR(pair.b->connect(*pair.a));
  return pair;
}

}  // namespace epx::bench
