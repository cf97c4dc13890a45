#include <signal.h>

#include <cstdio>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "tools/ctl/commands.h"

namespace epx::ctl {
namespace {

volatile sig_atomic_t g_stop = 0;

struct RailRates {
  uint32_t rail = 0;
  std::string provider, domain;
  uint64_t bytes = 0, writes = 0, rejects = 0, errors = 0;  // in the interval
  double busy = 0;                                          // fraction of the interval
  uint64_t rings = 0, uncompleted = 0, bytes_total = 0;
};

struct JobRates {
  uint64_t bytes = 0, writes = 0;  // in the interval, all rails
};

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

std::string human_bytes(double bytes_per_s) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes_per_s >= 1024 && u < 4) {
    bytes_per_s /= 1024;
    ++u;
  }
  std::ostringstream out;
  out << std::fixed << std::setprecision(u == 0 ? 0 : 1) << bytes_per_s << " " << units[u] << "/s";
  return out.str();
}

uint64_t delta(uint64_t now, uint64_t before) { return now >= before ? now - before : now; }

// Per-job counters exist while a job has rings on a rail; a job that
// appears starts from 0, one that vanished is gone from `now`.
std::map<std::string, std::pair<uint64_t, uint64_t>> job_totals(const v1::DaemonStatus& st) {
  std::map<std::string, std::pair<uint64_t, uint64_t>> out;
  for (const auto& p : st.proxies()) {
    for (const auto& j : p.jobs()) {
      out[j.job_id()].first += j.fabric_bytes();
      out[j.job_id()].second += j.fabric_ops();
    }
  }
  return out;
}

}  // namespace

int top(const std::string& socket, const TopOptions& options, std::chrono::milliseconds timeout) {
  if (options.interval.count() < 100) {
    std::cerr << "epxctl: top: --interval-ms must be at least 100\n";
    return 2;
  }
  signal(SIGINT, [](int) { g_stop = 1; });
  signal(SIGTERM, [](int) { g_stop = 1; });
  auto previous = fetch_status(socket, timeout);
  if (!previous.ok()) {
    std::cerr << "epxctl: " << previous.status().to_string() << "\n";
    return 1;
  }
  auto previous_at = std::chrono::steady_clock::now();
  for (uint32_t shown = 0; !g_stop && (options.count == 0 || shown < options.count); ++shown) {
    // Sleep in short steps so SIGINT ends the view promptly.
    const auto wake = previous_at + options.interval;
    while (!g_stop && std::chrono::steady_clock::now() < wake)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (g_stop) break;
    auto now = fetch_status(socket, timeout);
    if (!now.ok()) {
      std::cerr << "epxctl: " << now.status().to_string() << "\n";
      return 1;
    }
    const auto now_at = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(now_at - previous_at).count();

    std::vector<RailRates> rails;
    for (const auto& p : now->proxies()) {
      RailRates r;
      r.rail = p.rail();
      for (const auto& info : now->rails()) {
        if (info.index() == p.rail()) {
          r.provider = info.provider();
          r.domain = info.domain();
        }
      }
      v1::ProxyStatus before;
      for (const auto& q : previous->proxies()) {
        if (q.rail() == p.rail()) before = q;
      }
      r.bytes = delta(p.fabric_bytes(), before.fabric_bytes());
      r.writes = delta(p.fabric_ops(), before.fabric_ops());
      r.rejects = delta(p.rejected(), before.rejected());
      r.errors = delta(p.fabric_errors(), before.fabric_errors());
      r.busy = seconds > 0 ? static_cast<double>(delta(p.busy_ns(), before.busy_ns())) / 1e9 / seconds : 0;
      r.rings = p.rings();
      r.uncompleted = p.uncompleted();
      r.bytes_total = p.fabric_bytes();
      rails.push_back(r);
    }
    std::map<std::string, JobRates> jobs;
    const auto before_jobs = job_totals(*previous);
    for (const auto& [job, totals] : job_totals(*now)) {
      auto it = before_jobs.find(job);
      const auto base = it == before_jobs.end() ? std::make_pair<uint64_t, uint64_t>(0, 0) : it->second;
      jobs[job] = JobRates{delta(totals.first, base.first), delta(totals.second, base.second)};
    }
    size_t down = 0;
    for (const auto& p : now->peers()) down += p.up() ? 0 : 1;

    if (options.json) {
      std::ostringstream out;
      out << std::setprecision(6) << "{\"node\":" << json_string(now->node()) << ",\"interval_s\":" << seconds
          << ",\"provider\":" << json_string(now->provider())
          << ",\"provider_fallback\":" << (now->provider_fallback().empty() ? "false" : "true")
          << ",\"draining\":" << (now->draining() ? "true" : "false") << ",\"clients\":" << now->clients_size()
          << ",\"jobs_known\":" << now->jobs_size() << ",\"peers_up\":" << now->peers_size() - down
          << ",\"peers_down\":" << down << ",\"rails\":[";
      for (size_t i = 0; i < rails.size(); ++i) {
        const RailRates& r = rails[i];
        out << (i ? "," : "") << "{\"rail\":" << r.rail << ",\"bytes\":" << r.bytes
            << ",\"bytes_per_s\":" << r.bytes / seconds << ",\"writes\":" << r.writes
            << ",\"writes_per_s\":" << r.writes / seconds << ",\"rejects\":" << r.rejects
            << ",\"fabric_errors\":" << r.errors << ",\"busy\":" << r.busy << ",\"rings\":" << r.rings
            << ",\"uncompleted\":" << r.uncompleted << ",\"bytes_total\":" << r.bytes_total << "}";
      }
      out << "],\"jobs\":[";
      size_t i = 0;
      for (const auto& [job, r] : jobs) {
        out << (i++ ? "," : "") << "{\"job\":" << json_string(job) << ",\"bytes\":" << r.bytes
            << ",\"bytes_per_s\":" << r.bytes / seconds << ",\"writes\":" << r.writes
            << ",\"writes_per_s\":" << r.writes / seconds << "}";
      }
      out << "]}";
      std::cout << out.str() << std::endl;
    } else {
      std::ostringstream out;
      out << "\033[H\033[2J";  // home, clear: redraw in place
      out << "epxctl top  node " << now->node() << "  every " << options.interval.count() << " ms  clients "
          << now->clients_size() << "  peers " << now->peers_size() - down << " up " << down << " down"
          << (now->draining() ? "  DRAINING" : "") << "\n";
      if (!now->provider_fallback().empty()) out << "warning: " << now->provider_fallback() << "\n";
      out << "\nRAIL PROVIDER        DOMAIN        BYTES/S       WRITES/S  REJECTS  ERRORS  BUSY  RINGS  IN-FLIGHT\n";
      for (const RailRates& r : rails) {
        out << std::left << std::setw(5) << r.rail << std::setw(15) << r.provider.substr(0, 14) << std::setw(14)
            << r.domain.substr(0, 13) << std::right << std::setw(12) << human_bytes(r.bytes / seconds) << std::setw(12)
            << std::fixed << std::setprecision(0) << r.writes / seconds << std::setw(9) << r.rejects << std::setw(8)
            << r.errors << std::setw(5) << std::setprecision(0) << r.busy * 100 << "%" << std::setw(7) << r.rings
            << std::setw(11) << r.uncompleted << "\n";
      }
      out << "\nJOB                              BYTES/S       WRITES/S\n";
      for (const auto& [job, r] : jobs) {
        out << std::left << std::setw(30) << job.substr(0, 29) << std::right << std::setw(12)
            << human_bytes(r.bytes / seconds) << std::setw(15) << std::fixed << std::setprecision(0)
            << r.writes / seconds << "\n";
      }
      std::cout << out.str() << std::flush;
    }
    previous = std::move(now);
    previous_at = now_at;
  }
  return 0;
}

}  // namespace epx::ctl
