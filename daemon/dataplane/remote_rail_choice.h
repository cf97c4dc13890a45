// RemoteRailChoice: which of a peer daemon's rails each local rail writes to.
//
// A write leaves through a local rail (the proxy serving the ring) and must
// land on one of the peer's rails whose address that local rail can reach
// and whose registrations it names (the window keys are per remote rail).
// Pairing rail i with the peer's rail i % n (what EPX did first) breaks as
// soon as the two daemons list their NICs differently, have different
// counts, or a NIC of the peer is down: on tcp each rail is an interface on
// its own subnet, and rail i of one host may well sit on the subnet of rail
// j of the other.
//
// So the choice goes by the peer's rail list: a local rail is paired with a
// peer rail of the same libfabric fabric (tcp: the same subnet; efa: every
// rail), preferring healthy ones, then the least used (so the local rails
// spread over the peer's NICs instead of queueing on one), then the one at
// the same index (stable: equal lists pair i with i, as before). A peer
// rail that reports no fabric (an older daemon) matches any local rail.
// Pure function: unit-tested without a fabric.
#pragma once

#include <rdma/fabric.h>

#include <cstdint>
#include <string>
#include <vector>

namespace epx::daemon {

struct RailEnd {
  std::string fabric;  // libfabric fabric name; empty: unknown (matches any)
  bool healthy = true;
};

struct RemoteRailPair {
  static constexpr uint32_t kNone = UINT32_MAX;
  uint32_t remote = kNone;  // the peer's rail index, kNone: no rail of the peer is reachable
  std::string why;          // for status and logs: "same fabric 10.1.0.0/24, healthy, least used"
};

// One pair's address: rail `remote` of rank `rank`'s daemon as local rail
// `local`'s address vector knows it (FI_ADDR_UNSPEC: not inserted).
struct RailPairAddress {
  uint32_t rank = 0;
  uint32_t local = 0;
  uint32_t remote = 0;
  fi_addr_t addr = FI_ADDR_UNSPEC;
};

// One entry per local rail. `remote` may be empty (a peer without rails):
// every entry is then kNone.
std::vector<RemoteRailPair> choose_remote_rails(const std::vector<RailEnd>& local, const std::vector<RailEnd>& remote);

}  // namespace epx::daemon
