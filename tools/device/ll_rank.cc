// One rank of an LL job, as a serving engine runs it: its own process, its
// own Client and Job, a LowLatencyBuffer. Started N times by
// low_latency_job_test (correctness) and tools/device/ll_bench (timing).
//
// Every rank builds the whole job's inputs from the same seed and runs the
// CPU reference of the whole job (kernels/low_latency_reference.h), so it
// checks its own GPU outputs byte for byte without gathering anything.
//
// Modes:
//   check   the suite of shapes/options for this world size (below)
//   kill    rank --victim SIGKILLs itself at the start of call 3; the others
//           must see check() name it within the timeout, mask it, and get
//           correct results (its tokens absent, its experts' terms zero)
//   bench   DeepEP's LL test shape; prints one "LL_BENCH {json}" line on rank 0
// Exit status 0 on success; failures print "RANK_FAIL: <what>" first.
#include <cuda_runtime.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "epx/client.h"
#include "epx/cuda.h"
#include "epx/low_latency.h"
#include "kernels/fp8_reference.h"
#include "kernels/low_latency_inputs.h"
#include "kernels/low_latency_reference.h"
#include "tools/device/rank_process.h"

namespace epx {
namespace {

using kernels::LowLatencyDispatchOptions;
using kernels::LowLatencyJobInputs;
using kernels::LowLatencyReceived;
using kernels::LowLatencyShape;

using Args = RankArgs;

struct Config {
  int hidden, experts, topk, max_tokens;
};

struct Call {
  LowLatencyDispatchOptions options;
  int tokens;  // -1: random per rank
  bool hook = false;
  bool zero_copy = false;
};

std::string describe(const LowLatencyShape& s, const Call& c, uint32_t seed) {
  std::ostringstream o;
  o << "ranks=" << s.num_ranks << " experts=" << s.num_experts << " hidden=" << s.hidden << " topk=" << s.num_topk
    << " max_tokens=" << s.max_tokens_per_rank << " tokens=" << c.tokens << " fp8=" << c.options.use_fp8
    << " round_scale=" << c.options.round_scale << " ue8m0=" << c.options.use_ue8m0 << " hook=" << c.hook
    << " zero_copy=" << c.zero_copy << " seed=" << seed;
  return o.str();
}

// The whole job's expected outputs for one call.
struct Expected {
  std::vector<LowLatencyReceived> received;
  std::vector<std::vector<uint16_t>> expert_out;  // per rank
  std::vector<std::vector<uint16_t>> combined;    // per rank
};

Expected reference(const LowLatencyJobInputs& job, const LowLatencyDispatchOptions& o, uint32_t seed) {
  Expected e;
  ok_or_fail(kernels::low_latency_dispatch_reference(job.shape, o, job.inputs, &e.received), "dispatch reference");
  std::vector<const uint16_t*> ptrs;
  for (int r = 0; r < job.shape.num_ranks; ++r) {
    e.expert_out.push_back(kernels::random_expert_outputs(job.shape, e.received[r], seed * 131 + r));
  }
  for (auto& y : e.expert_out) ptrs.push_back(y.data());
  ok_or_fail(kernels::low_latency_combine_reference(job.shape, job.inputs, e.received, ptrs, &e.combined),
             "combine reference");
  return e;
}

// Compares this rank's dispatch outputs with the reference; "" when equal.
std::string compare_dispatch(const LowLatencyShape& s, const LowLatencyDispatchOptions& o,
                             const LowLatencyReceived& want, const LowLatencyDispatchResult& got) {
  const int local = s.local_experts(), rows = s.rows_per_expert();
  const auto count = download<int32_t>(got.recv_count, local);
  const auto layout = download<int64_t>(got.handle.layout_range, static_cast<size_t>(local) * s.num_ranks);
  const auto src = download<int32_t>(got.handle.src_info, s.total_rows());
  const size_t row_bytes = kernels::low_latency_row_bytes(s, o);
  const auto x = download<uint8_t>(got.recv_x, s.total_rows() * row_bytes);
  for (int e = 0; e < local; ++e) {
    if (count[e] != want.recv_count[e]) {
      return "recv_count[" + std::to_string(e) + "] = " + std::to_string(count[e]) + ", want " +
             std::to_string(want.recv_count[e]);
    }
    for (int r = 0; r < s.num_ranks; ++r) {
      const size_t i = static_cast<size_t>(e) * s.num_ranks + r;
      if (layout[i] != want.layout_range[i]) {
        return "layout_range[" + std::to_string(e) + "][" + std::to_string(r) + "] = " + std::to_string(layout[i]) +
               ", want " + std::to_string(want.layout_range[i]);
      }
    }
    for (int row = 0; row < count[e]; ++row) {
      const size_t at = static_cast<size_t>(e) * rows + row;
      if (src[at] != want.src_info[at]) {
        return "src_info[" + std::to_string(e) + "][" + std::to_string(row) + "] = " + std::to_string(src[at]) +
               ", want " + std::to_string(want.src_info[at]);
      }
      if (std::memcmp(x.data() + at * row_bytes, want.recv_x.data() + at * row_bytes, row_bytes) != 0) {
        return "recv_x row " + std::to_string(row) + " of local expert " + std::to_string(e) + " differs";
      }
    }
  }
  if (o.use_fp8 && !o.use_ue8m0) {
    const int blocks = s.hidden / kernels::kFp8BlockSize;
    const auto sc = download<float>(got.recv_scales, static_cast<size_t>(local) * blocks * rows);
    for (int e = 0; e < local; ++e) {
      for (int b = 0; b < blocks; ++b) {
        for (int row = 0; row < count[e]; ++row) {
          const size_t at = (static_cast<size_t>(e) * blocks + b) * rows + row;
          if (std::memcmp(&sc[at], &want.scales[at], sizeof(float)) != 0) {
            return "scale of local expert " + std::to_string(e) + " block " + std::to_string(b) + " row " +
                   std::to_string(row) + " = " + std::to_string(sc[at]) + ", want " + std::to_string(want.scales[at]);
          }
        }
      }
    }
  }
  if (o.use_ue8m0) {
    const int words = s.hidden / kernels::kUe8m0ChannelsPerWord;
    const auto sc = download<int32_t>(got.recv_scales, static_cast<size_t>(local) * words * rows);
    for (int e = 0; e < local; ++e) {
      for (int w = 0; w < words; ++w) {
        for (int row = 0; row < count[e]; ++row) {
          const size_t at = (static_cast<size_t>(e) * words + w) * rows + row;
          if (sc[at] != want.ue8m0_scales[at]) {
            return "UE8M0 word " + std::to_string(w) + " of local expert " + std::to_string(e) + " row " +
                   std::to_string(row) + " differs";
          }
        }
      }
    }
  }
  return "";
}

std::string compare_combine(const LowLatencyShape& s, int tokens, const std::vector<uint16_t>& want, const void* got) {
  const auto out = download<uint16_t>(got, static_cast<size_t>(tokens) * s.hidden);
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] != want[i]) {
      return "combined token " + std::to_string(i / s.hidden) + " channel " + std::to_string(i % s.hidden) + " = " +
             std::to_string(kernels::bf16_to_float(out[i])) + ", want " +
             std::to_string(kernels::bf16_to_float(want[i]));
    }
  }
  return "";
}

// One dispatch + combine through `buffer` on `stream`, checked.
void run_call(LowLatencyBuffer& buffer, const LowLatencyShape& s, const Args& args, const Call& c, uint32_t seed,
              cudaStream_t stream) {
  const LowLatencyJobInputs job = LowLatencyJobInputs::random(s, seed, c.tokens);
  const Expected want = reference(job, c.options, seed);
  const int me = static_cast<int>(args.rank);
  const int tokens = job.inputs[me].num_tokens;
  DeviceArray<uint16_t> x(job.x[me]);
  DeviceArray<int64_t> topk(job.topk[me]);
  DeviceArray<float> weights(job.weights[me]);
  LowLatencyDispatchFlags flags;
  flags.use_fp8 = c.options.use_fp8;
  flags.round_scale = c.options.round_scale;
  flags.use_ue8m0 = c.options.use_ue8m0;
  flags.return_recv_hook = c.hook;
  const std::string what = describe(s, c, seed);
  auto d = buffer.low_latency_dispatch(x.get(), topk.get(), tokens, flags, stream);
  if (!d.ok()) fail("dispatch (" + what + "): " + d.status().to_string());
  if (c.hook) ok_or_fail(d->hook(), "dispatch hook (" + what + ")");
  cuda_or_fail(cudaStreamSynchronize(stream), "dispatch (" + what + ")");
  ok_or_fail(buffer.check(), "dispatch (" + what + ")");
  const std::string diff = compare_dispatch(s, c.options, want.received[me], *d);
  if (!diff.empty()) fail("dispatch (" + what + "): " + diff);

  LowLatencyCombineFlags cflags;
  cflags.return_recv_hook = c.hook;
  cflags.zero_copy = c.zero_copy;
  DeviceArray<uint16_t> y(want.expert_out[me]);
  const void* y_ptr = y.get();
  if (c.zero_copy) {
    auto zc = buffer.get_next_low_latency_combine_buffer(d->handle);
    if (!zc.ok()) fail("zero-copy buffer: " + zc.status().to_string());
    // On the call's stream: a device-to-device cudaMemcpy returns before it
    // is done and does not order with non-blocking streams.
    cuda_or_fail(cudaMemcpyAsync(*zc, y.get(), want.expert_out[me].size() * 2, cudaMemcpyDeviceToDevice, stream),
                 "fill zero-copy");
    y_ptr = nullptr;
  }
  auto cb = buffer.low_latency_combine(y_ptr, topk.get(), weights.get(), d->handle, cflags, stream);
  if (!cb.ok()) fail("combine (" + what + "): " + cb.status().to_string());
  if (c.hook) ok_or_fail(cb->hook(), "combine hook (" + what + ")");
  cuda_or_fail(cudaStreamSynchronize(stream), "combine (" + what + ")");
  ok_or_fail(buffer.check(), "combine (" + what + ")");
  const std::string cdiff = compare_combine(s, tokens, want.combined[me], cb->combined_x);
  if (!cdiff.empty()) fail("combine (" + what + "): " + cdiff);
}

// The job's signal array, opened once (a rank has one per job) and lent to
// each buffer at fresh words.
struct SignalPool {
  std::unique_ptr<CudaSignals> signals;
  uint32_t next = 0;
};
SignalPool* g_pool = nullptr;

std::unique_ptr<LowLatencyBuffer> make_buffer(Job& job, const Args& args, const Config& c) {
  LowLatencyOptions o;
  if (g_pool->signals == nullptr) {
    auto opened = CudaSignals::open(job, 64 * 4 * args.world);
    if (!opened.ok()) fail("open signals: " + opened.status().to_string());
    g_pool->signals = std::move(*opened);
  }
  o.signals = g_pool->signals.get();
  o.signal_base = g_pool->next;
  g_pool->next += 4 * args.world;
  if (g_pool->next > 64 * 4 * args.world) fail("more than 64 buffers in one job");
  o.num_max_dispatch_tokens_per_rank = c.max_tokens;
  o.hidden = c.hidden;
  o.num_experts = c.experts;
  o.num_topk = c.topk;
  o.device = args.device;
  o.timeout = std::chrono::milliseconds(args.timeout_ms);
  auto b = LowLatencyBuffer::create(job, o);
  if (!b.ok()) fail("LowLatencyBuffer::create: " + b.status().to_string());
  return std::move(*b);
}

LowLatencyShape shape_of(const Args& args, const Config& c) {
  return LowLatencyShape{static_cast<int>(args.world), c.experts, c.hidden, c.max_tokens, c.topk};
}

void check_suite(Job& job, const Args& args, cudaStream_t stream) {
  const bool big = args.world <= 2;
  const std::vector<Config> configs =
      big ? std::vector<Config>{{2048, 16, 1, 256}, {4096, 24, 4, 256}, {7168, 24, 8, 256}, {7168, 36, 9, 128}}
          : std::vector<Config>{{2048, 32, 8, 32}, {7168, 32, 9, 8}};
  const LowLatencyDispatchOptions fp8{true, false, false}, fp8_round{true, true, false}, ue8m0{true, true, true},
      bf16{false, false, false};
  uint32_t seed = 1000;
  for (const Config& c : configs) {
    auto buffer = make_buffer(job, args, c);
    const LowLatencyShape s = shape_of(args, c);
    std::vector<Call> calls = {{fp8, 1},
                               {fp8, 7},
                               {fp8_round, c.max_tokens},
                               {bf16, -1},
                               {fp8, -1, true},
                               {bf16, 7, false, true},
                               {fp8, c.max_tokens, true, true}};
    if (c.hidden % kernels::kUe8m0ChannelsPerWord == 0) calls.push_back({ue8m0, -1});
    for (int t : {128, 256}) {
      if (t <= c.max_tokens) calls.push_back({fp8, t});
    }
    for (const Call& call : calls) run_call(*buffer, s, args, call, ++seed, stream);
    std::cout << "ok: " << describe(s, calls.back(), seed) << " and " << calls.size() - 1 << " more calls" << std::endl;
  }
  // Back-to-back calls alternating halves (checked every call).
  {
    const Config c{2048, static_cast<int>(args.world) * 4, 4, 32};
    auto buffer = make_buffer(job, args, c);
    const int n = big ? 1000 : 50;
    for (int i = 0; i < n; ++i) run_call(*buffer, shape_of(args, c), args, {i % 3 ? fp8 : bf16, -1}, 50000 + i, stream);
    std::cout << "ok: " << n << " back-to-back dispatch+combine calls" << std::endl;
  }
}

// A dispatch + combine captured once in a CUDA graph, replayed with new
// inputs copied into the captured input buffers before each replay.
void check_graph(Job& job, const Args& args, cudaStream_t stream) {
  const Config c{4096, static_cast<int>(args.world) * 4, 8, 64};
  const LowLatencyShape s = shape_of(args, c);
  auto buffer = make_buffer(job, args, c);
  const int me = static_cast<int>(args.rank);
  DeviceArray<uint16_t> x(static_cast<size_t>(c.max_tokens) * c.hidden);
  DeviceArray<int64_t> topk(static_cast<size_t>(c.max_tokens) * c.topk);
  DeviceArray<float> weights(static_cast<size_t>(c.max_tokens) * c.topk);
  DeviceArray<uint16_t> y(s.total_rows() * c.hidden);
  const int tokens = c.max_tokens;  // fixed: the graph holds the count
  const LowLatencyDispatchOptions o{true, false, false};
  LowLatencyDispatchFlags flags;
  LowLatencyDispatchResult d;
  LowLatencyCombineResult cb;
  cudaGraph_t graph;
  cuda_or_fail(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "begin capture");
  {
    auto dr = buffer->low_latency_dispatch(x.get(), topk.get(), tokens, flags, stream);
    if (!dr.ok()) fail("captured dispatch: " + dr.status().to_string());
    d = *dr;
    auto cr = buffer->low_latency_combine(y.get(), topk.get(), weights.get(), d.handle, {}, stream);
    if (!cr.ok()) fail("captured combine: " + cr.status().to_string());
    cb = *cr;
  }
  cuda_or_fail(cudaStreamEndCapture(stream, &graph), "end capture");
  cudaGraphExec_t exec;
  cuda_or_fail(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  const int replays = args.world <= 2 ? 100 : 20;
  for (int i = 0; i < replays; ++i) {
    const uint32_t seed = 70000 + i;
    const LowLatencyJobInputs in = LowLatencyJobInputs::random(s, seed, tokens);
    const Expected want = reference(in, o, seed);
    x.upload(in.x[me]);
    topk.upload(in.topk[me]);
    weights.upload(in.weights[me]);
    y.upload(want.expert_out[me]);
    cuda_or_fail(cudaGraphLaunch(exec, stream), "graph launch");
    cuda_or_fail(cudaStreamSynchronize(stream), "graph replay " + std::to_string(i));
    ok_or_fail(buffer->check(), "graph replay " + std::to_string(i));
    std::string diff = compare_dispatch(s, o, want.received[me], d);
    if (diff.empty()) diff = compare_combine(s, tokens, want.combined[me], cb.combined_x);
    if (!diff.empty()) fail("graph replay " + std::to_string(i) + ": " + diff);
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  std::cout << "ok: a CUDA graph of dispatch+combine replayed " << replays << " times with new inputs" << std::endl;
}

// Rank `victim` dies at call 3; the survivors must be told, mask it and go on.
void check_kill(Client& client, Job& job, const Args& args, cudaStream_t stream) {
  const Config c{2048, static_cast<int>(args.world) * 4, 4, 32};
  const LowLatencyShape s = shape_of(args, c);
  auto buffer = make_buffer(job, args, c);
  const LowLatencyDispatchOptions o{true, false, false};
  for (int i = 0; i < 3; ++i) run_call(*buffer, s, args, {o, -1}, 90000 + i, stream);
  if (static_cast<int>(args.rank) == args.victim) {
    std::cout << "victim: dying now" << std::endl;
    raise(SIGKILL);
  }
  // The call the victim never joins: the receive gives up after the timeout
  // and check() names the rank.
  const auto start = std::chrono::steady_clock::now();
  const LowLatencyJobInputs in = LowLatencyJobInputs::random(s, 90003, -1);
  DeviceArray<uint16_t> x(in.x[args.rank]);
  DeviceArray<int64_t> topk(in.topk[args.rank]);
  auto d = buffer->low_latency_dispatch(x.get(), topk.get(), in.inputs[args.rank].num_tokens, {}, stream);
  if (!d.ok()) fail("dispatch after the kill: " + d.status().to_string());
  cuda_or_fail(cudaStreamSynchronize(stream), "dispatch after the kill");
  const Status st = buffer->check();
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (st.ok()) fail("dispatch without rank " + std::to_string(args.victim) + " reported no error");
  if (st.message().find("rank " + std::to_string(args.victim)) == std::string::npos) {
    fail("the error does not name rank " + std::to_string(args.victim) + ": " + st.to_string());
  }
  if (waited > args.timeout_ms / 1000.0 + 10) fail("the error took " + std::to_string(waited) + " s");
  std::cout << "ok: after " << waited << " s: " << st.to_string() << std::endl;
  // The daemon's RankLost arrives on the session; check() masks lost ranks.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::find(buffer->masked_ranks().begin(), buffer->masked_ranks().end(), static_cast<uint32_t>(args.victim)) ==
         buffer->masked_ranks().end()) {
    if (std::chrono::steady_clock::now() > deadline)
      fail("rank " + std::to_string(args.victim) + " never reported lost");
    (void)client.next_event(std::chrono::milliseconds(100));
    (void)buffer->check();
  }
  // Masked: the victim's tokens are absent and its experts' terms are zero,
  // which is the reference with its tokens gone and its experts never chosen.
  for (int i = 0; i < 5; ++i) {
    const uint32_t seed = 91000 + i;
    LowLatencyJobInputs shrunk = LowLatencyJobInputs::random(s, seed, -1);
    LowLatencyJobInputs sent = shrunk;  // what the survivors dispatch
    shrunk.x[args.victim].clear();
    shrunk.topk[args.victim].clear();
    shrunk.weights[args.victim].clear();
    for (auto& rank_topk : shrunk.topk) {
      for (auto& e : rank_topk) {
        if (e >= 0 && e / s.local_experts() == args.victim) e = -1;
      }
    }
    shrunk.refresh_views();
    const Expected want = reference(shrunk, o, seed);
    const int me = static_cast<int>(args.rank);
    DeviceArray<uint16_t> xs(sent.x[me]);
    DeviceArray<int64_t> ts(sent.topk[me]);
    DeviceArray<float> ws(sent.weights[me]);
    auto dd = buffer->low_latency_dispatch(xs.get(), ts.get(), sent.inputs[me].num_tokens, {}, stream);
    if (!dd.ok()) fail("masked dispatch: " + dd.status().to_string());
    cuda_or_fail(cudaStreamSynchronize(stream), "masked dispatch");
    ok_or_fail(buffer->check(), "masked dispatch " + std::to_string(i));
    std::string diff = compare_dispatch(s, o, want.received[me], *dd);
    if (!diff.empty()) fail("masked dispatch " + std::to_string(i) + ": " + diff);
    DeviceArray<uint16_t> y(want.expert_out[me]);
    auto cb = buffer->low_latency_combine(y.get(), ts.get(), ws.get(), dd->handle, {}, stream);
    if (!cb.ok()) fail("masked combine: " + cb.status().to_string());
    cuda_or_fail(cudaStreamSynchronize(stream), "masked combine");
    ok_or_fail(buffer->check(), "masked combine " + std::to_string(i));
    diff = compare_combine(s, sent.inputs[me].num_tokens, want.combined[me], cb->combined_x);
    if (!diff.empty()) fail("masked combine " + std::to_string(i) + ": " + diff);
  }
  std::cout << "ok: 5 calls without rank " << args.victim << " after masking it" << std::endl;
}

double elapsed_us(cudaEvent_t a, cudaEvent_t b, int n) {
  float ms = 0;
  cuda_or_fail(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
  return ms * 1000.0 / n;
}

// Times dispatch, combine and both, back to back on one stream; every rank
// runs the same loops, so each call waits for its peers as in serving.
void bench(Job& job, const Args& args, cudaStream_t stream) {
  const Config c{args.hidden, args.experts, args.topk, args.tokens};
  const LowLatencyShape s = shape_of(args, c);
  auto buffer = make_buffer(job, args, c);
  const int me = static_cast<int>(args.rank);
  const LowLatencyJobInputs in = LowLatencyJobInputs::random(s, 4242, args.tokens, 0, 0);
  DeviceArray<uint16_t> x(in.x[me]);
  DeviceArray<int64_t> topk(in.topk[me]);
  DeviceArray<float> weights(in.weights[me]);
  DeviceArray<uint16_t> y(s.total_rows() * s.hidden);
  cuda_or_fail(cudaMemset(y.get(), 0, s.total_rows() * s.hidden * 2), "memset y");
  LowLatencyDispatchFlags flags;
  LowLatencyDispatchResult last;
  auto dispatch = [&](bool hook) {
    flags.return_recv_hook = hook;
    auto d = buffer->low_latency_dispatch(x.get(), topk.get(), args.tokens, flags, stream);
    if (!d.ok()) fail("dispatch: " + d.status().to_string());
    last = *d;
  };
  auto combine = [&](bool hook) {
    LowLatencyCombineFlags f;
    f.return_recv_hook = hook;
    auto cb = buffer->low_latency_combine(y.get(), topk.get(), weights.get(), last.handle, f, stream);
    if (!cb.ok()) fail("combine: " + cb.status().to_string());
    return *cb;
  };
  cudaEvent_t e0, e1, e2;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  cudaEventCreate(&e2);
  for (int i = 0; i < 20; ++i) {
    dispatch(false);
    combine(false);
  }
  cuda_or_fail(cudaStreamSynchronize(stream), "warm-up");
  ok_or_fail(buffer->check(), "warm-up");
  const int n = args.iters;
  std::map<std::string, double> us;
  ok_or_fail(job.barrier(), "barrier");
  cudaEventRecord(e0, stream);
  for (int i = 0; i < n; ++i) dispatch(false);
  cudaEventRecord(e1, stream);
  cuda_or_fail(cudaStreamSynchronize(stream), "dispatch loop");
  us["dispatch"] = elapsed_us(e0, e1, n);
  ok_or_fail(job.barrier(), "barrier");
  // Combine needs a dispatch's handle: pairs, minus the dispatch alone.
  cudaEventRecord(e0, stream);
  for (int i = 0; i < n; ++i) {
    dispatch(false);
    combine(false);
  }
  cudaEventRecord(e1, stream);
  cuda_or_fail(cudaStreamSynchronize(stream), "dispatch+combine loop");
  us["both"] = elapsed_us(e0, e1, n);
  us["combine"] = us["both"] - us["dispatch"];
  ok_or_fail(job.barrier(), "barrier");
  // The send/receive split with hooks: send, then receive, timed apart.
  double send = 0, recv = 0;
  for (int i = 0; i < n; ++i) {
    cudaEventRecord(e0, stream);
    dispatch(true);
    cudaEventRecord(e1, stream);
    ok_or_fail(last.hook(), "hook");
    cudaEventRecord(e2, stream);
    cuda_or_fail(cudaStreamSynchronize(stream), "hooked dispatch");
    send += elapsed_us(e0, e1, 1);
    recv += elapsed_us(e1, e2, 1);
    auto cb = combine(false);
    (void)cb;
  }
  us["dispatch_send"] = send / n;
  us["dispatch_recv"] = recv / n;
  cuda_or_fail(cudaStreamSynchronize(stream), "bench");
  ok_or_fail(job.barrier(), "barrier");
  // Each phase's stages apart, every rank in step (barriers): the send
  // kernel alone; the receive launched as soon as every rank's send kernel
  // finished (it still waits for the bytes in flight); and the receive
  // launched after a pause long enough for any transfer to land, which is
  // the receive kernel's own cost. "In flight" = the difference of the two.
  const int staged = std::min(n, 20);
  auto timed = [&](const std::function<void()>& enqueue) {
    cuda_or_fail(cudaEventRecord(e0, stream), "event");
    enqueue();
    cuda_or_fail(cudaEventRecord(e1, stream), "event");
    cuda_or_fail(cudaStreamSynchronize(stream), "staged call");
    return elapsed_us(e0, e1, 1);
  };
  for (const bool pause : {false, true}) {
    double d_send = 0, d_recv = 0, c_send = 0, c_recv = 0;
    for (int i = 0; i < staged; ++i) {
      std::function<Status()> hook;
      d_send += timed([&] { dispatch(true); });
      ok_or_fail(job.barrier(), "barrier");
      if (pause) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      d_recv += timed([&] { ok_or_fail(last.hook(), "dispatch hook"); });
      ok_or_fail(job.barrier(), "barrier");
      c_send += timed([&] { hook = combine(true).hook; });
      ok_or_fail(job.barrier(), "barrier");
      if (pause) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      c_recv += timed([&] { ok_or_fail(hook(), "combine hook"); });
      ok_or_fail(job.barrier(), "barrier");
    }
    const std::string when = pause ? "_landed" : "_after_send";
    us["staged_dispatch_send"] = d_send / staged;
    us["staged_combine_send"] = c_send / staged;
    us["staged_dispatch_recv" + when] = d_recv / staged;
    us["staged_combine_recv" + when] = c_recv / staged;
  }
  ok_or_fail(buffer->check(), "staged calls");
  ok_or_fail(buffer->check(), "bench");
  if (me == 0) {
    std::ostringstream o;
    o << "LL_BENCH {\"ranks\":" << args.world << ",\"nvlink_ranks\":" << buffer->nvlink_ranks()
      << ",\"remote_ranks\":" << buffer->remote_ranks() << ",\"tokens\":" << args.tokens
      << ",\"hidden\":" << args.hidden << ",\"topk\":" << args.topk << ",\"experts\":" << args.experts
      << ",\"iters\":" << n;
    for (const auto& [k, v] : us) o << ",\"" << k << "_us\":" << v;
    o << "}";
    std::cout << o.str() << std::endl;
  }
  ok_or_fail(job.barrier(), "final barrier");
}

int run(int argc, char** argv) {
  RankArgs defaults;
  defaults.job = "ll";
  defaults.iters = 200;
  defaults.experts = 288;
  defaults.tokens = 128;
  const Args args = parse_rank_args(argc, argv, defaults);
  auto client = connect_rank(args, "ll rank");
  auto job = join_rank(*client, args);
  SignalPool pool;  // after the job: released before it leaves
  g_pool = &pool;
  cudaStream_t stream;
  cuda_or_fail(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  if (args.mode == "check") {
    check_suite(job, args, stream);
    check_graph(job, args, stream);
  } else if (args.mode == "kill") {
    check_kill(*client, job, args, stream);
  } else if (args.mode == "bench") {
    bench(job, args, stream);
  } else {
    fail("unknown --mode " + args.mode);
  }
  std::cout << "LL_DONE rank " << args.rank << std::endl;
  return 0;
}

}  // namespace
}  // namespace epx

int main(int argc, char** argv) { return epx::run(argc, argv); }
