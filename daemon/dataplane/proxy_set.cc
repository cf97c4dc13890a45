#include "daemon/dataplane/proxy_set.h"

#include <rdma/fi_domain.h>

#include <spdlog/spdlog.h>

#include "daemon/fabric/device_memory.h"
#include "daemon/fabric/fault_transport.h"
#include "daemon/fabric/memory_registration.h"

namespace epx::daemon {
namespace {

FaultPlan fault_plan(const v1::FaultInjection& f, uint32_t rail) {
  FaultPlan p;
  p.seed = f.seed() + rail;
  p.eagain_per_mille = f.eagain_per_mille();
  if (f.eagain_burst()) p.eagain_burst = f.eagain_burst();
  p.fail_write_per_mille = f.fail_write_per_mille();
  p.fail_completion_per_mille = f.fail_completion_per_mille();
  p.hold_count = f.hold_count();
  p.hold_us = f.hold_us();
  p.reorder = f.reorder();
  return p;
}

}  // namespace

ProxySet::ProxySet(const v1::DaemonConfig& config, const std::vector<std::unique_ptr<Rail>>& rails)
    : config_(config), rails_(rails) {}

ProxySet::~ProxySet() { proxies_.clear(); }

Status ProxySet::start() {
  EPX_ASSIGN_OR_RETURN(signals_, SignalSpace::create());
  av_cache_.resize(rails_.size());
  for (size_t i = 0; i < rails_.size(); ++i) {
    ProxyOptions o;
    o.core = i < static_cast<size_t>(config_.proxy_cores_size()) ? static_cast<int>(config_.proxy_cores(i)) : -1;
    o.batch = config_.proxy_batch();
    o.spin_us = config_.proxy_spin_us();
    o.idle_sleep_us = config_.proxy_busy_poll() ? 0 : config_.proxy_idle_sleep_us();
    o.max_write_bytes = uint64_t{config_.max_write_mib()} << 20;
    std::unique_ptr<Transport> transport = std::make_unique<RailTransport>(*rails_[i]);
    if (config_.has_fault_injection()) {
      spdlog::warn("rail {}: fault injection on (test-only config): {}", i,
                   config_.fault_injection().ShortDebugString());
      transport = std::make_unique<FaultTransport>(std::move(transport),
                                                   fault_plan(config_.fault_injection(), static_cast<uint32_t>(i)));
    }
    auto proxy = std::make_unique<Proxy>(std::move(transport), *signals_, o);
    EPX_RETURN_IF_ERROR(proxy->start().with_context("proxy of rail " + std::to_string(i)));
    proxies_.push_back(std::move(proxy));
  }
  return Status();
}

size_t ProxySet::least_loaded() const {
  size_t best = 0;
  for (size_t i = 1; i < proxies_.size(); ++i) {
    if (proxies_[i]->ring_count() < proxies_[best]->ring_count()) best = i;
  }
  return best;
}

Result<std::vector<std::vector<fi_addr_t>>> ProxySet::insert_addresses(const v1::RankTable& table) {
  std::vector<std::vector<fi_addr_t>> addrs(table.world_size(), std::vector<fi_addr_t>(rails_.size(), FI_ADDR_UNSPEC));
  for (size_t i = 0; i < proxies_.size(); ++i) {
    Status inserted;
    EPX_RETURN_IF_ERROR(proxies_[i]->execute([&] {
      for (uint32_t r = 0; r < table.world_size(); ++r) {
        const auto& entry = table.ranks(r);
        if (entry.rails_size() == 0) continue;
        const std::string& address = entry.rails(i % entry.rails_size()).address();
        auto& cache = av_cache_[i];
        auto hit = cache.find(address);
        if (hit == cache.end()) {
          fi_addr_t fa = FI_ADDR_UNSPEC;
          int n = fi_av_insert(rails_[i]->av(), address.data(), 1, &fa, 0, nullptr);
          if (n != 1) {
            inserted = internal_error("fi_av_insert of rank " + std::to_string(r) + "'s daemon on rail " +
                                      std::to_string(i) + " inserted " + std::to_string(n));
            return;
          }
          hit = cache.emplace(address, fa).first;
        }
        addrs[r][i] = hit->second;
      }
    }));
    EPX_RETURN_IF_ERROR(inserted);
  }
  return addrs;
}

Result<LocalRegion> ProxySet::register_region(LocalRegion out) {
  out.mrs.resize(proxies_.size());
  out.keys.resize(proxies_.size());
  for (size_t i = 0; i < proxies_.size(); ++i) {
    uint64_t requested;
    {
      std::lock_guard<std::mutex> lock(key_mu_);
      requested = next_key_++;
    }
    Status reg;
    Status queued = proxies_[i]->execute([&] {
      Result<MrPtr> mr = out.is_device()
                             ? register_dmabuf(*rails_[i],
                                               DmabufRange{out.device->dmabuf.get(), out.device->size,
                                                           out.device->device_va, out.device->cuda_device},
                                               requested)
                             : register_memory(*rails_[i], out.region->data(), out.region->size(), requested);
      if (!mr.ok()) {
        reg = mr.status();
        return;
      }
      out.keys[i].key = fi_mr_key(mr->get());
      out.keys[i].base = (rails_[i]->mr_mode() & FI_MR_VIRT_ADDR) ? reinterpret_cast<uint64_t>(out.address()) : 0;
      out.mrs[i] = std::move(mr.value());
    });
    if (!queued.ok()) reg = queued;
    if (!reg.ok()) {
      close_registration(std::move(out));
      return reg;
    }
  }
  return out;
}

void ProxySet::close_registrations(std::vector<LocalRegion>& regions) {
  for (size_t i = 0; i < proxies_.size(); ++i) {
    Status s = proxies_[i]->execute([&] {
      for (auto& r : regions) {
        if (i < r.mrs.size()) r.mrs[i].reset();
      }
    });
    if (!s.ok()) spdlog::error("closing registrations on rail {}: {}", i, s.to_string());
  }
}

void ProxySet::close_registration(LocalRegion region) {
  std::vector<LocalRegion> one;
  one.push_back(std::move(region));
  close_registrations(one);
}

std::vector<v1::ProxyStatus> ProxySet::status() const {
  std::vector<v1::ProxyStatus> out;
  for (size_t i = 0; i < proxies_.size(); ++i) {
    const ProxyStats st = proxies_[i]->stats();
    v1::ProxyStatus s;
    s.set_rail(static_cast<uint32_t>(i));
    s.set_rings(static_cast<uint32_t>(proxies_[i]->ring_count()));
    s.set_descriptors(st.descriptors);
    s.set_fabric_ops(st.fabric_ops);
    s.set_signals_applied(st.signals_applied);
    s.set_bad_immediates(st.bad_immediates);
    s.set_busy_ns(st.busy_ns);
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace epx::daemon
