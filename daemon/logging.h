// epxd's logging: spdlog to stderr (journald under systemd) or to a file that
// SIGHUP reopens (for logrotate).
#pragma once

#include <string>

#include "epx/status.h"

namespace epx::daemon {

// format: "text" (the default) or "json" (json_log_format.h).
Status init_logging(const std::string& level, const std::string& file, const std::string& format = "text");
// Reopens the log file after rotation; no-op when logging to stderr.
Status reopen_logs();

}  // namespace epx::daemon
