// One side of a benchmark pair: a rail, a buffer registered on its domain,
// the operation contexts of its writes, and what it knows of its peer (the
// peer's fi_addr_t in this rail's AV and where to write in the peer's buffer).
#pragma once

#include <rdma/fabric.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "daemon/fabric/fi_handles.h"
#include "daemon/fabric/rail.h"
#include "epx/status.h"

namespace epx::bench {

// Where a peer writes to reach a registered buffer: the address to pass as
// fi_write's `addr` (the virtual address under FI_MR_VIRT_ADDR, else an
// offset from 0) and the MR key.
struct RemoteBuffer {
  uint64_t addr = 0;
  uint64_t key = 0;
};

class BenchEndpoint {
 public:
  // Takes ownership of an open rail (`side`: "A" or "B", for messages); registers `buffer_bytes` of page-aligned
  // memory for local writes out of it and remote writes into it, and keeps
  // `contexts` fi_context2 slots (the most writes a Channel may have in flight).
  static Result<std::unique_ptr<BenchEndpoint>> create(std::unique_ptr<daemon::Rail> rail, const std::string& side,
                                                       size_t buffer_bytes, size_t contexts);

  // Inserts `peer`'s address into this rail's AV and remembers its buffer.
  Status connect(const BenchEndpoint& peer);
  // The same for a peer in another process: its name (for messages), rail
  // address (fi_getname) and buffer.
  Status connect(const std::string& peer_name, const std::string& address, RemoteBuffer buffer);

  daemon::Rail& rail() const { return *rail_; }
  const std::string& name() const { return name_; }
  char* buffer() const { return static_cast<char*>(buffer_.get()); }
  size_t buffer_bytes() const { return buffer_bytes_; }
  // Local descriptor for writes out of buffer(): fi_mr_desc under FI_MR_LOCAL, else null.
  void* desc() const { return desc_; }
  RemoteBuffer remote() const { return remote_; }

  fi_addr_t peer() const { return peer_; }
  RemoteBuffer peer_buffer() const { return peer_buffer_; }

  fi_context2* contexts() { return contexts_.data(); }
  size_t context_count() const { return contexts_.size(); }

 private:
  BenchEndpoint() = default;

  struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
  };

  // Declared first so they are destroyed last: the provider may own a
  // context until its endpoint is closed.
  std::vector<fi_context2> contexts_;
  std::unique_ptr<daemon::Rail> rail_;
  std::string name_;
  // The buffer outlives its registration (destroyed in reverse order).
  std::unique_ptr<void, FreeDeleter> buffer_;
  size_t buffer_bytes_ = 0;
  daemon::MrPtr mr_;
  void* desc_ = nullptr;
  RemoteBuffer remote_;
  fi_addr_t peer_ = FI_ADDR_UNSPEC;
  RemoteBuffer peer_buffer_;
};

// Sides A and B on the same domain of `provider`, connected to each other.
struct EndpointPair {
  std::unique_ptr<BenchEndpoint> a, b;
};

// Opens the first domain of options' provider matching options' domains
// twice (Rail::open on the same fi_info), so the two sides share nothing
// but the wire. Fails with INVALID_ARGUMENT when `buffer_bytes` exceeds the
// provider's max_msg_size or `contexts` its transmit queue depth.
Result<EndpointPair> open_pair(const std::string& provider, const std::vector<std::string>& domains,
                               size_t buffer_bytes, size_t contexts);

// One side alone, on the first matching domain, for a peer in another
// process (process_exchange.cc); the same checks as open_pair.
Result<std::unique_ptr<BenchEndpoint>> open_endpoint(const std::string& provider,
                                                     const std::vector<std::string>& domains, const std::string& side,
                                                     size_t buffer_bytes, size_t contexts);

}  // namespace epx::bench
