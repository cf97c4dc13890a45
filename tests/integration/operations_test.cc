// Operations through real daemons: the Prometheus endpoint scraped over
// HTTP during an exchange, grpc.health.v1 and the HTTP probes, drain,
// `epxctl top --json`, the provider auto fallback reported everywhere, and
// require_provider refusing to start.
#include <doctest/doctest.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <grp.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <future>
#include <map>
#include <sstream>

#include "epx/client.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/harness/daemon_process.h"
#include "tools/ctl/http_get.h"

using namespace epx;
using namespace epx::test;
using namespace std::chrono_literals;
using grpc::health::v1::HealthCheckResponse;

namespace {

// The sum of every sample of `name` whose labels contain each of `labels`
// ("job=\"m\""), from Prometheus text format.
double sample_sum(const std::string& text, const std::string& name, const std::vector<std::string>& labels = {}) {
  double sum = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const size_t end = line.find_first_of("{ ");
    if (line.compare(0, end, name) != 0 || end != name.size()) continue;
    const size_t close = line.find('}');
    const std::string label_text = line[end] == '{' ? line.substr(end, close - end + 1) : "";
    bool match = true;
    for (const auto& l : labels) match = match && label_text.find(l) != std::string::npos;
    if (match) sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

std::string scrape(const std::string& address, const std::string& path = "/metrics") {
  auto reply = ctl::http_get(address, path, 5s);
  REQUIRE_MESSAGE(reply.ok(), reply.status().to_string());
  REQUIRE_MESSAGE(reply->code == 200, path << " answered " << reply->code << ":\n" << reply->body);
  return reply->body;
}

// Waits for every rank; returns the bytes they reported sending.
uint64_t finish_exchange(std::vector<std::unique_ptr<Process>>& ranks) {
  uint64_t bytes = 0;
  for (size_t r = 0; r < ranks.size(); ++r) {
    auto code = ranks[r]->wait(90s);
    REQUIRE_MESSAGE(code.has_value(), "rank " << r << " did not finish:\n" << ranks[r]->output());
    REQUIRE_MESSAGE(*code == 0, "rank " << r << " failed:\n" << ranks[r]->output());
    const std::string out = ranks[r]->output();
    const size_t at = out.find("summary rank=");
    REQUIRE(at != std::string::npos);
    bytes += std::stoull(out.substr(out.find("bytes=", at) + 6));
  }
  return bytes;
}

std::vector<std::string> metrics_args() { return {"--metrics-listen", "127.0.0.1:0"}; }

HealthCheckResponse::ServingStatus health_of(const std::string& target, const std::string& service,
                                             grpc::StatusCode* code = nullptr) {
  auto stub = grpc::health::v1::Health::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  HealthCheckResponse reply;
  grpc::Status s = stub->Check(&ctx, request, &reply);
  if (code) *code = s.error_code();
  if (!code) REQUIRE_MESSAGE(s.ok(), "health Check('" << service << "') at " << target << ": " << s.error_message());
  return reply.status();
}

// provider auto falls back only where libfabric offers neither efa nor verbs.
bool node_has_rdma(const DaemonProcess& d) {
  const std::string p = d.status().provider();
  return p.rfind("efa", 0) == 0 || p.rfind("verbs", 0) == 0;
}

}  // namespace

TEST_CASE("metrics: a scrape over HTTP during an exchange; the byte counters move by the bytes it sent") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp", metrics_args()});
  const std::string address = a.status().metrics_address();
  REQUIRE_FALSE(address.empty());
  const std::string before = scrape(address);
  const double bytes_before = sample_sum(before, "epx_rail_write_bytes_total");
  CHECK(before.find("# TYPE epx_rail_write_bytes_total counter") != std::string::npos);
  CHECK(before.find("# TYPE epx_join_duration_seconds histogram") != std::string::npos);
  CHECK(sample_sum(before, "epx_rail_healthy") == 1);
  // Naming: every counter ends in _total, nothing else does.
  std::istringstream families(before);
  for (std::string line; std::getline(families, line);) {
    if (line.rfind("# TYPE ", 0) != 0) continue;
    std::istringstream t(line.substr(7));
    std::string name, type;
    t >> name >> type;
    CAPTURE(line);
    CHECK(name.rfind("epx_", 0) == 0);
    const bool total = name.size() > 6 && name.compare(name.size() - 6, 6, "_total") == 0;
    CHECK(total == (type == "counter"));
  }

  auto ranks = start_exchange(dir, {&a}, "m", 2, 40, 1 << 20);
  // While it runs: the job's own series appear and grow.
  double job_bytes_seen = 0;
  bool running = true;
  while (running && job_bytes_seen == 0) {
    job_bytes_seen = sample_sum(scrape(address), "epx_job_write_bytes_total", {"job=\"m\""});
    running = ranks[0]->running() || ranks[1]->running();
  }
  CHECK_MESSAGE(job_bytes_seen > 0, "no scrape saw job m's bytes while it ran");
  const uint64_t sent = finish_exchange(ranks);
  REQUIRE(sent > 0);

  const std::string after = scrape(address);
  CHECK(sample_sum(after, "epx_rail_write_bytes_total") - bytes_before == static_cast<double>(sent));
  CHECK(sample_sum(after, "epx_rail_writes_total") > 0);
  CHECK(sample_sum(after, "epx_rail_descriptors_total") >= sample_sum(after, "epx_rail_writes_total"));
  CHECK(sample_sum(after, "epx_signals_applied_total") > 0);
  CHECK(sample_sum(after, "epx_descriptors_rejected_total") == 0);
  CHECK(sample_sum(after, "epx_rail_fabric_errors_total") == 0);
  CHECK(sample_sum(after, "epx_join_duration_seconds_count") == 2);  // both ranks joined
  CHECK(sample_sum(after, "epx_proxy_busy_seconds_total") > 0);
  CHECK(sample_sum(after, "epx_provider_fallback") == 0);  // tcp was asked for
  CHECK(sample_sum(after, "epx_rail_device_windows_supported") == 0);
}

TEST_CASE("metrics: job labels are capped at metrics_max_jobs; the rest are summed under _other") {
  TempDir dir;
  std::vector<std::string> args = metrics_args();
  args.insert(args.end(), {"--metrics-max-jobs", "1"});
  DaemonProcess a(dir, {"a", "tcp", args});
  const std::string address = a.status().metrics_address();
  auto c = a.connect();
  auto j1 = c->join(join_options("first", 1, 0, a.peer_address()));
  auto j2 = c->join(join_options("second", 1, 0, a.peer_address()));
  REQUIRE(j1.ok());
  REQUIRE(j2.ok());
  for (Job* j : {&j1.value(), &j2.value()}) {
    auto w = j->create_window(4096);
    auto sig = j->open_signals(1);
    auto ring = j->open_ring(64);
    REQUIRE(w.ok());
    REQUIRE(sig.ok());
    REQUIRE(ring.ok());
    REQUIRE((*ring)->post_write_signal(0, *w, 0, w->id(), 2048, 1000, SignalRef{0, 1}).ok());
    REQUIRE(sig->wait(0, 1, 10s).ok());
    REQUIRE((*ring)->flush(10s).ok());
  }
  // Per-job counters are published by the proxies every 100 ms.
  std::string text;
  CHECK(wait_until(
      [&] {
        text = scrape(address);
        return sample_sum(text, "epx_job_write_bytes_total", {"job=\"_other\""}) == 1000;
      },
      5s));
  CHECK(sample_sum(text, "epx_job_write_bytes_total", {"job=\"first\""}) == 1000);
  CHECK(sample_sum(text, "epx_job_write_bytes_total", {"job=\"_other\""}) == 1000);
  CHECK(text.find("job=\"second\"") == std::string::npos);
}

TEST_CASE("health: grpc.health.v1 on both servers, /healthz and /readyz, and draining turns readiness off") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp", metrics_args()});
  const std::string address = a.status().metrics_address();
  const std::string local = "unix:" + a.socket();
  CHECK(health_of(local, "") == HealthCheckResponse::SERVING);
  CHECK(health_of(local, "epx.v1.Local") == HealthCheckResponse::SERVING);
  grpc::StatusCode code = grpc::StatusCode::OK;
  health_of(local, "no.such.Service", &code);
  CHECK(code == grpc::StatusCode::NOT_FOUND);
  CHECK(health_of(a.peer_address(), "") == HealthCheckResponse::SERVING);
  CHECK(health_of(a.peer_address(), "epx.v1.Peer") == HealthCheckResponse::SERVING);

  CHECK(scrape(address, "/healthz").find("ok control loop") != std::string::npos);
  const std::string ready = scrape(address, "/readyz");
  CHECK(ready.find("ok rails: 1 open") != std::string::npos);
  CHECK(ready.find("ok draining: no") != std::string::npos);
  auto missing = ctl::http_get(address, "/nothing", 5s);
  REQUIRE(missing.ok());
  CHECK(missing->code == 404);
  auto [ok_code, ok_out] = a.epxctl({"health"});
  CHECK_MESSAGE(ok_code == 0, ok_out);
  CHECK(ok_out.find("grpc health epx.v1.Local: SERVING") != std::string::npos);

  auto [drain_code, drain_out] = a.epxctl({"drain", "--wait-ms", "100"});
  CHECK_MESSAGE(drain_code == 0, drain_out);  // no jobs: drained at once
  auto readyz = ctl::http_get(address, "/readyz", 5s);
  REQUIRE(readyz.ok());
  CHECK(readyz->code == 503);
  CHECK(readyz->body.find("fail draining") != std::string::npos);
  CHECK(scrape(address, "/healthz").find("ok control loop") != std::string::npos);  // alive all the same
  CHECK(wait_until([&] { return health_of(local, "epx.v1.Local") == HealthCheckResponse::NOT_SERVING; }, 5s));
  CHECK(health_of(a.peer_address(), "epx.v1.Peer") == HealthCheckResponse::SERVING);  // running jobs go on
  auto [bad_code, bad_out] = a.epxctl({"health"});
  CHECK(bad_code == 1);
  CHECK(bad_out.find("NOT READY") != std::string::npos);
  CHECK(sample_sum(scrape(address), "epx_draining") == 1);

  auto [cancel_code, cancel_out] = a.epxctl({"drain", "--cancel"});
  CHECK_MESSAGE(cancel_code == 0, cancel_out);
  CHECK(wait_until([&] { return health_of(local, "epx.v1.Local") == HealthCheckResponse::SERVING; }, 5s));
  auto back = ctl::http_get(address, "/readyz", 5s);
  REQUIRE(back.ok());
  CHECK(back->code == 200);
}

TEST_CASE("drain: a running job completes, a new join is refused naming the drain, the drain ends when it left") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"}), b(dir, {"b", "tcp"});
  auto ca = a.connect(), cb = b.connect();
  auto fb = std::async(std::launch::async, [&] { return cb->join(join_options("running", 2, 1, a.peer_address())); });
  auto ja = ca->join(join_options("running", 2, 0, a.peer_address()));
  REQUIRE_MESSAGE(ja.ok(), ja.status().to_string());
  auto jb = fb.get();
  REQUIRE_MESSAGE(jb.ok(), jb.status().to_string());

  Process drain({runfile("tools/epxctl"), "--socket", a.socket(), "drain", "--wait-ms", "30000"},
                dir.path() + "/drain.log");
  REQUIRE(drain.wait_output("draining epxd", 10s));
  REQUIRE(wait_until([&] { return a.status().draining(); }, 5s));

  // New joins on the draining daemon are refused, with a reason.
  auto other = a.connect("late");
  auto refused = other->join(join_options("late", 1, 0, a.peer_address(), 2s));
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == StatusCode::kUnavailable);
  CHECK(refused.status().message().find("draining") != std::string::npos);

  // The running job still moves data through the draining daemon.
  auto src = ja->create_window(1 << 16);
  auto dst = jb->create_window(1 << 16);
  auto sig = jb->open_signals(1);
  auto sa = ja->open_signals(1);
  auto ring = ja->open_ring(64);
  REQUIRE(src.ok());
  REQUIRE(dst.ok());
  REQUIRE(sig.ok());
  REQUIRE(sa.ok());
  REQUIRE(ring.ok());
  auto fbar = std::async(std::launch::async, [&] { return jb->barrier(10s); });
  REQUIRE(ja->barrier(10s).ok());
  REQUIRE(fbar.get().ok());
  for (size_t i = 0; i < (1 << 16); ++i) src->data()[i] = static_cast<uint8_t>(i * 13 + 1);
  REQUIRE((*ring)->post_write_signal(1, *src, 0, 1, 0, 1 << 16, SignalRef{0, 1}).ok());
  REQUIRE(sig->wait(0, 1, 10s).ok());
  CHECK(std::memcmp(src->data(), dst->data(), 1 << 16) == 0);
  REQUIRE((*ring)->flush(10s).ok());
  CHECK(drain.running());  // the job is still here: the drain waits

  ring->reset();
  REQUIRE(ja->leave().ok());
  REQUIRE(jb->leave().ok());
  auto code = drain.wait(20s);
  REQUIRE_MESSAGE(code.has_value(), "drain did not end after the job left:\n" << drain.output());
  CHECK_MESSAGE(*code == 0, drain.output());
  CHECK(drain.output().find("drained: no job left on a") != std::string::npos);
}

TEST_CASE("drain: the deadline passes with a job still running; SIGTERM then stops the daemon as usual") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"});
  auto c = a.connect();
  auto job = c->join(join_options("stays", 1, 0, a.peer_address()));
  REQUIRE(job.ok());
  const auto start = std::chrono::steady_clock::now();
  auto [code, out] = a.epxctl({"drain", "--wait-ms", "700"});
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(code == 1);
  CHECK(out.find("drain deadline of 700 ms passed") != std::string::npos);
  CHECK(out.find("stays (ranks 0 here)") != std::string::npos);
  CHECK(took >= 700ms);
  CHECK(took < 10s);
  CHECK(a.status().draining());  // still refusing joins

  a.process().signal(SIGTERM);
  auto exit = a.process().wait(15s);
  REQUIRE(exit.has_value());
  CHECK(*exit == 0);
  auto e = c->next_event(5s);
  REQUIRE(e.has_value());
  CHECK(e->kind == Event::Kind::kDaemonShutdown);
}

TEST_CASE("top --json: one line per interval with the rails' and jobs' rates during an exchange") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp"});
  auto ranks = start_exchange(dir, {&a}, "t", 2, 60, 1 << 20);
  Process top(
      {runfile("tools/epxctl"), "--socket", a.socket(), "top", "--json", "--interval-ms", "200", "--count", "10"},
      dir.path() + "/top.log");
  auto code = top.wait(30s);
  REQUIRE(code.has_value());
  CHECK_MESSAGE(*code == 0, top.output());
  finish_exchange(ranks);

  std::istringstream in(top.output());
  std::vector<google::protobuf::Struct> lines;
  for (std::string line; std::getline(in, line);) {
    google::protobuf::Struct s;
    const auto parsed = google::protobuf::util::JsonStringToMessage(line, &s);
    REQUIRE_MESSAGE(parsed.ok(), "not a JSON object: " << line);
    lines.push_back(s);
  }
  REQUIRE(lines.size() == 10);
  double interval_bytes = 0, job_rate = 0;
  for (const auto& s : lines) {
    const auto& f = s.fields();
    CHECK(f.at("node").string_value() == "a");
    CHECK(f.at("interval_s").number_value() > 0.15);
    const auto& rails = f.at("rails").list_value().values();
    REQUIRE(rails.size() == 1);
    interval_bytes += rails[0].struct_value().fields().at("bytes").number_value();
    for (const auto& j : f.at("jobs").list_value().values()) {
      if (j.struct_value().fields().at("job").string_value() == "t") {
        job_rate = std::max(job_rate, j.struct_value().fields().at("bytes_per_s").number_value());
      }
    }
  }
  CHECK(job_rate > 0);
  // The intervals' bytes add up to the counter's growth over the run.
  const auto& first = lines.front().fields().at("rails").list_value().values()[0].struct_value().fields();
  const auto& last = lines.back().fields().at("rails").list_value().values()[0].struct_value().fields();
  CHECK(interval_bytes == last.at("bytes_total").number_value() - first.at("bytes_total").number_value() +
                              first.at("bytes").number_value());
  CHECK(interval_bytes > 0);
}

TEST_CASE("provider auto falling back to tcp is said in the log, status, metric and every join reply") {
  TempDir dir;
  std::vector<std::string> args = metrics_args();
  args.insert(args.end(), {"--rail-domains", "lo"});
  DaemonProcess a(dir, {"a", "auto", args});
  if (node_has_rdma(a)) {
    std::cout << "EPX_TEST_CASE_SKIPPED: this node has efa or verbs: provider auto does not fall back" << std::endl;
    return;
  }
  const v1::DaemonStatus st = a.status();
  CHECK(st.provider().rfind("tcp", 0) == 0);
  CHECK(st.provider_fallback().find("falling back to tcp") != std::string::npos);
  CHECK(st.provider_fallback().find("/dev/infiniband") != std::string::npos);  // what was looked for
  CHECK(a.process().output().find(" W ") != std::string::npos);
  CHECK(a.process().output().find("rails: provider auto found neither efa nor verbs") != std::string::npos);
  CHECK(sample_sum(scrape(st.metrics_address()), "epx_provider_fallback", {"configured=\"auto\""}) == 1);
  auto [code, out] = a.epxctl({"status"});
  CHECK(code == 0);
  CHECK(out.find("warning: provider auto found neither efa nor verbs") != std::string::npos);

  auto c = a.connect();
  auto job = c->join(join_options("fb", 1, 0, a.peer_address()));
  REQUIRE(job.ok());
  CHECK(job->provider_fallback() == st.provider_fallback());
  auto [jcode, jout] = a.epxctl({"join", "--job", "fb2", "--world", "1", "--rank", "0"});
  CHECK(jcode == 0);
  CHECK(jout.find("warning: provider auto") != std::string::npos);

  // A provider named in the config is no fallback: nothing to report.
  DaemonProcess b(dir, {"b", "tcp", metrics_args()});
  CHECK(b.status().provider_fallback().empty());
  auto cb = b.connect();
  auto jb = cb->join(join_options("nofb", 1, 0, b.peer_address()));
  REQUIRE(jb.ok());
  CHECK(jb->provider_fallback().empty());
  CHECK(sample_sum(scrape(b.status().metrics_address()), "epx_provider_fallback") == 0);
}

TEST_CASE("require_provider: provider auto without efa or verbs is a start-up error") {
  TempDir dir;
  Process epxd({runfile("daemon/epxd"), "--node-name", "r", "--control-socket", dir.path() + "/r.sock", "--peer-listen",
                "127.0.0.1:0", "--provider", "auto", "--rail-domains", "lo", "--require-provider", "true"},
               dir.path() + "/r.log");
  auto code = epxd.wait(20s);
  REQUIRE_MESSAGE(code.has_value(), "epxd did not exit:\n" << epxd.output());
  if (*code == 0 || epxd.output().find("require_provider") == std::string::npos) {
    // It started (or failed otherwise): only right on a node with efa or verbs.
    const bool rdma = epxd.output().find("provider efa") != std::string::npos ||
                      epxd.output().find("provider verbs") != std::string::npos;
    if (rdma) {
      std::cout << "EPX_TEST_CASE_SKIPPED: this node has efa or verbs: nothing to refuse" << std::endl;
      return;
    }
  }
  CHECK(*code == 2);
  CHECK(epxd.output().find("require_provider forbids falling back to tcp") != std::string::npos);
  CHECK(epxd.output().find("epxd: error:") != std::string::npos);
}

TEST_CASE("log_format json: every line of the daemon's log is a JSON object with the job and rank it names") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "tcp", {"--log-format", "json"}});
  auto c = a.connect();
  auto job = c->join(join_options("logged", 1, 0, a.peer_address()));
  REQUIRE(job.ok());
  REQUIRE(a.process().wait_output("\"rank\":0", 5s));
  std::istringstream in(a.process().output());
  size_t lines = 0;
  bool named = false, rail = false;
  for (std::string line; std::getline(in, line);) {
    google::protobuf::Struct s;
    CAPTURE(line);
    REQUIRE(google::protobuf::util::JsonStringToMessage(line, &s).ok());
    const auto& f = s.fields();
    CHECK(f.count("time") == 1);
    CHECK(f.count("level") == 1);
    CHECK(f.count("message") == 1);
    named = named || (f.count("job") && f.at("job").string_value() == "logged" && f.count("rank") &&
                      f.at("rank").number_value() == 0);
    rail = rail || (f.count("rail") && f.at("message").string_value().rfind("rail 0:", 0) == 0);
    ++lines;
  }
  CHECK(lines > 3);
  CHECK(named);
  CHECK(rail);
}

TEST_CASE("drain is for operators: another user's epxctl drain is refused and changes nothing") {
  if (::geteuid() != 0) {
    std::cout << "EPX_TEST_CASE_SKIPPED: needs root to run epxctl as another user" << std::endl;
    return;
  }
  const group* nogroup = ::getgrgid(65534);
  if (nogroup == nullptr) {
    std::cout << "EPX_TEST_CASE_SKIPPED: no group 65534 to give the other user's epxctl the socket" << std::endl;
    return;
  }
  TempDir dir;
  REQUIRE(::chmod(dir.path().c_str(), 0711) == 0);  // the other user reaches the socket by name
  DaemonProcess a(dir, {"a", "tcp", {"--socket-group", nogroup->gr_name}});
  Process drain({runfile("tests/run_as"), "65534", "65534", "-", runfile("tools/epxctl"), "--socket", a.socket(),
                 "drain", "--wait-ms", "100"},
                dir.path() + "/drain.log");
  auto code = drain.wait(30s);
  REQUIRE(code.has_value());
  CHECK(*code == 1);
  CHECK(drain.output().find("PERMISSION_DENIED") != std::string::npos);
  CHECK(drain.output().find("not an operator") != std::string::npos);
  CHECK_FALSE(a.status().draining());
}
