// Loading, overriding and validating epxd's configuration (epx.v1.DaemonConfig).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "epx/status.h"
#include "epx/v1/config.pb.h"

namespace epx::daemon {

// Parses a text-format DaemonConfig. Unknown fields and malformed values are
// errors whose message names the file, the line and the field.
Result<v1::DaemonConfig> parse_config_text(const std::string& text, const std::string& origin);
Result<v1::DaemonConfig> load_config_file(const std::string& path);

// Sets one field from a command-line flag ("rpc_timeout_ms", "300").
// Repeated string fields take a comma-separated list.
Status apply_override(v1::DaemonConfig* config, const std::string& field, const std::string& value);

// Fills defaults for unset fields, then checks every field; the error names
// the field and the allowed values.
Status finalize_config(v1::DaemonConfig* config);

// The weight of `job_id` under the operator's job_weights (validated by
// finalize_config): its exact entry, else its longest matching prefix
// entry ("train-*"), else 1.
uint32_t job_weight(const google::protobuf::RepeatedPtrField<v1::JobWeight>& weights, const std::string& job_id);

// Names of the fields a flag can override, in declaration order.
std::vector<std::string> config_field_names();

// "host:port" -> (host, port). IPv6 hosts in brackets: "[::1]:7470".
Result<std::pair<std::string, int>> split_host_port(const std::string& address);

// A TCP port written as 1 to 5 decimal digits with a value of at most
// 65535, or nullopt. Digits only: strtol would also take "+80", " 80" and
// "-0". Shared by the config and the Local arguments' checks.
std::optional<uint32_t> parse_port(std::string_view text);

}  // namespace epx::daemon
