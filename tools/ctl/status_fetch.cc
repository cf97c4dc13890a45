#include <grpcpp/grpcpp.h>

#include "epx/v1/local.grpc.pb.h"
#include "grpc_status.h"
#include "tools/ctl/commands.h"

namespace epx::ctl {

Result<v1::DaemonStatus> fetch_status(const std::string& socket, std::chrono::milliseconds timeout, bool own_only) {
  auto stub = v1::Local::NewStub(grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  v1::DaemonStatus reply;
  v1::StatusRequest request;
  request.set_own_only(own_only);
  grpc::Status s = stub->Status(&ctx, request, &reply);
  if (!s.ok()) return from_grpc(s).with_context("epxd at " + socket);
  return reply;
}

}  // namespace epx::ctl
