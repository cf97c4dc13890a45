#include "daemon/control/status_access.h"

#include <grp.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <vector>

#include <spdlog/spdlog.h>

namespace epx::daemon {
namespace {

// Looked up on every call (groups may be created after the daemon starts).
bool group_id(const std::string& name, gid_t* gid) {
  group entry;
  group* found = nullptr;
  std::vector<char> buffer(16384);
  if (::getgrnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 || found == nullptr) {
    return false;
  }
  *gid = found->gr_gid;
  return true;
}

// The supplementary groups of `pid` ("Groups:" in /proc/PID/status). The
// pid is the connecting process's from SO_PEERCRED; the connection is open,
// so it is that process unless it handed the socket to another.
bool process_in_group(pid_t pid, gid_t gid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Groups:", 0) != 0) continue;
    std::istringstream groups(line.substr(7));
    long g = 0;
    while (groups >> g) {
      if (static_cast<gid_t>(g) == gid) return true;
    }
    return false;
  }
  return false;
}

}  // namespace

bool sees_every_tenant(const Credentials& caller, const std::string& admin_group) {
  if (caller.uid == 0 || caller.uid == ::geteuid()) return true;
  if (admin_group.empty()) return false;
  gid_t gid = 0;
  if (!group_id(admin_group, &gid)) {
    static std::atomic<bool> warned{false};  // once per process; no ordering with anything else
    if (!warned.exchange(true, std::memory_order_relaxed)) {
      spdlog::warn("admin_group: no group named '{}' on this node; only root and the daemon's user see every tenant",
                   admin_group);
    }
    return false;
  }
  return caller.gid == gid || process_in_group(caller.pid, gid);
}

}  // namespace epx::daemon
