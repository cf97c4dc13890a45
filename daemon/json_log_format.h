// JSON log lines (config log_format: json) for log collectors: one object
// per line with "time" (UTC, ISO 8601, milliseconds), "level", "thread",
// "message", and "job", "rank", "rail", "client" when the message names
// them. The daemon's messages name what they are about in a fixed way
// ("job J: rank R joined", "rail 0: provider ...", "client 3 ring 2 rank 1:
// ..."), so the fields are read from the message itself: the first
// "job <id>", "rank <n>", "rail <n>" and "client <n>" in it.
#pragma once

#include <spdlog/formatter.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace epx::daemon {

// job, rank, rail, client as the message names them (absent: not named).
std::map<std::string, std::string> fields_named_in(std::string_view message);

// One log line as a JSON object, with a trailing newline.
std::string json_log_line(std::chrono::system_clock::time_point time, std::string_view level, size_t thread,
                          std::string_view message);

class JsonLogFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override;
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonLogFormatter>(); }
};

}  // namespace epx::daemon
