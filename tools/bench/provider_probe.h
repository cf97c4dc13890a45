// What a provider accepts that EPX's data plane might want to rely on, found
// by trying it on a pair of endpoints in this process:
//  - FI_DELIVERY_COMPLETE on fi_writemsg: accepted at all, and honoured,
//    i.e. the local completion waits until the target has processed the
//    write (a provider may accept the flag and complete early anyway);
//  - fi_writedata of 0 bytes: a bare signal, CQ data with no payload.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "epx/status.h"
#include "tools/bench/fabric_baseline.h"

namespace epx::bench {

struct ProbeCheck {
  bool works = false;  // posted, completed locally, CQ data seen by the target
  // Set when works: the local completion did not come while the target was
  // not reading its CQ (held back for 100 ms), i.e. it waited for the target.
  bool waits_for_target = false;
  std::string detail;  // what happened, or the error the attempt gave
};

struct ProviderReport {
  std::string provider;  // as libfabric names it: "tcp;ofi_rxm", "shm", ...
  std::string domain;
  std::string mr_mode;  // "local|virt_addr|prov_key"
  size_t tx_depth = 0;
  size_t inject_size = 0;
  size_t cq_data_size = 0;
  // fi_writedata of 8 bytes with default completion semantics: the control
  // that shows whether the probe can tell an early completion from a late one.
  ProbeCheck plain_writedata;
  // fi_writemsg(FI_DELIVERY_COMPLETE | FI_REMOTE_CQ_DATA) of 8 bytes.
  ProbeCheck delivery_complete;
  // fi_writedata of 0 bytes.
  ProbeCheck zero_byte_writedata;
};

// Fails only when the provider cannot be opened at all; a check that fails
// is reported in its ProbeCheck. Each check uses a fresh pair of endpoints
// and waits at most min(stall_timeout, 2 s) for anything.
Result<ProviderReport> probe_provider(const BaselineOptions& options);

}  // namespace epx::bench
