// Transport: the few libfabric data-path calls a proxy makes on its rail,
// behind an interface so the proxy can be driven through a fault-injecting
// decorator (FaultTransport) in tests and, by a test-only config field, in
// real daemons. RailTransport is the real one. Every call is made from the
// proxy thread only and never blocks.
#pragma once

#include <rdma/fabric.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_rma.h>
#include <sys/types.h>

#include <cstddef>
#include <string>

#include "daemon/fabric/rail.h"

namespace epx::daemon {

class Transport {
 public:
  virtual ~Transport() = default;

  // The rail underneath (setup work: registrations, address vector, limits).
  virtual Rail& rail() = 0;
  // fi_writemsg on the rail's endpoint: 0 when posted, -FI_EAGAIN when the
  // provider is full (retry later), another negative fi_errno on failure.
  virtual ssize_t write(const fi_msg_rma& msg, uint64_t flags) = 0;
  // fi_cq_read: up to `count` entries; -FI_EAGAIN when none, -FI_EAVAIL when
  // an error entry waits for read_error().
  virtual ssize_t read_completions(fi_cq_data_entry* entries, size_t count) = 0;
  // fi_cq_readerr: one error entry; > 0 when one was read.
  virtual ssize_t read_error(fi_cq_err_entry* entry) = 0;
  // Provider text for an error entry (fi_cq_strerror).
  virtual std::string error_text(const fi_cq_err_entry& entry) = 0;
};

// The real transport: straight calls on the rail's endpoint and CQ.
class RailTransport final : public Transport {
 public:
  explicit RailTransport(Rail& rail) : rail_(rail) {}

  Rail& rail() override { return rail_; }
  ssize_t write(const fi_msg_rma& msg, uint64_t flags) override;
  ssize_t read_completions(fi_cq_data_entry* entries, size_t count) override;
  ssize_t read_error(fi_cq_err_entry* entry) override;
  std::string error_text(const fi_cq_err_entry& entry) override;

 private:
  Rail& rail_;
};

}  // namespace epx::daemon
