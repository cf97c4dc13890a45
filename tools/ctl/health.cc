#include <grpcpp/grpcpp.h>

#include <iostream>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc_status.h"
#include "tools/ctl/commands.h"
#include "tools/ctl/http_get.h"

namespace epx::ctl {
namespace {

using grpc::health::v1::HealthCheckResponse;

Result<HealthCheckResponse::ServingStatus> check(grpc::health::v1::Health::Stub& stub, const std::string& service,
                                                 std::chrono::milliseconds timeout) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  HealthCheckResponse reply;
  grpc::Status s = stub.Check(&ctx, request, &reply);
  if (!s.ok()) return from_grpc(s).with_context("grpc.health.v1 Check('" + service + "')");
  return reply.status();
}

}  // namespace

int health(const std::string& socket, std::chrono::milliseconds timeout) {
  bool ok = true;
  auto stub =
      grpc::health::v1::Health::NewStub(grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()));
  for (const char* service : {"", "epx.v1.Local"}) {
    auto s = check(*stub, service, timeout);
    const std::string name = *service ? service : "server";
    if (!s.ok()) {
      std::cerr << "epxctl: epxd at " << socket << ": " << s.status().to_string() << "\n";
      return 1;
    }
    std::cout << "grpc health " << name << ": " << HealthCheckResponse::ServingStatus_Name(*s) << "\n";
    ok = ok && *s == HealthCheckResponse::SERVING;
  }
  auto st = fetch_status(socket, timeout);
  if (!st.ok()) {
    std::cerr << "epxctl: " << st.status().to_string() << "\n";
    return 1;
  }
  std::cout << "node " << st->node() << "  rails " << st->rails_size() << " (" << st->provider() << ")\n";
  if (st->rails_size() == 0) ok = false;
  if (!st->provider_fallback().empty()) std::cout << "warning: " << st->provider_fallback() << "\n";
  size_t down = 0;
  for (const auto& p : st->peers()) {
    std::cout << "peer " << p.address() << ": " << (p.up() ? "up" : "DOWN") << "\n";
    down += p.up() ? 0 : 1;
  }
  std::cout << "peers: " << st->peers_size() - down << " up, " << down << " down\n";
  ok = ok && down == 0;
  std::cout << "draining: " << (st->draining() ? "yes (new joins refused)" : "no") << "\n";
  ok = ok && !st->draining();
  if (!st->metrics_address().empty()) {
    auto ready = http_get(st->metrics_address(), "/readyz", timeout);
    if (!ready.ok()) {
      std::cout << "readyz: " << ready.status().to_string() << "\n";
      ok = false;
    } else {
      std::cout << "readyz (" << st->metrics_address() << "): " << ready->code << "\n" << ready->body;
      ok = ok && ready->code == 200;
    }
  }
  std::cout << (ok ? "ready" : "NOT READY") << "\n";
  return ok ? 0 : 1;
}

}  // namespace epx::ctl
