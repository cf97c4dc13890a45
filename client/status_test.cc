#include <doctest/doctest.h>

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
