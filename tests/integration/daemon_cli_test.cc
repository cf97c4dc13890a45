// epxd and epxctl as an operator meets them: flags, config files, errors.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>

#include "tests/harness/daemon_process.h"

using namespace epx::test;
using namespace std::chrono_literals;

namespace {

std::pair<int, std::string> run(const TempDir& dir, std::vector<std::string> argv) {
  static int n = 0;
  Process p(std::move(argv), dir.path() + "/run-" + std::to_string(++n) + ".log");
  p.close_stdin();
  auto code = p.wait(30s);
  REQUIRE(code.has_value());
  return {*code, p.output()};
}

}  // namespace

TEST_CASE("bad flags and configs exit 2 with a message naming the problem") {
  TempDir dir;
  const std::string epxd = runfile("daemon/epxd");
  auto [c1, o1] = run(dir, {epxd, "--provider", "ib", "--check-config"});
  CHECK(c1 == 2);
  CHECK(o1.find("provider") != std::string::npos);

  auto [c2, o2] = run(dir, {epxd, "--rpc-timeout-ms", "fast"});
  CHECK(c2 == 2);
  CHECK(o2.find("rpc-timeout-ms") != std::string::npos);

  auto [c3, o3] = run(dir, {epxd, "--no-such-flag"});
  CHECK(c3 == 2);
  CHECK(o3.find("no-such-flag") != std::string::npos);

  const std::string conf = dir.path() + "/bad.conf";
  std::ofstream(conf) << "provider: \"tcp\"\nmax_clients: lots\n";
  auto [c4, o4] = run(dir, {epxd, "--config", conf});
  CHECK(c4 == 2);
  CHECK(o4.find("max_clients") != std::string::npos);
  CHECK(o4.find("bad.conf:2") != std::string::npos);
}

TEST_CASE("flags override the config file") {
  TempDir dir;
  const std::string conf = dir.path() + "/ok.conf";
  std::ofstream(conf) << "node_name: \"from-file\"\nprovider: \"tcp\"\nrpc_timeout_ms: 1234\n";
  auto [code, out] = run(dir, {runfile("daemon/epxd"), "--config", conf, "--node-name", "from-flag", "--check-config"});
  CHECK(code == 0);
  CHECK(out.find("from-flag") != std::string::npos);
  CHECK(out.find("from-file") == std::string::npos);
  CHECK(out.find("1234") != std::string::npos);
}

TEST_CASE("a provider that is not there is a startup error listing those that are") {
  TempDir dir;
  auto [code, out] = run(dir, {runfile("daemon/epxd"), "--provider", "efa", "--control-socket", dir.path() + "/x.sock",
                               "--peer-listen", "127.0.0.1:0"});
  CHECK(code == 2);
  CHECK(out.find("'efa' is not available") != std::string::npos);
  CHECK(out.find("tcp") != std::string::npos);  // listed as present
}

TEST_CASE("a second daemon on the same socket refuses to start") {
  TempDir dir;
  DaemonProcess a(dir, {"a"});
  auto [code, out] = run(dir, {runfile("daemon/epxd"), "--control-socket", a.socket(), "--peer-listen", "127.0.0.1:0",
                               "--provider", "tcp", "--rail-domains", "lo"});
  CHECK(code == 2);
  CHECK(out.find("already serving") != std::string::npos);
  CHECK(a.process().running());
}

TEST_CASE("epxctl status, jobs and ping against a live daemon; the socket is 0660") {
  TempDir dir;
  DaemonProcess a(dir, {"a", "shm"});
  auto [code, out] = a.epxctl({"status"});
  CHECK(code == 0);
  CHECK(out.find("node a") != std::string::npos);
  CHECK(out.find("view: all") != std::string::npos);  // the test runs as root or as the daemon's user
  CHECK(out.find("shm") != std::string::npos);
  CHECK(out.find("held to the per-job in-flight bounds") != std::string::npos);  // shm: single_job_bound auto
  auto [cj, json] = a.epxctl({"status", "--json"});
  CHECK(cj == 0);
  CHECK(json.find("\"rails\"") != std::string::npos);
  CHECK(json.find("\"loneJobBound\": true") != std::string::npos);
  CHECK(json.find("\"peerAddress\"") != std::string::npos);
  auto [cp, ping] = a.epxctl({"ping"});
  CHECK(cp == 0);
  auto [cpp, peer] = a.epxctl({"ping", "--peer", a.peer_address()});
  CHECK(cpp == 0);
  CHECK(peer.find("on a") != std::string::npos);
  auto [cbad, bad] = a.epxctl({"ping", "--peer", "127.0.0.1:1", "--timeout-ms", "500"});
  CHECK(cbad == 1);
  CHECK(bad.find("127.0.0.1:1") != std::string::npos);
  auto [cu, usage] = a.epxctl({"frobnicate"});
  CHECK(cu == 2);

  struct stat st;
  REQUIRE(::stat(a.socket().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0660);
}

TEST_CASE("SIGHUP reopens the log file and the daemon keeps serving") {
  TempDir dir;
  const std::string log = dir.path() + "/epxd-file.log";
  DaemonProcess a(dir, {"a", "tcp", {"--log-file", log}});
  std::rename(log.c_str(), (log + ".1").c_str());  // logrotate
  a.process().signal(SIGHUP);
  const bool reopened = wait_until(
      [&] {
        std::ifstream in(log);
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        return text.find("logs reopened") != std::string::npos;
      },
      5s);
  CHECK_MESSAGE(reopened, "no \"logs reopened\" in " << log << " within 5 s of SIGHUP");
  CHECK(a.epxctl({"ping"}).first == 0);
}

TEST_CASE("SIGHUP applies the config file's job weights to running jobs; a bad file changes nothing") {
  TempDir dir;
  const std::string conf = dir.path() + "/weights.conf";
  std::ofstream(conf) << "job_weights { job: \"w-*\" weight: 2 }\n";
  DaemonProcess a(dir, {"a", "tcp", {"--config", conf}});
  auto client = a.connect();
  auto job = client->join(join_options("w-1", 1, 0, a.peer_address()));
  REQUIRE_MESSAGE(job.ok(), job.status().to_string());

  std::ofstream(conf) << "job_weights { job: \"w-*\" weight: 2 }\njob_weights { job: \"w-1\" weight: 7 }\n";
  a.process().signal(SIGHUP);
  CHECK(a.process().wait_output("job w-1 weighs 7", 10s));

  std::ofstream(conf) << "job_weights { job: \"w-1\" weight: 5000 }\n";
  a.process().signal(SIGHUP);
  CHECK(a.process().wait_output("job weights unchanged", 10s));
  CHECK(a.process().output().find("not in 1..1000") != std::string::npos);
  CHECK(a.process().output().find("weighs 5000") == std::string::npos);
  CHECK(a.process().running());
}
