// Command-line plumbing shared by EPX's tools: Boost.Program_options parsing
// with the tools' exit codes (0 help, 2 bad usage), comma-separated lists
// (CPU cores, domains), and results printed as JSON from a proto message.
#pragma once

#include <boost/program_options.hpp>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "epx/status.h"

namespace google::protobuf {
class Message;
}  // namespace google::protobuf

namespace epx::cli {

// Parses argv against `options` (and `positional` when given) into *vm.
// Returns the exit code main() should return now, or nullopt to go on:
//   0 after printing `options` for --help (`options` must define "help");
//   2 after printing "<program>: <why>" to stderr for an unknown flag, a bad
//     value or a missing required flag.
// --help is honoured before required flags are checked.
std::optional<int> parse(int argc, char** argv, const boost::program_options::options_description& options,
                         boost::program_options::variables_map* vm, const std::string& program,
                         const boost::program_options::positional_options_description* positional = nullptr);

// "a,b,,c" -> {"a", "b", "c"}: empty items are dropped.
std::vector<std::string> split_list(const std::string& list);

// "2,4,6" -> {2, 4, 6}, padded with -1 ("do not pin") to `count` entries.
// INVALID_ARGUMENT naming the item when one is not a CPU number (0 or more),
// or when there are more than `count`.
Result<std::vector<int>> parse_cores(const std::string& list, size_t count);

// `message` as one line of JSON on stdout: proto field names (snake_case),
// and every field, zero or not, so scripts see a fixed set of keys.
Status print_json(const google::protobuf::Message& message);

}  // namespace epx::cli
