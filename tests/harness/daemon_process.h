// A real epxd for integration tests: its own socket in a temp dir, an
// ephemeral Peer port on loopback, rails on the chosen provider.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "epx/client.h"
#include "epx/v1/status.pb.h"
#include "tests/harness/process.h"

namespace epx::test {

struct DaemonOptions {
  std::string name = "a";
  std::string provider = "tcp";
  std::vector<std::string> extra_args;
  // Every daemon of a TempDir shares one cluster secret (its Peer calls
  // carry the proof, as in production); off for daemons a test configures
  // otherwise (mutual TLS, none).
  bool cluster_secret = true;
  // Set in epxd's environment ("NAME=value"), e.g. proxies it must ignore.
  std::vector<std::string> env;
};

// The cluster secret file of the daemons in `dir` (created on first use:
// 32 random bytes in hex, mode 0600).
std::string cluster_secret_file(const TempDir& dir);

class DaemonProcess {
 public:
  // Starts epxd in `dir` and waits until it answers Status (or fails the test).
  DaemonProcess(const TempDir& dir, DaemonOptions options);

  const std::string& socket() const { return socket_; }
  const std::string& peer_address() const { return peer_address_; }
  Process& process() { return *process_; }

  std::unique_ptr<Client> connect(const std::string& client_name = "test") const;
  // `epxctl` with the given arguments against this daemon; returns (exit code, output).
  std::pair<int, std::string> epxctl(const std::vector<std::string>& args) const;
  // The daemon's full status, as `epxctl status --json` reports it (fails
  // the test when epxctl fails or prints something that does not parse).
  v1::DaemonStatus status() const;
  // Whether this daemon coordinates `job` and holds `rank` of it (the rank
  // registered at its bootstrap barrier, or a member of the formed job).
  bool coordinates_rank(const std::string& job, uint32_t rank) const;

 private:
  const TempDir& dir_;
  std::string socket_;
  std::string peer_address_;
  std::unique_ptr<Process> process_;
};

// Join options every integration test uses: the job, its size, this rank,
// the coordinator's peer address, a 20 s bootstrap timeout.
JoinOptions join_options(const std::string& job, uint32_t world, uint32_t rank, const std::string& coordinator,
                         std::chrono::milliseconds timeout = std::chrono::seconds(20));

// Starts `world` epx_exchange ranks of job `job` (rank r on daemon
// r * daemons / world, the coordinator daemons[0]), each moving
// bytes_per_peer to every peer for `rounds` rounds, in writes of random
// sizes or, with block_bytes, of that size; logs in dir.
std::vector<std::unique_ptr<Process>> start_exchange(const TempDir& dir, const std::vector<DaemonProcess*>& daemons,
                                                     const std::string& job, uint32_t world, uint32_t rounds,
                                                     uint64_t bytes_per_peer, uint64_t block_bytes = 0);

}  // namespace epx::test
