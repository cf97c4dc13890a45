// Who may see every tenant in Local.Status. The report lists clients with
// their pids, uids, jobs and ring errors: one tenant's business, so a
// caller normally sees its own; the node's operators see all.
#pragma once

#include <sys/types.h>

#include <string>

#include "daemon/jobs/client_table.h"

namespace epx::daemon {

// Whose clients and jobs a status report lists.
struct StatusView {
  bool all = true;  // every tenant's; otherwise those of `uid`
  uid_t uid = 0;
};

// Whether the caller may see every tenant: root, the daemon's own user (it
// can read the daemon's memory and logs anyway), or a member of
// `admin_group` (empty: none). Group membership is the caller's gid from
// SO_PEERCRED or one of its process's supplementary groups
// (/proc/PID/status); a group that does not exist admits nobody, and is
// logged once.
bool sees_every_tenant(const Credentials& caller, const std::string& admin_group);

}  // namespace epx::daemon
