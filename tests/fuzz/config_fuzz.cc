// Fuzz target: the daemon's configuration (daemon/config/config.h). The
// input is a text-format config, optionally followed by flag overrides
// ("field=value" lines after a line "--"); the result is parsed,
// overridden, finalized, and looked up the way epxd does at start.
#include <cstdlib>
#include <sstream>
#include <string>

#include "daemon/config/config.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find("\n--\n");
  const std::string text = input.substr(0, split);
  auto config = epx::daemon::parse_config_text(text, "fuzz.conf");
  if (!config.ok()) {
    if (config.status().message().empty()) std::abort();  // a refusal always says why
    return 0;
  }
  if (split != std::string::npos) {
    std::istringstream flags(input.substr(split + 4));
    for (std::string line; std::getline(flags, line);) {
      const size_t eq = line.find('=');
      if (eq == std::string::npos) continue;
      (void)epx::daemon::apply_override(&config.value(), line.substr(0, eq), line.substr(eq + 1));
    }
  }
  epx::Status final = epx::daemon::finalize_config(&config.value());
  if (!final.ok()) {
    if (final.message().empty()) std::abort();
    return 0;
  }
  // What epxd derives from an accepted config.
  (void)epx::daemon::split_host_port(config->peer_listen());
  for (const auto& weight : config->job_weights()) (void)epx::daemon::job_weight(config->job_weights(), weight.job());
  (void)epx::daemon::job_weight(config->job_weights(), "train-0");
  // An accepted config is a fixed point: printing and finalizing it again
  // changes nothing and is accepted again.
  epx::v1::DaemonConfig again = *config;
  if (!epx::daemon::finalize_config(&again).ok()) std::abort();
  return 0;
}
