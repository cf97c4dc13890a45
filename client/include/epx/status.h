// epx::Status and epx::Result<T>: the one error type of the EPX SDK and daemon.
//
// Codes follow gRPC's canonical codes so a status crosses the control plane
// unchanged. Nothing in EPX throws across a module boundary: every call that
// can fail returns a Status (or a Result<T> holding either a value or a
// non-OK Status) whose message says what failed and with which rank, window,
// rail or file.
#pragma once

#include <optional>
#include <string>
#include <utility>

namespace epx {

enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

// Upper-case name as gRPC spells it ("INVALID_ARGUMENT").
const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok_status() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "INVALID_ARGUMENT: rank 7 out of range for world 4"; "OK" when ok().
  std::string to_string() const;

  // Same code, message prefixed with what the caller was doing.
  Status with_context(const std::string& context) const {
    if (ok()) return *this;
    return Status(code_, context + ": " + message_);
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string m) { return Status(StatusCode::kInvalidArgument, std::move(m)); }
inline Status not_found(std::string m) { return Status(StatusCode::kNotFound, std::move(m)); }
inline Status already_exists(std::string m) { return Status(StatusCode::kAlreadyExists, std::move(m)); }
inline Status failed_precondition(std::string m) { return Status(StatusCode::kFailedPrecondition, std::move(m)); }
inline Status unavailable(std::string m) { return Status(StatusCode::kUnavailable, std::move(m)); }
inline Status deadline_exceeded(std::string m) { return Status(StatusCode::kDeadlineExceeded, std::move(m)); }
inline Status internal_error(std::string m) { return Status(StatusCode::kInternal, std::move(m)); }
inline Status resource_exhausted(std::string m) { return Status(StatusCode::kResourceExhausted, std::move(m)); }
inline Status permission_denied(std::string m) { return Status(StatusCode::kPermissionDenied, std::move(m)); }

// Reading value() of an error Result is a programming error: it prints the
// status and aborts, in every build mode (never undefined behaviour).
[[noreturn]] void abort_on_error_value(const Status& status);

// Either a T or a non-OK Status. Callers check ok() first; value() of an
// error aborts with the status (abort_on_error_value).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status)  // NOLINT: implicit by design
      : status_(status.ok() ? Status(StatusCode::kInternal, "Result<T> built from an OK status carries no value")
                            : std::move(status)) {}

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & {
    if (!ok()) abort_on_error_value(status_);
    return *value_;
  }
  const T& value() const& {
    if (!ok()) abort_on_error_value(status_);
    return *value_;
  }
  T&& value() && {
    if (!ok()) abort_on_error_value(status_);
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace epx

// Returns the status from the enclosing function when it is not OK.
#define EPX_RETURN_IF_ERROR(expr)             \
  do {                                        \
    ::epx::Status epx_status_tmp_ = (expr);   \
    if (!epx_status_tmp_.ok()) return epx_status_tmp_; \
  } while (0)

#define EPX_STATUS_CONCAT_INNER_(a, b) a##b
#define EPX_STATUS_CONCAT_(a, b) EPX_STATUS_CONCAT_INNER_(a, b)

// `EPX_ASSIGN_OR_RETURN(auto x, make_x());` declares x from a Result's value,
// or returns the Result's status from the enclosing function. The enclosing
// function returns Status or a Result of any type.
#define EPX_ASSIGN_OR_RETURN(lhs, expr) \
  EPX_ASSIGN_OR_RETURN_IMPL_(EPX_STATUS_CONCAT_(epx_result_tmp_, __LINE__), lhs, expr)
#define EPX_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()
