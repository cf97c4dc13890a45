#include <grpcpp/grpcpp.h>

#include <iostream>
#include <thread>

#include "epx/v1/local.grpc.pb.h"
#include "grpc_status.h"
#include "tools/ctl/commands.h"

namespace epx::ctl {
namespace {

// "job-a (ranks 0,1 here), job-b (coordinated here)".
std::string describe(const v1::DaemonStatus& st) {
  std::string out;
  for (const auto& j : st.jobs()) {
    std::string ranks;
    for (const auto& m : j.members()) {
      if (m.present() && (m.node().empty() || m.node() == st.node())) {
        ranks += (ranks.empty() ? "" : ",") + std::to_string(m.rank());
      }
    }
    out += (out.empty() ? "" : ", ") + j.job_id() + " (" +
           (ranks.empty() ? std::string("coordinated here") : "ranks " + ranks + " here") + ")";
  }
  return out;
}

}  // namespace

int drain(const std::string& socket, const DrainOptions& options, std::chrono::milliseconds timeout) {
  auto stub = v1::Local::NewStub(grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  v1::DrainRequest request;
  request.set_cancel(options.cancel);
  v1::DrainReply reply;
  grpc::Status s = stub->Drain(&ctx, request, &reply);
  if (!s.ok()) {
    std::cerr << "epxctl: " << from_grpc(s).with_context("drain of epxd at " + socket).to_string() << "\n";
    return 1;
  }
  if (options.cancel) {
    std::cout << "drain cancelled: epxd at " << socket << " accepts joins again\n";
    return 0;
  }
  const auto start = std::chrono::steady_clock::now();
  std::cout << "draining epxd at " << socket << ": new joins are refused; " << reply.jobs_size() << " job(s) running"
            << std::endl;
  for (;;) {
    auto st = fetch_status(socket, timeout);
    if (!st.ok()) {
      std::cerr << "epxctl: " << st.status().to_string() << "\n";
      return 1;
    }
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    if (st->jobs_size() == 0) {
      std::cout << "drained: no job left on " << st->node() << " after " << waited.count()
                << " ms; epxd may be stopped now (systemctl stop epxd, or delete the pod)" << std::endl;
      return 0;
    }
    if (waited >= options.wait) {
      std::cerr << "epxctl: drain deadline of " << options.wait.count() << " ms passed with " << st->jobs_size()
                << " job(s) still on " << st->node() << ": " << describe(*st)
                << "; epxd goes on refusing joins (epxctl drain --cancel takes them again); stopping it now ends these "
                   "jobs\n";
      return 1;
    }
    std::this_thread::sleep_for(std::min(options.poll, options.wait - waited));
  }
}

}  // namespace epx::ctl
