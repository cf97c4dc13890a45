#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

#include "epx/status.h"
#include "grpc_status.h"

using namespace epx;

TEST_CASE("status text and context") {
  CHECK(Status().to_string() == "OK");
  Status s = invalid_argument("rank 7 out of range");
  CHECK(s.to_string() == "INVALID_ARGUMENT: rank 7 out of range");
  CHECK(s.with_context("join j").message() == "join j: rank 7 out of range");
  CHECK(Status().with_context("x").ok());
}

TEST_CASE("every status code maps to gRPC and back unchanged") {
  for (int code = 0; code <= 16; ++code) {
    Status s(static_cast<StatusCode>(code), code == 0 ? "" : "m" + std::to_string(code));
    grpc::Status g = to_grpc(s);
    CHECK(static_cast<int>(g.error_code()) == code);
    Status back = from_grpc(g);
    CHECK(back.code() == s.code());
    CHECK(back.message() == s.message());
    CHECK(std::string(status_code_name(s.code())) != "UNKNOWN_CODE");
  }
}

TEST_CASE("Result holds a value or an error") {
  Result<int> v(5);
  CHECK(v.ok());
  CHECK(*v == 5);
  Result<int> e(not_found("window 3"));
  CHECK_FALSE(e.ok());
  CHECK(e.status().code() == StatusCode::kNotFound);
}

namespace {

Result<int> half(int x) {
  if (x % 2) return invalid_argument(std::to_string(x) + " is odd");
  return x / 2;
}

Result<int> quarter(int x) {
  EPX_ASSIGN_OR_RETURN(int h, half(x));
  EPX_ASSIGN_OR_RETURN(int q, half(h));
  return q;
}

Status check_even(int x) {
  EPX_ASSIGN_OR_RETURN(auto h, half(x));
  (void)h;
  return Status();
}

}  // namespace

TEST_CASE("EPX_ASSIGN_OR_RETURN passes values on and returns the first error") {
  CHECK(*quarter(8) == 2);
  Result<int> e = quarter(6);  // 6 -> 3 -> odd
  REQUIRE_FALSE(e.ok());
  CHECK(e.status().message() == "3 is odd");
  CHECK(check_even(4).ok());
  CHECK(check_even(5).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("Result built from an OK status is an error, not an empty value") {
  Result<int> r{Status()};
  CHECK_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kInternal);
}

TEST_CASE("value() of an error aborts in every build mode") {
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(2);  // keep the test log clean
    Result<int> e(not_found("window 3"));
    int v = e.value();
    _exit(v == 12345 ? 3 : 4);  // never reached: value() aborts
  }
  int wstatus = 0;
  REQUIRE(waitpid(child, &wstatus, 0) == child);
  CHECK(WIFSIGNALED(wstatus));
  CHECK(WTERMSIG(wstatus) == SIGABRT);
}
