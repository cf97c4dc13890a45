// Node: what every part of the daemon may know about this node and this
// daemon process: its configuration, its address for peers, its rails, and
// whether it is shutting down. Built once at start; read-only afterwards
// except the shutdown flag.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "daemon/fabric/rail.h"
#include "epx/v1/config.pb.h"

namespace epx::daemon {

extern const char kVersion[];

struct Node {
  Node(v1::DaemonConfig config_in, std::string advertise, std::vector<std::unique_ptr<Rail>> rails_in,
       std::string fallback = "")
      : config(std::move(config_in)),
        advertise_address(std::move(advertise)),
        rails(std::move(rails_in)),
        fd_socket(config.control_socket() + ".fd"),
        provider_fallback(std::move(fallback)) {}

  uint64_t uptime_ms() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
  }
  // Deadline for a plain daemon-to-daemon call.
  std::chrono::system_clock::time_point rpc_deadline() const {
    return std::chrono::system_clock::now() + std::chrono::milliseconds(config.rpc_timeout_ms());
  }
  bool shutting_down() const { return stopping.load(std::memory_order_acquire); }
  // epxctl drain: joins are refused while set. Relaxed: a join racing the
  // drain's start may still go through, as one arriving just before would.
  bool is_draining() const { return draining.load(std::memory_order_relaxed); }

  const v1::DaemonConfig config;
  const std::string advertise_address;  // host:port peers dial
  const std::vector<std::unique_ptr<Rail>> rails;
  const std::string fd_socket;
  // Why provider auto fell back to tcp (rail_discovery.h); empty: it did not.
  const std::string provider_fallback;
  const std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  // Set once by the shutdown; release pairs with shutting_down()'s acquire.
  std::atomic<bool> stopping{false};
  // Mutable: the Local service (which sees a const Node) starts and ends it.
  mutable std::atomic<bool> draining{false};
  // The metrics endpoint's port once it listens (0: none); set once at start.
  std::atomic<int> metrics_port{0};
};

}  // namespace epx::daemon
