#include "daemon/shutdown_bound.h"

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <future>
#include <thread>

using namespace epx::daemon;
using namespace std::chrono_literals;

TEST_CASE("a shutdown that finishes in time never triggers the bound") {
  std::atomic<int> expired{0};
  {
    ShutdownBound bound([&](const std::string&, std::chrono::milliseconds) { ++expired; });
    bound.arm(200ms, "leaving jobs");
    bound.stage("stopping servers");
    bound.disarm();
    std::this_thread::sleep_for(400ms);  // well past the limit
  }
  CHECK(expired == 0);
}

TEST_CASE("a stuck shutdown is reported once, naming the stage it is stuck in") {
  std::promise<std::pair<std::string, std::chrono::milliseconds>> reported;
  auto result = reported.get_future();
  std::atomic<int> calls{0};
  ShutdownBound bound([&](const std::string& stage, std::chrono::milliseconds limit) {
    if (calls++ == 0) reported.set_value({stage, limit});
  });
  bound.arm(100ms, "leaving jobs");
  bound.stage("stopping the Local gRPC server");
  bound.arm(5s, "arming again changes only the stage");  // the first limit holds
  bound.stage("stopping the Local gRPC server");
  REQUIRE(result.wait_for(10s) == std::future_status::ready);  // generous: only that it comes
  auto [stage, limit] = result.get();
  CHECK(stage == "stopping the Local gRPC server");
  CHECK(limit == 100ms);
}

TEST_CASE("the default action ends the process with status 3 even when its main thread is stuck") {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ShutdownBound bound;  // exit_process
    bound.arm(100ms, "a stage that never ends");
    for (;;) ::pause();  // a main thread stuck for good
  }
  int status = 0;
  pid_t done = 0;
  for (int i = 0; i < 200 && done == 0; ++i) {  // up to 10 s
    done = ::waitpid(pid, &status, WNOHANG);
    if (done == 0) std::this_thread::sleep_for(50ms);
  }
  if (done == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    FAIL("the bound did not end the process");
  }
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == ShutdownBound::kExitCode);
}
