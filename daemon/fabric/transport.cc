#include "daemon/fabric/transport.h"

namespace epx::daemon {

ssize_t RailTransport::write(const fi_msg_rma& msg, uint64_t flags) { return fi_writemsg(rail_.ep(), &msg, flags); }

ssize_t RailTransport::read_completions(fi_cq_data_entry* entries, size_t count) {
  return fi_cq_read(rail_.cq(), entries, count);
}

ssize_t RailTransport::read_error(fi_cq_err_entry* entry) { return fi_cq_readerr(rail_.cq(), entry, 0); }

std::string RailTransport::error_text(const fi_cq_err_entry& entry) {
  char buf[256];
  const char* text = fi_cq_strerror(rail_.cq(), entry.prov_errno, entry.err_data, buf, sizeof(buf));
  return text ? text : "";
}

}  // namespace epx::daemon
