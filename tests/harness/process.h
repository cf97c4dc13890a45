// Child processes for integration tests: real binaries (epxd, epxctl), their
// stdout+stderr in a file, stdin as a pipe the test can close.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace epx::test {

// A temporary directory removed (recursively) on destruction. Short paths
// under /tmp: unix socket paths are limited to 107 bytes.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class Process {
 public:
  // Starts argv[0] with the given arguments; output goes to `log_path`.
  // The child's environment is this process's with `env` ("NAME=value")
  // set over it.
  Process(std::vector<std::string> argv, std::string log_path, std::vector<std::string> env = {});
  ~Process();  // SIGKILLs a process still running
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int signo) const;
  void close_stdin();
  // Exit code (128+signal when killed), or nullopt if still running at the timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  bool running();
  std::string output() const;  // everything written so far
  // Waits until output() contains `text`.
  bool wait_output(const std::string& text, std::chrono::milliseconds timeout) const;

 private:
  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  std::optional<int> exit_code_;
  std::string log_path_;
};

// Polls `done` until it returns true (then true) or `timeout` has passed
// (then false). For waiting on an event the test can observe, never for
// ordering by time alone.
bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout);

// Path of a binary in this test's runfiles ("daemon/epxd").
std::string runfile(const std::string& path);

}  // namespace epx::test
