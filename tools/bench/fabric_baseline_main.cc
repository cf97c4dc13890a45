// fabric_baseline: plain libfabric latency, bandwidth and message rate
// between two endpoints of this process, as a table or (--json) for scripts.
//
//   fabric_baseline --provider shm
//   fabric_baseline --provider tcp --domain lo --json
//
// Exit status: 0 measured, 1 a measurement failed, 2 bad usage.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "epx/status.h"
#include "tools/bench/fabric_baseline.h"
#include "tools/bench/provider_probe.h"

namespace {

using namespace epx::bench;

constexpr char kUsage[] =
    "usage: fabric_baseline --provider tcp|shm|efa|verbs [--domain NAME[,NAME]]... [--json]\n"
    "                       [--min-time-ms N] [--warmup N] [--window N] [--rate-bytes N] [--no-pin]\n"
    "  --provider     libfabric provider of both endpoints\n"
    "  --domain       domain (NIC; tcp: interface such as lo) to use; default: the first\n"
    "  --json         one JSON object on stdout instead of tables\n"
    "  --min-time-ms  timed part of each size (default 300)\n"
    "  --warmup       untimed operations per size, at most 16 MiB (default 100)\n"
    "  --window       writes in flight for bandwidth and message rate (default 64)\n"
    "  --rate-bytes   write size of the message-rate run (default 64)\n"
    "  --no-pin       leave the two sides' threads unpinned (default: two different CPUs)\n";

struct Args {
  BaselineOptions options;
  bool json = false;
  size_t window = 64;
  size_t rate_bytes = 64;
};

bool parse_number(const std::string& text, long long min, long long* out) {
  char* end = nullptr;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || v < min) return false;
  *out = v;
  return true;
}

// Returns false (after printing why) on bad usage.
bool parse_args(int argc, char** argv, Args* args) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--json") { args->json = true; continue; }
    if (flag == "--no-pin") { args->options.pin_threads = false; continue; }
    if (flag == "--help" || flag == "-h") { std::fputs(kUsage, stdout); std::exit(0); }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "fabric_baseline: %s needs a value\n%s", flag.c_str(), kUsage);
      return false;
    }
    const std::string value = argv[++i];
    long long n = 0;
    bool ok = true;
    if (flag == "--provider") {
      args->options.provider = value;
    } else if (flag == "--domain") {
      for (size_t start = 0; start <= value.size();) {
        size_t comma = value.find(',', start);
        if (comma == std::string::npos) comma = value.size();
        if (comma > start) args->options.domains.push_back(value.substr(start, comma - start));
        start = comma + 1;
      }
    } else if (flag == "--min-time-ms") {
      ok = parse_number(value, 0, &n);
      args->options.min_time = std::chrono::milliseconds(n);
    } else if (flag == "--warmup") {
      ok = parse_number(value, 0, &n);
      args->options.warmup = static_cast<int>(n);
    } else if (flag == "--window") {
      ok = parse_number(value, 1, &n);
      args->window = static_cast<size_t>(n);
    } else if (flag == "--rate-bytes") {
      ok = parse_number(value, 1, &n);
      args->rate_bytes = static_cast<size_t>(n);
    } else {
      std::fprintf(stderr, "fabric_baseline: unknown flag %s\n%s", flag.c_str(), kUsage);
      return false;
    }
    if (!ok) {
      std::fprintf(stderr, "fabric_baseline: bad value '%s' for %s\n", value.c_str(), flag.c_str());
      return false;
    }
  }
  if (args->options.provider.empty()) {
    std::fprintf(stderr, "fabric_baseline: --provider is required\n%s", kUsage);
    return false;
  }
  return true;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string human_size(size_t bytes) {
  if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) return std::to_string(bytes >> 20) + " MiB";
  if (bytes >= 1024 && bytes % 1024 == 0) return std::to_string(bytes >> 10) + " KiB";
  return std::to_string(bytes) + " B";
}

struct Results {
  ProviderReport report;
  std::vector<LatencyPoint> latency;
  std::vector<BandwidthPoint> bandwidth;
  RatePoint rate{};
};

void print_table(const Args& args, const Results& r) {
  std::printf("provider %s, domain %s, mr_mode %s, tx depth %zu, inject %zu B, cq data %zu B\n",
              r.report.provider.c_str(), r.report.domain.c_str(), r.report.mr_mode.c_str(), r.report.tx_depth,
              r.report.inject_size, r.report.cq_data_size);
  std::printf("8-byte fi_writedata:                         %s\n", r.report.plain_writedata.detail.c_str());
  std::printf("8-byte fi_writemsg(FI_DELIVERY_COMPLETE):     %s\n", r.report.delivery_complete.detail.c_str());
  std::printf("0-byte fi_writedata with CQ data:            %s\n", r.report.zero_byte_writedata.detail.c_str());
  std::printf("\nlatency: fi_writedata ping-pong, one-way = round trip / 2 (min time %lld ms per size)\n",
              static_cast<long long>(args.options.min_time.count()));
  std::printf("%10s %12s %12s\n", "size", "median us", "p99 us");
  for (const auto& p : r.latency) {
    std::printf("%10s %12.2f %12.2f\n", human_size(p.bytes).c_str(), p.one_way_us, p.p99_us);
  }
  std::printf("\nbandwidth: fi_writedata stream, window %zu\n", args.window);
  std::printf("%10s %12s\n", "size", "GB/s");
  for (const auto& p : r.bandwidth) std::printf("%10s %12.3f\n", human_size(p.bytes).c_str(), p.gbytes_per_s);
  std::printf("\nmessage rate: %s fi_writedata, window %zu: %.3f Mops/s\n", human_size(r.rate.bytes).c_str(),
              args.window, r.rate.mops_per_s);
}

void print_json(const Args& args, const Results& r) {
  auto check = [](const ProbeCheck& c) {
    return "{\"works\":" + std::string(c.works ? "true" : "false") +
           ",\"waits_for_target\":" + std::string(c.waits_for_target ? "true" : "false") +
           ",\"detail\":" + json_string(c.detail) + "}";
  };
  std::string out = "{\"provider\":" + json_string(r.report.provider) + ",\"domain\":" + json_string(r.report.domain) +
                    ",\"mr_mode\":" + json_string(r.report.mr_mode) +
                    ",\"min_time_ms\":" + std::to_string(args.options.min_time.count()) +
                    ",\"window\":" + std::to_string(args.window) +
                    ",\"probe\":{\"plain_writedata\":" + check(r.report.plain_writedata) +
                    ",\"delivery_complete\":" + check(r.report.delivery_complete) +
                    ",\"zero_byte_writedata\":" + check(r.report.zero_byte_writedata) + "},\"latency\":[";
  char buf[160];
  for (size_t i = 0; i < r.latency.size(); ++i) {
    std::snprintf(buf, sizeof(buf), "%s{\"bytes\":%zu,\"one_way_us\":%.4f,\"p99_us\":%.4f}", i ? "," : "",
                  r.latency[i].bytes, r.latency[i].one_way_us, r.latency[i].p99_us);
    out += buf;
  }
  out += "],\"bandwidth\":[";
  for (size_t i = 0; i < r.bandwidth.size(); ++i) {
    std::snprintf(buf, sizeof(buf), "%s{\"bytes\":%zu,\"gbytes_per_s\":%.4f}", i ? "," : "", r.bandwidth[i].bytes,
                  r.bandwidth[i].gbytes_per_s);
    out += buf;
  }
  std::snprintf(buf, sizeof(buf), "],\"message_rate\":{\"bytes\":%zu,\"mops_per_s\":%.4f}}", r.rate.bytes,
                r.rate.mops_per_s);
  out += buf;
  std::puts(out.c_str());
}

int fail(const char* what, const epx::Status& status) {
  std::fprintf(stderr, "fabric_baseline: %s: %s\n", what, status.to_string().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  if (!parse_args(argc, argv, &args)) return 2;
  Results r;
  auto report = probe_provider(args.options);
  if (!report.ok()) return fail("probe", report.status());
  r.report = std::move(report.value());
  auto latency = baseline_latency(args.options, default_latency_sizes());
  if (!latency.ok()) return fail("latency", latency.status());
  r.latency = std::move(latency.value());
  auto bandwidth = baseline_bandwidth(args.options, default_bandwidth_sizes(), args.window);
  if (!bandwidth.ok()) return fail("bandwidth", bandwidth.status());
  r.bandwidth = std::move(bandwidth.value());
  auto rate = baseline_message_rate(args.options, args.rate_bytes, args.window);
  if (!rate.ok()) return fail("message rate", rate.status());
  r.rate = rate.value();
  if (args.json) {
    print_json(args, r);
  } else {
    print_table(args, r);
  }
  return 0;
}
