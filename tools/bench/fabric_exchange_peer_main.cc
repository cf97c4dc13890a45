// fabric_exchange_peer: side B of baseline_exchange's pairs in a process of
// its own, started by baseline_exchange when BaselineOptions::peer_binary
// names it (process_exchange.cc); not meant to be run by hand.
//   fabric_exchange_peer --fd N --provider P [--domain D]... --pairs K
//                        --sizes S1,S2,... --warmup W --stall-ms T [--writes N]
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "tools/bench/fabric_baseline.h"
#include "tools/bench/measure.h"

namespace {

int usage(const std::string& why) {
  std::cerr << "fabric_exchange_peer: " << why << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  epx::bench::BaselineOptions options;
  std::vector<size_t> sizes;
  int fd = -1;
  size_t pairs = 0;
  if (argc % 2 != 1) return usage("flags come in --name value pairs");
  try {
    for (int i = 1; i + 1 < argc; i += 2) {
      const std::string k = argv[i], v = argv[i + 1];
      if (k == "--fd") {
        fd = std::stoi(v);
      } else if (k == "--provider") {
        options.provider = v;
      } else if (k == "--domain") {
        options.domains.push_back(v);
      } else if (k == "--pairs") {
        pairs = std::stoul(v);
      } else if (k == "--warmup") {
        options.warmup = std::stoi(v);
      } else if (k == "--writes") {
        options.writes = std::stoul(v);
      } else if (k == "--stall-ms") {
        options.stall_timeout = std::chrono::milliseconds(std::stol(v));
      } else if (k == "--sizes") {
        for (size_t at = 0; at < v.size();) {
          const size_t comma = v.find(',', at);
          sizes.push_back(std::stoull(v.substr(at, comma - at)));
          at = comma == std::string::npos ? v.size() : comma + 1;
        }
      } else {
        return usage("unknown flag " + k);
      }
    }
  } catch (const std::exception& e) {
    return usage(std::string("bad flag value: ") + e.what());
  }
  if (fd < 0 || pairs == 0 || sizes.empty() || options.provider.empty()) {
    return usage("needs --fd, --provider, --pairs and --sizes");
  }
  const epx::Status s = epx::bench::serve_exchange_peer(fd, options, sizes, pairs);
  if (!s.ok()) {
    std::cerr << "fabric_exchange_peer: " << s.to_string() << "\n";
    return 1;
  }
  return 0;
}
