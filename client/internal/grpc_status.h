// Conversions between epx::Status and grpc::Status at the control-plane edge.
#pragma once

#include <grpcpp/support/status.h>

#include "epx/status.h"

namespace epx {

inline grpc::Status to_grpc(const Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), s.message());
}

inline Status from_grpc(const grpc::Status& s) {
  return Status(static_cast<StatusCode>(s.error_code()), s.error_message());
}

}  // namespace epx
