// The rank table every rank of a job receives at bootstrap.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace epx {

// One rail (NIC endpoint) of a rank's daemon.
struct RailAddress {
  std::string provider;  // "efa", "tcp;ofi_rxm", "shm", ...
  std::string domain;    // NIC or interface name
  std::string address;   // opaque fi_getname() bytes
};

struct RankInfo {
  uint32_t rank = 0;
  uint32_t local_rank = 0;
  std::string node;            // the node name of the rank's daemon
  std::string daemon_address;  // that daemon's Peer service, host:port
  uint32_t pid = 0;            // the rank's client process on its node
  std::vector<RailAddress> rails;
};

struct RankTable {
  std::string job_id;
  uint32_t world_size = 0;
  std::string coordinator;
  std::vector<RankInfo> ranks;  // index == rank

  // Ranks that share `rank`'s node (same-node peers reach each other over NVLink).
  std::vector<uint32_t> same_node_ranks(uint32_t rank) const;
  // One line per rank: "rank 0 local 0 node a daemon 10.0.0.1:7470 pid 12 rails 1".
  std::string to_string() const;
};

}  // namespace epx
