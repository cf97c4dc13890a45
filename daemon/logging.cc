#include "daemon/logging.h"

#include <mutex>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "daemon/json_log_format.h"

namespace epx::daemon {
namespace {

std::mutex g_mu;
std::string g_file;
bool g_json = false;
spdlog::level::level_enum g_level = spdlog::level::info;

Status install(const std::string& file) {
  std::shared_ptr<spdlog::logger> logger;
  try {  // spdlog reports file errors by exception; keep them inside this module.
    if (file.empty()) {
      logger = std::make_shared<spdlog::logger>("epxd", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    } else {
      logger = std::make_shared<spdlog::logger>(
          "epxd", std::make_shared<spdlog::sinks::basic_file_sink_mt>(file, /*truncate=*/false));
    }
  } catch (const spdlog::spdlog_ex& e) {
    return invalid_argument("log_file " + file + ": " + e.what());
  }
  logger->set_level(g_level);
  if (g_json) {
    logger->set_formatter(std::make_unique<JsonLogFormatter>());
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %L [%t] %v");
  }
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  return Status();
}

}  // namespace

Status init_logging(const std::string& level, const std::string& file, const std::string& format) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_json = format == "json";
  g_level = spdlog::level::from_str(level);
  g_file = file;
  return install(file);
}

Status reopen_logs() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_file.empty()) return Status();
  return install(g_file);
}

}  // namespace epx::daemon
