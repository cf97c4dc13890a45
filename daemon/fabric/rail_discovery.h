// Finding the node's NICs: which libfabric provider to use and one Rail per
// domain (NIC) of it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "epx/status.h"
#include "daemon/fabric/rail.h"

namespace epx::daemon {

// The hints every rail needs: reliable datagrams, RMA writes with remote CQ
// data (the signal immediate), and the MR modes the data plane handles.
FiInfoPtr rail_hints();

// Core provider names fi_getinfo reports for rail_hints() ("efa", "tcp", ...).
std::vector<std::string> available_providers();

// Opens one rail per domain of `provider` ("auto" prefers efa > verbs > tcp),
// restricted to `domains` when not empty. A provider that is not there is an
// error listing the ones that are.
Result<std::vector<std::unique_ptr<Rail>>> open_rails(const std::string& provider,
                                                      const std::vector<std::string>& domains);

}  // namespace epx::daemon
