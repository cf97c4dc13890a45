#include "tools/cli.h"

#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>

#include <cerrno>
#include <cstdlib>
#include <iostream>

namespace epx::cli {

namespace po = boost::program_options;

std::optional<int> parse(int argc, char** argv, const po::options_description& options, po::variables_map* vm,
                         const std::string& program, const po::positional_options_description* positional) {
  try {  // program_options reports by exception; it never leaves this function.
    po::command_line_parser parser(argc, argv);
    parser.options(options);
    if (positional != nullptr) parser.positional(*positional);
    po::store(parser.run(), *vm);
    if (vm->count("help")) {
      std::cout << options << "\n";
      return 0;
    }
    po::notify(*vm);
  } catch (const po::error& e) {
    std::cerr << program << ": " << e.what() << "\n";
    return 2;
  }
  return std::nullopt;
}

std::vector<std::string> split_list(const std::string& list) {
  std::vector<std::string> items;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    if (comma > start) items.push_back(list.substr(start, comma - start));
    start = comma + 1;
  }
  return items;
}

Result<std::vector<int>> parse_cores(const std::string& list, size_t count) {
  std::vector<int> cores;
  for (const std::string& item : split_list(list)) {
    char* end = nullptr;
    errno = 0;
    const long core = std::strtol(item.c_str(), &end, 10);
    if (*end != '\0' || errno != 0 || core < 0 || core > 1 << 20) {
      return invalid_argument("core '" + item + "' in '" + list + "' is not a CPU number");
    }
    cores.push_back(static_cast<int>(core));
  }
  if (cores.size() > count) {
    return invalid_argument("'" + list + "' names " + std::to_string(cores.size()) + " cores; at most " +
                            std::to_string(count) + " are used");
  }
  cores.resize(count, -1);
  return cores;
}

Status print_json(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) return internal_error("printing " + message.GetTypeName() + " as JSON: " + status.ToString());
  std::cout << json << std::endl;
  return Status();
}

}  // namespace epx::cli
