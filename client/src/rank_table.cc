#include "epx/rank_table.h"

#include <sstream>

namespace epx {

std::vector<uint32_t> RankTable::same_node_ranks(uint32_t rank) const {
  std::vector<uint32_t> out;
  if (rank >= ranks.size()) return out;
  for (const auto& r : ranks) {
    if (r.node == ranks[rank].node && r.daemon_address == ranks[rank].daemon_address) out.push_back(r.rank);
  }
  return out;
}

std::string RankTable::to_string() const {
  std::ostringstream out;
  out << "job " << job_id << " world " << world_size << " coordinator " << coordinator << "\n";
  for (const auto& r : ranks) {
    out << "  rank " << r.rank << " local " << r.local_rank << " node " << r.node << " daemon " << r.daemon_address
        << " pid " << r.pid << " rails " << r.rails.size();
    for (const auto& rail : r.rails) out << " [" << rail.provider << " " << rail.domain << "]";
    out << "\n";
  }
  return out.str();
}

}  // namespace epx
