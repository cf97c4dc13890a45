// One rank of a normal-mode job, as a prefill engine runs it: its own
// process, its own Client and Job, a NormalBuffer. Started N times by
// normal_job_test (correctness) and tools/device/run.sh (timing).
//
// Every rank builds the whole job's inputs from the same seed and runs the
// CPU reference of the whole job (kernels/normal_reference.h), so it checks
// its own GPU outputs byte for byte without gathering anything.
//
// Modes:
//   check   the suite of shapes and options for this world size (below),
//           then dispatch + combine captured in a CUDA graph and replayed
//   kill    rank --victim SIGKILLs itself before call 3; the others must get
//           an error naming it within the timeout, mask it, and then get
//           correct results without it
//   bench   DeepEP's intranode test shape (4096 tokens, hidden 7168, top-8,
//           256 experts); prints "NORMAL_BENCH {json}" on rank 0
// Exit status 0 on success; failures print "RANK_FAIL: <what>" first.
#include <cuda_runtime.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "epx/client.h"
#include "epx/cuda.h"
#include "epx/normal.h"
#include "kernels/fp8_reference.h"
#include "kernels/normal_inputs.h"
#include "kernels/normal_kernels.h"
#include "kernels/normal_reference.h"
#include "tools/bench/fabric_baseline.h"
#include "tools/bench/spawned_daemon.h"
#include "tools/device/rank_process.h"

namespace epx {
namespace {

using kernels::NormalCombined;
using kernels::NormalJobInputs;
using kernels::NormalPayload;
using kernels::NormalReceived;
using kernels::NormalRouting;
using kernels::NormalShape;

using Args = RankArgs;

struct Case {
  int hidden, experts, topk, max_tokens;
  std::vector<int> tokens;  // per rank (one entry: every rank)
  bool fp8 = false;
  int alignment = 1;
  NormalRouting routing = NormalRouting::kRandom;
  bool worst = false;  // num_worst_tokens: the buffer's whole receive
  bool biases = false;
  bool async = false;  // async_finish on the communication stream
};

std::string describe(const NormalShape& s, const Case& c, uint32_t seed) {
  std::ostringstream o;
  o << "ranks=" << s.num_ranks << " experts=" << s.num_experts << " hidden=" << s.hidden << " topk=" << s.num_topk
    << " max_tokens=" << s.max_tokens_per_rank << " tokens=" << c.tokens[0] << (c.tokens.size() > 1 ? ",..." : "")
    << " fp8=" << c.fp8 << " alignment=" << c.alignment << " routing=" << static_cast<int>(c.routing)
    << " worst=" << c.worst << " biases=" << c.biases << " async=" << c.async << " seed=" << seed;
  return o.str();
}

// Ranks per node of the job (its rank table: emulated nodes are daemons).
int g_ranks_per_node = 0;

NormalShape shape_of(const Args& args, const Case& c) {
  NormalShape s;
  s.num_ranks = static_cast<int>(args.world);
  s.ranks_per_node = g_ranks_per_node;
  s.num_experts = c.experts;
  s.hidden = c.hidden;
  s.num_topk = c.topk;
  s.max_tokens_per_rank = c.max_tokens;
  return s;
}

// Across nodes: the job's signal array, opened once (a rank has one per
// job) and lent to each buffer at fresh words.
struct SignalPool {
  std::unique_ptr<CudaSignals> signals;
  uint32_t next = 0;
};
SignalPool g_pool;
constexpr uint32_t kMaxBuffers = 64;

std::unique_ptr<NormalBuffer> make_buffer(Job& job, const Args& args, const NormalShape& s) {
  NormalOptions o;
  if (s.nodes() > 1) {
    const uint32_t words = NormalBuffer::signal_words(s.nodes());
    if (g_pool.signals == nullptr) {
      auto opened = CudaSignals::open(job, kMaxBuffers * words);
      if (!opened.ok()) fail("open signals: " + opened.status().to_string());
      g_pool.signals = std::move(*opened);
    }
    if (g_pool.next + words > kMaxBuffers * words) fail("more than 64 buffers in one job");
    o.signals = g_pool.signals.get();
    o.signal_base = g_pool.next;
    g_pool.next += words;
  }
  o.num_max_tokens_per_rank = s.max_tokens_per_rank;
  o.hidden = s.hidden;
  o.num_experts = s.num_experts;
  o.num_topk = s.num_topk;
  o.device = args.device;
  o.timeout = std::chrono::milliseconds(args.timeout_ms);
  auto b = NormalBuffer::create(job, o);
  if (!b.ok()) fail("NormalBuffer::create: " + b.status().to_string());
  if (const GpuWindow* w = (*b)->rdma_window(); w != nullptr) {
    std::cout << "buffer: rdma window " << w->id() << " "
              << (w->is_device() ? "device" : "host (" + w->fallback_reason() + ")") << ", signals from "
              << o.signal_base << std::endl;
  }
  return std::move(*b);
}

// The whole job's expected outputs for one call.
struct Expected {
  std::vector<NormalReceived> received;
  std::vector<std::vector<uint16_t>> expert_out;  // per rank: [num_recv][hidden]
  std::vector<std::vector<uint16_t>> bias0, bias1;
  std::vector<NormalCombined> combined;
};

Expected reference(const NormalJobInputs& job, const Case& c, uint32_t seed) {
  const NormalShape& s = job.shape;
  Expected e;
  ok_or_fail(kernels::normal_dispatch_reference(s, job.payload, c.alignment, job.inputs, &e.received),
             "dispatch reference");
  std::vector<kernels::NormalCombineInput> in(s.num_ranks);
  for (int r = 0; r < s.num_ranks; ++r) {
    e.expert_out.push_back(kernels::normal_expert_outputs(e.received[r].num_recv_tokens, s.hidden, seed * 131 + r));
    const int tokens = job.inputs[r].num_tokens;
    e.bias0.push_back(c.biases ? kernels::normal_expert_outputs(tokens, s.hidden, seed * 137 + r)
                               : std::vector<uint16_t>());
    e.bias1.push_back(c.biases ? kernels::normal_expert_outputs(tokens, s.hidden, seed * 139 + r)
                               : std::vector<uint16_t>());
  }
  for (int r = 0; r < s.num_ranks; ++r) {
    in[r].x = e.expert_out[r].data();
    in[r].topk_weights = e.received[r].recv_topk_weights.data();
    in[r].bias0 = c.biases ? e.bias0[r].data() : nullptr;
    in[r].bias1 = c.biases ? e.bias1[r].data() : nullptr;
  }
  ok_or_fail(kernels::normal_combine_reference(s, job.inputs, e.received, in, &e.combined, s.local_ranks()),
             "combine reference");
  return e;
}

template <typename T>
std::string first_difference(const std::vector<T>& got, const std::vector<T>& want, size_t n, size_t per_row,
                             const std::string& what) {
  for (size_t i = 0; i < n; ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0) {
      return what + " differs at row " + std::to_string(i / per_row) + " element " + std::to_string(i % per_row);
    }
  }
  return "";
}

// This rank's dispatch outputs against the reference; "" when equal.
std::string compare_dispatch(const NormalShape& s, const NormalPayload& p, const NormalReceived& want,
                             const NormalDispatchResult& got, int rows, bool with_list) {
  const int n = want.num_recv_tokens, K = s.num_topk;
  if (got.num_recv_tokens >= 0 && got.num_recv_tokens != n) {
    return "num_recv_tokens " + std::to_string(got.num_recv_tokens) + ", want " + std::to_string(n);
  }
  if (with_list &&
      got.num_recv_tokens_per_expert_list != std::vector<int>(want.expert_counts.begin(), want.expert_counts.end())) {
    return "num_recv_tokens_per_expert_list differs";
  }
  const size_t row = p.row_bytes(s.hidden);
  std::string d = first_difference(download<uint8_t>(got.recv_x, n * row), want.recv_x, n * row, row, "recv_x");
  if (d.empty() && p.fp8) {
    d = first_difference(download<uint32_t>(got.recv_x_scales, static_cast<size_t>(n) * p.num_scales), want.recv_scales,
                         static_cast<size_t>(n) * p.num_scales, p.num_scales, "recv_x_scales");
  }
  if (d.empty()) d = first_difference(download<int32_t>(got.recv_src_idx, n), want.recv_src_idx, n, 1, "recv_src_idx");
  if (d.empty()) {
    d = first_difference(download<int64_t>(got.recv_topk_idx, static_cast<size_t>(n) * K), want.recv_topk_idx,
                         static_cast<size_t>(n) * K, K, "recv_topk_idx");
  }
  if (d.empty()) {
    d = first_difference(download<float>(got.recv_topk_weights, static_cast<size_t>(n) * K), want.recv_topk_weights,
                         static_cast<size_t>(n) * K, K, "recv_topk_weights");
  }
  if (d.empty() && rows > n) {
    // Worst-case mode: the padding rows name no expert.
    const auto pad = download<int64_t>(got.recv_topk_idx, static_cast<size_t>(rows) * K);
    for (size_t i = static_cast<size_t>(n) * K; i < pad.size(); ++i) {
      if (pad[i] != -1) return "padding row " + std::to_string(i / K) + " has top-k id " + std::to_string(pad[i]);
    }
  }
  return d;
}

std::string compare_combine(const NormalShape& s, int tokens, const NormalCombined& want,
                            const NormalCombineResult& got) {
  // Exact: the kernel adds the same fp32 values in the same order as the
  // reference (ranks ascending, then the biases) and rounds once to bf16.
  std::string d = first_difference(download<uint16_t>(got.combined_x, static_cast<size_t>(tokens) * s.hidden), want.x,
                                   static_cast<size_t>(tokens) * s.hidden, s.hidden, "combined_x");
  if (d.empty()) {
    d = first_difference(download<float>(got.combined_topk_weights, static_cast<size_t>(tokens) * s.num_topk),
                         want.topk_weights, static_cast<size_t>(tokens) * s.num_topk, s.num_topk,
                         "combined_topk_weights");
  }
  return d;
}

// "source: got/want" for every source whose row count at `me` differs
// (the handle's rank_prefix_matrix against the reference's): which sources,
// and so which path (own node, which relay), went wrong.
std::string per_source_counts(const NormalShape& s, const NormalReceived& want, const NormalHandle& handle, int me) {
  const int R = s.num_ranks;
  const auto got = download<int32_t>(handle.rank_prefix_matrix(), static_cast<size_t>(R) * R);
  std::ostringstream o;
  for (int g = 0; g < R; ++g) {
    auto at = [&](const std::vector<int32_t>& m, int src) {
      return src < 0 ? 0 : m[static_cast<size_t>(src) * R + me];
    };
    const int a = at(got, g) - at(got, g - 1), b = at(want.rank_prefix_matrix, g) - at(want.rank_prefix_matrix, g - 1);
    if (a != b) o << " source " << g << ": " << a << "/" << b;
  }
  return "rows got/want by source:" + o.str();
}

// Device copies of one rank's inputs.
struct RankInputs {
  DeviceArray<uint8_t> x;
  DeviceArray<uint32_t> scales;
  DeviceArray<int64_t> topk;
  DeviceArray<float> weights;
  RankInputs(const NormalJobInputs& in, int me)
      : x(in.x[me]), scales(in.scales[me]), topk(in.topk[me]), weights(in.weights[me]) {}
};

// Layout outputs of one call (device).
struct LayoutArrays {
  DeviceArray<int32_t> per_rank, per_node, per_expert;
  DeviceArray<uint8_t> in_rank;
  LayoutArrays(const NormalShape& s)
      : per_rank(s.num_ranks), per_node(s.nodes()), per_expert(s.num_experts), in_rank(s.max_recv_rows()) {}
  NormalLayoutOutputs outputs() const {
    NormalLayoutOutputs o;
    o.num_tokens_per_rank = per_rank.get();
    o.num_tokens_per_rdma_rank = per_node.get();
    o.num_tokens_per_expert = per_expert.get();
    o.is_token_in_rank = reinterpret_cast<bool*>(in_rank.get());
    return o;
  }
};

std::string compare_layout(const NormalShape& s, const NormalJobInputs& in, int me, const LayoutArrays& got) {
  kernels::NormalDispatchLayout want;
  ok_or_fail(kernels::normal_layout_reference(s, s.local_ranks(), in.inputs[me].num_tokens, in.topk[me].data(), &want),
             "layout reference");
  const int T = in.inputs[me].num_tokens;
  if (download<int32_t>(got.per_rank.get(), s.num_ranks) != want.tokens_per_rank) return "num_tokens_per_rank differs";
  if (download<int32_t>(got.per_expert.get(), s.num_experts) != want.tokens_per_expert) {
    return "num_tokens_per_expert differs";
  }
  if (download<int32_t>(got.per_node.get(), s.nodes()) != want.tokens_per_node)
    return "num_tokens_per_rdma_rank differs";
  if (download<uint8_t>(got.in_rank.get(), static_cast<size_t>(T) * s.num_ranks) != want.is_token_in_rank) {
    return "is_token_in_rank differs";
  }
  return "";
}

NormalDispatchInput dispatch_input(const NormalJobInputs& in, const RankInputs& dev, const LayoutArrays& layout, int me,
                                   const Case& c) {
  NormalDispatchInput d;
  d.x = dev.x.get();
  d.num_tokens = in.inputs[me].num_tokens;
  if (in.payload.fp8) {
    d.x_scales = dev.scales.get();
    d.num_scales = in.payload.num_scales;
  }
  d.topk_idx = dev.topk.get();
  d.topk_weights = dev.weights.get();
  d.is_token_in_rank = reinterpret_cast<const bool*>(layout.in_rank.get());
  d.num_tokens_per_expert = layout.per_expert.get();
  d.expert_alignment = c.alignment;
  return d;
}

// One dispatch + combine of `c` checked against the reference; with a
// cached re-dispatch of the same tokens.
void run_case(NormalBuffer& buffer, const Args& args, const Case& c, uint32_t seed, cudaStream_t stream) {
  const NormalShape s = shape_of(args, c);
  NormalPayload p;
  p.fp8 = c.fp8;
  p.num_scales = c.fp8 ? s.hidden / 128 : 0;
  const NormalJobInputs in = NormalJobInputs::random(s, p, seed, c.tokens, c.routing);
  const Expected want = reference(in, c, seed);
  const int me = static_cast<int>(args.rank);
  const std::string what = describe(s, c, seed);
  RankInputs dev(in, me);
  LayoutArrays layout(s);
  NormalStreams streams;
  streams.stream = stream;
  streams.async_finish = c.async;
  auto ev = buffer.get_dispatch_layout(dev.topk.get(), in.inputs[me].num_tokens, layout.outputs(), streams);
  if (!ev.ok()) fail("get_dispatch_layout: " + ev.status().to_string() + " (" + what + ")");
  if (*ev != nullptr) ok_or_fail((*ev)->current_stream_wait(stream), "layout event");
  cuda_or_fail(cudaStreamSynchronize(stream), "layout");
  std::string diff = compare_layout(s, in, me, layout);
  if (!diff.empty()) fail("layout: " + diff + " (" + what + ")");

  auto handle = buffer.new_handle();
  ok_or_fail(handle.status(), "new_handle");
  NormalDispatchInput d = dispatch_input(in, dev, layout, me, c);
  const int rows = c.worst ? static_cast<int>(s.max_recv_rows()) : want.received[me].num_recv_tokens;
  if (c.worst) d.num_worst_tokens = rows;
  auto got = buffer.dispatch(d, **handle, {args.num_sms}, streams);
  if (!got.ok()) fail("dispatch: " + got.status().to_string() + " (" + what + ")");
  if (got->event != nullptr) ok_or_fail(got->event->current_stream_wait(stream), "dispatch event");
  cuda_or_fail(cudaStreamSynchronize(stream), "dispatch");
  ok_or_fail(buffer.check(), "dispatch (" + what + ")");
  diff = compare_dispatch(s, p, want.received[me], *got, rows, !c.worst);
  if (diff.empty() && c.worst &&
      download<int32_t>((*handle)->device_num_recv_tokens(), 1)[0] != want.received[me].num_recv_tokens) {
    diff = "the handle's device num_recv_tokens differs";
  }
  if (!diff.empty() && !c.worst) diff += " [" + per_source_counts(s, want.received[me], **handle, me) + "]";
  if (!diff.empty()) fail("dispatch: " + diff + " (" + what + ")");

  DeviceArray<uint16_t> y(want.expert_out[me]);
  DeviceArray<uint16_t> b0(want.bias0[me]), b1(want.bias1[me]);
  NormalCombineInput ci;
  ci.x = y.get();
  ci.topk_weights = got->recv_topk_weights;
  if (c.biases) {
    ci.bias0 = b0.get();
    ci.bias1 = b1.get();
  }
  auto combined = buffer.combine(ci, **handle, {args.num_sms}, streams);
  if (!combined.ok()) fail("combine: " + combined.status().to_string() + " (" + what + ")");
  if (combined->event != nullptr) ok_or_fail(combined->event->current_stream_wait(stream), "combine event");
  cuda_or_fail(cudaStreamSynchronize(stream), "combine");
  ok_or_fail(buffer.check(), "combine (" + what + ")");
  diff = compare_combine(s, in.inputs[me].num_tokens, want.combined[me], *combined);
  if (!diff.empty()) fail("combine: " + diff + " (" + what + ")");

  // The handle again, cached: the same rows, without top-k outputs.
  NormalDispatchInput again;
  again.x = d.x;
  again.x_scales = d.x_scales;
  again.num_scales = d.num_scales;
  again.num_tokens = d.num_tokens;
  again.cached = true;
  auto cached = buffer.dispatch(again, **handle, {args.num_sms}, streams);
  if (!cached.ok()) fail("cached dispatch: " + cached.status().to_string() + " (" + what + ")");
  if (cached->event != nullptr) ok_or_fail(cached->event->current_stream_wait(stream), "cached event");
  cuda_or_fail(cudaStreamSynchronize(stream), "cached dispatch");
  ok_or_fail(buffer.check(), "cached dispatch (" + what + ")");
  const int n = want.received[me].num_recv_tokens;
  const size_t row = p.row_bytes(s.hidden);
  if (!c.worst && cached->num_recv_tokens != n) fail("cached dispatch: num_recv_tokens differs (" + what + ")");
  diff = first_difference(download<uint8_t>(cached->recv_x, n * row), want.received[me].recv_x, n * row, row,
                          "cached recv_x");
  if (!diff.empty()) fail(diff + " (" + what + ")");
}

// Calls an engine could get wrong are refused by name, nothing enqueued,
// and the buffer stays usable (the suite runs on after them).
void check_arguments(Job& job, const Args& args, cudaStream_t stream) {
  const Case c{2048, static_cast<int>(args.world) * 4, 4, 16, {16}};
  const NormalShape s = shape_of(args, c);
  auto buffer = make_buffer(job, args, s);
  auto other = make_buffer(job, args, s);
  auto handle = buffer->new_handle();
  auto foreign = other->new_handle();
  ok_or_fail(handle.status(), "new_handle");
  ok_or_fail(foreign.status(), "new_handle");
  const NormalJobInputs in = NormalJobInputs::random(s, NormalPayload{}, 1, c.tokens);
  const int me = static_cast<int>(args.rank);
  RankInputs dev(in, me);
  LayoutArrays layout(s);
  const NormalStreams streams{stream};
  ok_or_fail(buffer->get_dispatch_layout(dev.topk.get(), 16, layout.outputs(), streams).status(), "layout");
  struct Bad {
    const char* what;
    std::function<Status()> call;
    StatusCode code;
    const char* named;
  };
  NormalDispatchInput good = dispatch_input(in, dev, layout, me, c);
  const Bad bad[] = {
      {"a handle of another buffer", [&] { return buffer->dispatch(good, **foreign, {}, streams).status(); },
       StatusCode::kInvalidArgument, "another buffer"},
      {"cached with an unfilled handle",
       [&] {
         NormalDispatchInput d = good;
         d.cached = true;
         return buffer->dispatch(d, **handle, {}, streams).status();
       },
       StatusCode::kInvalidArgument, "no dispatch filled"},
      {"more tokens than the buffer holds",
       [&] {
         NormalDispatchInput d = good;
         d.num_tokens = 17;
         return buffer->dispatch(d, **handle, {}, streams).status();
       },
       StatusCode::kInvalidArgument, "num_tokens=17"},
      {"no topk_idx without a cached handle",
       [&] {
         NormalDispatchInput d = good;
         d.topk_idx = nullptr;
         return buffer->dispatch(d, **handle, {}, streams).status();
       },
       StatusCode::kInvalidArgument, "topk_idx"},
      {"FP8 scales out of range",
       [&] {
         NormalDispatchInput d = good;
         d.x_scales = dev.scales.get();
         d.num_scales = 17;
         return buffer->dispatch(d, **handle, {}, streams).status();
       },
       StatusCode::kInvalidArgument, "scale words"},
      {"negative num_sms", [&] { return buffer->dispatch(good, **handle, {-1}, streams).status(); },
       StatusCode::kInvalidArgument, "num_sms=-1"},
      {"combine with an unfilled handle", [&] { return buffer->combine({}, **handle, {}, streams).status(); },
       StatusCode::kInvalidArgument, "not one a dispatch"},
  };
  for (const Bad& b : bad) {
    const Status st = b.call();
    if (st.code() != b.code || st.message().find(b.named) == std::string::npos) {
      fail(std::string("arguments: ") + b.what + ": got " + st.to_string());
    }
  }
  // Still usable: a good call after the bad ones matches the reference.
  other.reset();
  run_case(*buffer, args, c, 1, stream);
  std::cout << "ok: " << sizeof(bad) / sizeof(bad[0]) << " bad calls refused by name; the buffer still works"
            << std::endl;
  buffer.reset();
  ok_or_fail(job.barrier(), "barrier after the argument checks");
}

// Stage timing (NormalBuffer::set_stage_timing) on one case of the suite,
// whose outputs were checked with the events recorded: every kernel of the
// last dispatch and combine reports a time, and once timing is off the
// times are refused by name.
void check_stages(NormalBuffer& buffer, const NormalShape& s) {
  auto d = buffer.last_dispatch_stages();
  ok_or_fail(d.status(), "last_dispatch_stages");
  auto c = buffer.last_combine_stages();
  ok_or_fail(c.status(), "last_combine_stages");
  auto same = [](const std::vector<NormalStageTime>& got, const std::vector<std::string>& want) {
    if (got.size() != want.size()) return false;
    for (size_t i = 0; i < got.size(); ++i) {
      if (got[i].kernel != want[i] || !(got[i].us >= 0)) return false;
    }
    return true;
  };
  if (!same(*d, kernels::normal_dispatch_kernels(s.nodes())) || !same(*c, kernels::normal_combine_kernels(s.nodes()))) {
    fail("stage timing: the kernels or their times are not those of a call");
  }
  ok_or_fail(buffer.set_stage_timing(false), "set_stage_timing(false)");
  if (buffer.last_dispatch_stages().status().code() != StatusCode::kFailedPrecondition) {
    fail("stage timing off: last_dispatch_stages() must be refused");
  }
  std::cout << "ok: stage timing reports " << d->size() << " dispatch and " << c->size() << " combine kernels"
            << std::endl;
}

void check_suite(Job& job, const Args& args, cudaStream_t stream) {
  const int R = static_cast<int>(args.world);
  std::vector<int> some_idle(R, 128);
  some_idle[0] = 0;  // a rank with no tokens
  if (R > 2) some_idle[R - 1] = 1;
  std::vector<Case> cases;
  if (R <= 4) {
    // DeepEP's test shape and the big token counts.
    cases.push_back({7168, 256, 8, 4096, {4096}});
    cases.push_back({7168, 256, 8, 4096, {4096}, true});
    cases.push_back({7168, 256, 8, 4096, {4096}, false, 128, NormalRouting::kRandom, false, true});
  }
  cases.push_back({2048, R * 4, 1, 128, {128}});
  cases.push_back({2048, R * 4, 8, 128, {1}, true});
  cases.push_back({2048, R * 8, 8, 128, some_idle, false, 128});
  cases.push_back({2048, R * 8, 8, 128, some_idle, true, 1, NormalRouting::kAllToRank0});
  cases.push_back({2048, R * 8, 8, 128, {128}, false, 1, NormalRouting::kNoneToLast});
  cases.push_back({2048, R * 8, 8, 128, {128}, false, 1, NormalRouting::kBalanced, true});
  cases.push_back({2048, R * 8, 8, 128, {96}, true, 1, NormalRouting::kRandom, false, true, true});
  // More than 128 experts per rank (DeepEP's intranode kernels abort there).
  cases.push_back({2048, R * 144, 8, 64, {64}, false, 1, NormalRouting::kRandom, false, false, true});
  std::unique_ptr<NormalBuffer> buffer;
  NormalShape current;
  for (size_t i = 0; i < cases.size(); ++i) {
    const NormalShape s = shape_of(args, cases[i]);
    if (buffer == nullptr || s.hidden != current.hidden || s.num_experts != current.num_experts ||
        s.num_topk != current.num_topk || s.max_tokens_per_rank != current.max_tokens_per_rank) {
      buffer.reset();
      ok_or_fail(job.barrier(), "barrier before a new buffer");
      buffer = make_buffer(job, args, s);
      current = s;
    }
    // One case runs with stage timing on: its outputs must not change.
    const bool timed = i + 1 == cases.size();
    if (timed) ok_or_fail(buffer->set_stage_timing(true), "set_stage_timing");
    run_case(*buffer, args, cases[i], 1000 + static_cast<uint32_t>(i), stream);
    std::cout << "ok: " << describe(s, cases[i], 1000 + static_cast<uint32_t>(i)) << std::endl;
    if (timed) check_stages(*buffer, s);
  }
  buffer.reset();
  ok_or_fail(job.barrier(), "barrier after the suite");
}

// Layout + worst-case dispatch + combine captured in one CUDA graph, replayed
// with new inputs each time: no host synchronisation inside.
void check_graph(Job& job, const Args& args, cudaStream_t stream) {
  const Case c{2048, static_cast<int>(args.world) * 8, 8, 128, {128}, true, 1, NormalRouting::kRandom, true};
  const NormalShape s = shape_of(args, c);
  auto buffer = make_buffer(job, args, s);
  const int me = static_cast<int>(args.rank);
  NormalPayload p;
  p.fp8 = true;
  p.num_scales = s.hidden / 128;
  const NormalJobInputs first = NormalJobInputs::random(s, p, 5000, c.tokens);
  RankInputs dev(first, me);
  LayoutArrays layout(s);
  auto handle = buffer->new_handle();
  ok_or_fail(handle.status(), "new_handle");
  const int rows = static_cast<int>(s.max_recv_rows());
  DeviceArray<uint16_t> y(static_cast<size_t>(rows) * s.hidden);
  NormalStreams streams;
  streams.stream = stream;
  NormalDispatchResult d;
  NormalCombineResult cb;
  cudaGraph_t graph;
  cuda_or_fail(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "begin capture");
  {
    auto ev = buffer->get_dispatch_layout(dev.topk.get(), c.tokens[0], layout.outputs(), streams);
    if (!ev.ok()) fail("captured layout: " + ev.status().to_string());
    NormalDispatchInput in = dispatch_input(first, dev, layout, me, c);
    in.num_worst_tokens = rows;
    auto dr = buffer->dispatch(in, **handle, {args.num_sms}, streams);
    if (!dr.ok()) fail("captured dispatch: " + dr.status().to_string());
    d = *dr;
    NormalCombineInput ci;
    ci.x = y.get();
    ci.topk_weights = d.recv_topk_weights;
    auto cr = buffer->combine(ci, **handle, {args.num_sms}, streams);
    if (!cr.ok()) fail("captured combine: " + cr.status().to_string());
    cb = *cr;
  }
  cuda_or_fail(cudaStreamEndCapture(stream, &graph), "end capture");
  cudaGraphExec_t exec;
  cuda_or_fail(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  for (int i = 0; i < 5; ++i) {
    const uint32_t seed = 5001 + i;
    const NormalJobInputs in = NormalJobInputs::random(s, p, seed, c.tokens);
    const Expected want = reference(in, c, seed);
    dev.x.upload(in.x[me]);
    dev.scales.upload(in.scales[me]);
    dev.topk.upload(in.topk[me]);
    dev.weights.upload(in.weights[me]);
    // Expert outputs for every row the buffer may hold; the reference's
    // rows first (the rest are padding, their combine terms never read).
    std::vector<uint16_t> yy(static_cast<size_t>(rows) * s.hidden, 0);
    std::copy(want.expert_out[me].begin(), want.expert_out[me].end(), yy.begin());
    y.upload(yy);
    cuda_or_fail(cudaGraphLaunch(exec, stream), "graph launch");
    cuda_or_fail(cudaStreamSynchronize(stream), "graph replay " + std::to_string(i));
    ok_or_fail(buffer->check(), "graph replay " + std::to_string(i));
    std::string diff = compare_dispatch(s, p, want.received[me], d, rows, false);
    if (diff.empty()) diff = compare_combine(s, c.tokens[0], want.combined[me], cb);
    if (!diff.empty()) fail("graph replay " + std::to_string(i) + ": " + diff);
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  std::cout << "ok: layout + worst-case dispatch + combine in a CUDA graph, replayed 5 times with new inputs"
            << std::endl;
  buffer.reset();
  ok_or_fail(job.barrier(), "barrier after the graph");
}

// Rank `victim` dies before call 3; the survivors must be told, mask it and go on.
void check_kill(Client& client, Job& job, const Args& args, cudaStream_t stream) {
  const Case c{2048, static_cast<int>(args.world) * 4, 4, 64, {64}};
  const NormalShape s = shape_of(args, c);
  auto buffer = make_buffer(job, args, s);
  for (int i = 0; i < 3; ++i) run_case(*buffer, args, c, 9000 + i, stream);
  if (static_cast<int>(args.rank) == args.victim) {
    std::cout << "victim: dying now" << std::endl;
    raise(SIGKILL);
  }
  const int me = static_cast<int>(args.rank);
  const auto start = std::chrono::steady_clock::now();
  const NormalJobInputs in = NormalJobInputs::random(s, NormalPayload{}, 9003, c.tokens);
  RankInputs dev(in, me);
  LayoutArrays layout(s);
  auto ev = buffer->get_dispatch_layout(dev.topk.get(), c.tokens[0], layout.outputs(), {stream});
  ok_or_fail(ev.status(), "layout after the kill");
  auto handle = buffer->new_handle();
  ok_or_fail(handle.status(), "new_handle");
  auto d = buffer->dispatch(dispatch_input(in, dev, layout, me, c), **handle, {}, {stream});
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (d.ok()) fail("dispatch without rank " + std::to_string(args.victim) + " reported no error");
  if (d.status().message().find("rank " + std::to_string(args.victim)) == std::string::npos) {
    fail("the error does not name rank " + std::to_string(args.victim) + ": " + d.status().to_string());
  }
  if (waited > args.timeout_ms / 1000.0 + 10) fail("the error took " + std::to_string(waited) + " s");
  std::cout << "ok: after " << waited << " s: " << d.status().to_string() << std::endl;
  cuda_or_fail(cudaStreamSynchronize(stream), "dispatch after the kill");
  (void)buffer->check();
  // The daemon's RankLost arrives on the session; check() masks lost ranks.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    const auto lost = job.lost_ranks();
    if (std::find(lost.begin(), lost.end(), static_cast<uint32_t>(args.victim)) != lost.end()) break;
    if (std::chrono::steady_clock::now() > deadline)
      fail("rank " + std::to_string(args.victim) + " never reported lost");
    (void)client.next_event(std::chrono::milliseconds(100));
  }
  ok_or_fail(buffer->check(), "check after the loss");
  // The survivors line up again, as an engine re-synchronises after a
  // failure: across nodes some of them waited two timeouts in the failed
  // call (a wait for a rank that itself waits on the network gets two), and
  // a peer that far behind would be late for the next call.
  ok_or_fail(job.barrier(), "barrier of the survivors");
  // Masked: the victim's tokens are absent and its experts' terms zero, which
  // is the reference with its tokens gone and its experts never chosen.
  for (int i = 0; i < 3; ++i) {
    const uint32_t seed = 9100 + i;
    NormalJobInputs shrunk = NormalJobInputs::random(s, NormalPayload{}, seed, c.tokens);
    const NormalJobInputs sent = shrunk;
    shrunk.x[args.victim].clear();
    shrunk.topk[args.victim].clear();
    shrunk.weights[args.victim].clear();
    // Across nodes the victim was also the relay into its node for the
    // ranks with its local index elsewhere: their tokens for that node are
    // lost with it (docs/ARCHITECTURE.md).
    const int P = s.local_ranks(), victim_node = args.victim / P;
    for (int r = 0; r < s.num_ranks; ++r) {
      const bool through_victim = r % P == args.victim % P && r / P != victim_node;
      for (auto& e : shrunk.topk[r]) {
        if (e < 0) continue;
        const int owner = static_cast<int>(e / s.local_experts());
        if (owner == args.victim || (through_victim && owner / P == victim_node)) e = -1;
      }
    }
    shrunk.refresh_views();
    const Expected want = reference(shrunk, c, seed);
    RankInputs sd(sent, me);
    auto lev = buffer->get_dispatch_layout(sd.topk.get(), c.tokens[0], layout.outputs(), {stream});
    ok_or_fail(lev.status(), "layout without the victim");
    auto h = buffer->new_handle();
    ok_or_fail(h.status(), "new_handle");
    auto got = buffer->dispatch(dispatch_input(sent, sd, layout, me, c), **h, {}, {stream});
    if (!got.ok()) fail("dispatch without the victim: " + got.status().to_string());
    cuda_or_fail(cudaStreamSynchronize(stream), "dispatch without the victim");
    NormalDispatchResult r = *got;
    r.num_recv_tokens_per_expert_list.clear();
    std::string diff =
        compare_dispatch(s, NormalPayload{}, want.received[me], r, want.received[me].num_recv_tokens, false);
    if (!diff.empty()) fail("dispatch without the victim: " + diff);
    DeviceArray<uint16_t> y(want.expert_out[me]);
    NormalCombineInput ci;
    ci.x = y.get();
    ci.topk_weights = got->recv_topk_weights;
    auto cb = buffer->combine(ci, **h, {}, {stream});
    if (!cb.ok()) fail("combine without the victim: " + cb.status().to_string());
    cuda_or_fail(cudaStreamSynchronize(stream), "combine without the victim");
    ok_or_fail(buffer->check(), "combine without the victim");
    diff = compare_combine(s, c.tokens[0], want.combined[me], *cb);
    if (!diff.empty()) fail("combine without the victim: " + diff);
  }
  std::cout << "ok: 3 calls without rank " << args.victim << " match the reference" << std::endl;
}

// Untimed calls before each timed loop.
constexpr int kWarmupCalls = 3;

// Mean microseconds per call of fn over `iters` calls, timed by events on
// `stream` after a warm-up and a job barrier.
template <typename Fn>
double time_calls(Job& job, cudaStream_t stream, int iters, Fn fn) {
  for (int i = 0; i < kWarmupCalls; ++i) fn();
  cuda_or_fail(cudaStreamSynchronize(stream), "warm-up");
  ok_or_fail(job.barrier(), "barrier");
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cudaEventRecord(a, stream);
  for (int i = 0; i < iters; ++i) fn();
  cudaEventRecord(b, stream);
  cuda_or_fail(cudaEventSynchronize(b), "timed calls");
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  ok_or_fail(job.barrier(), "barrier");
  return 1000.0 * ms / iters;
}

// This rank's daemon's proxies, summed (status RPC): what a call costs the
// proxies, from the difference around a timed loop.
struct ProxyTotals {
  bool ok = false;
  uint64_t busy_ns = 0, progress_ns = 0, fabric_ops = 0, fabric_bytes = 0;
};

ProxyTotals proxy_totals(const std::string& socket) {
  ProxyTotals t;
  auto status = bench::daemon_status(socket);
  if (!status.ok()) return t;
  for (const auto& p : status->proxies()) {
    t.busy_ns += p.busy_ns();
    t.progress_ns += p.progress_ns();
    t.fabric_ops += p.fabric_ops();
    t.fabric_bytes += p.fabric_bytes();
  }
  t.ok = true;
  return t;
}

// Per call of a loop of `calls` (its warm-up calls included: they run
// between the two readings too), as JSON.
std::string per_call(const ProxyTotals& a, const ProxyTotals& b, int calls) {
  if (!a.ok || !b.ok) return "\"no daemon status\"";
  const double n = calls + kWarmupCalls;
  std::ostringstream o;
  o << "{\"busy_us\":" << (b.busy_ns - a.busy_ns) / n / 1e3
    << ",\"progress_us\":" << (b.progress_ns - a.progress_ns) / n / 1e3
    << ",\"fabric_ops\":" << (b.fabric_ops - a.fabric_ops) / n
    << ",\"posted_MB\":" << (b.fabric_bytes - a.fabric_bytes) / n / 1e6 << "}";
  return o.str();
}

// Across nodes (rank 0): the bytes of its node's network hop per call (the
// BF16 messages of node 0's ranks to node 1, and as many partial-sum bytes
// as node 0 sends back in combine) and what plain libfabric
// (shm, two endpoints, one write of each size) takes for the same writes in
// this run: one way (ping-pong), and both ways at once (exchange, as the
// job's nodes send them); as JSON fields to append.
std::string network_figures(const NormalShape& s, const NormalJobInputs& in, const GpuWindow* rdma,
                            const std::map<std::string, double>& us, int baseline_pairs,
                            const std::string& fabric_peer) {
  const int P = s.local_ranks(), L = s.local_experts(), K = s.num_topk;
  auto tokens_to_node = [&](int rank, int node) {
    int n = 0;
    for (int t = 0; t < in.inputs[rank].num_tokens; ++t) {
      bool any = false;
      for (int k = 0; k < K; ++k) {
        const int64_t e = in.topk[rank][static_cast<size_t>(t) * K + k];
        any |= e >= 0 && static_cast<int>(e / L) / P == node;
      }
      n += any ? 1 : 0;
    }
    return n;
  };
  // Node 0's bytes to node 1 in one call: every local rank sends its own
  // tokens' rows (dispatch) and its partial sums for node 1's tokens
  // (combine) to its peer there, all through the one daemon.
  NormalPayload bf16;
  size_t dispatch_bytes = 0, combine_bytes = 0;
  for (int j = 0; j < P; ++j) {
    dispatch_bytes += kernels::kMessageHeader + tokens_to_node(j, 1) * kernels::normal_message_bytes(s, bf16);
    combine_bytes += tokens_to_node(P + j, 0) * kernels::normal_partial_bytes(s.hidden, K);
  }
  // EPX sends these bytes in 1 + kNormalChunks writes per rank (metas, then
  // the row chunks); the baseline moves them in one write per pair, its
  // best case.
  std::ostringstream o;
  o << ",\"rdma_window\":\"" << (rdma == nullptr ? "none" : rdma->is_device() ? "device" : "host") << "\"";
  o << ",\"network\":{\"node_ranks\":" << P << ",\"dispatch_bytes\":" << dispatch_bytes
    << ",\"combine_bytes\":" << combine_bytes
    << ",\"dispatch_GBps\":" << dispatch_bytes / us.at("dispatch_bf16_cached") / 1e3
    << ",\"combine_GBps\":" << combine_bytes / us.at("combine") / 1e3;
  bench::BaselineOptions b;
  b.provider = "shm";
  b.warmup = 3;
  auto lat = bench::baseline_latency(b, {dispatch_bytes, combine_bytes});
  if (lat.ok() && lat->size() == 2) {
    o << ",\"plain_libfabric_dispatch_us\":" << (*lat)[0].one_way_us
      << ",\"plain_libfabric_combine_us\":" << (*lat)[1].one_way_us
      << ",\"plain_libfabric_dispatch_GBps\":" << dispatch_bytes / (*lat)[0].one_way_us / 1e3
      << ",\"plain_libfabric_combine_GBps\":" << combine_bytes / (*lat)[1].one_way_us / 1e3;
  } else {
    o << ",\"plain_libfabric\":\"" << (lat.ok() ? std::string("no result") : lat.status().to_string()) << "\"";
  }
  // The same writes in both directions at once, as the job's two nodes
  // send them in each call (two threads, an endpoint each; with
  // --baseline-pairs k, k pairs each moving a k-th, as k rails stripe;
  // with --fabric-peer, side B in a process of its own, as the daemons).
  const size_t pairs = static_cast<size_t>(baseline_pairs);
  auto exchange_fields = [&](const std::string& name, const bench::BaselineOptions& x) {
    auto both = bench::baseline_exchange(x, {dispatch_bytes, combine_bytes}, pairs);
    if (!both.ok() || both->size() != 2) {
      o << ",\"" << name << "\":\"" << (both.ok() ? std::string("no result") : both.status().to_string()) << "\"";
      return;
    }
    o << ",\"" << name << "_dispatch_us\":" << (*both)[0].round_us << ",\"" << name
      << "_combine_us\":" << (*both)[1].round_us << ",\"" << name
      << "_dispatch_GBps\":" << dispatch_bytes / (*both)[0].round_us / 1e3 << ",\"" << name
      << "_combine_GBps\":" << combine_bytes / (*both)[1].round_us / 1e3;
  };
  o << ",\"plain_libfabric_exchange_pairs\":" << baseline_pairs;
  if (!fabric_peer.empty()) {
    // The reference: side B in a process of its own, as the daemons are.
    bench::BaselineOptions x = b;
    x.peer_binary = fabric_peer;
    exchange_fields("plain_libfabric_exchange", x);
    // The same bytes in the same number of writes as EPX's hop (each local
    // rank's metas and 16 chunks), posted together: what the issue sets
    // EPX beside ("the same writes"). The one-write figure above is the
    // stronger reference.
    bench::BaselineOptions same = x;
    same.writes = std::max<size_t>(1, (static_cast<size_t>(P) * (1 + kernels::kNormalChunks) + pairs - 1) / pairs);
    o << ",\"plain_libfabric_exchange_same_writes_per_pair\":" << same.writes;
    exchange_fields("plain_libfabric_exchange_same_writes", same);
    // Both sides in this process (earlier sessions' reference), to show what
    // the second process changes.
    exchange_fields("plain_libfabric_exchange_one_process", b);
  } else {
    exchange_fields("plain_libfabric_exchange_one_process", b);
  }
  o << "}";
  return o.str();
}

// Where a call's time goes: `iters` cached dispatches and combines one at a
// time with stage timing on (NormalBuffer::set_stage_timing), each kernel's
// mean time, as a JSON object {"dispatch": {kernel: us}, "combine": {...}}.
// Separate from the timed loops above, which run back to back untimed; here
// each phase starts after a job barrier.
template <typename Dispatch, typename Combine>
std::string stage_figures(Job& job, NormalBuffer& buffer, cudaStream_t stream, int iters, Dispatch dispatch,
                          Combine combine) {
  ok_or_fail(buffer.set_stage_timing(true), "set_stage_timing");
  std::map<std::string, double> d, c;
  std::vector<std::string> d_order, c_order;
  ok_or_fail(job.barrier(), "barrier");
  for (int i = 0; i < iters; ++i) {
    // Every rank starts each phase together, so a stage that waits for a
    // peer's bytes times their transfer, not how far behind the peer was.
    ok_or_fail(job.barrier(), "barrier before a timed dispatch");
    dispatch();
    auto ds = buffer.last_dispatch_stages();
    ok_or_fail(ds.status(), "last_dispatch_stages");
    ok_or_fail(job.barrier(), "barrier before a timed combine");
    combine();
    auto cs = buffer.last_combine_stages();
    ok_or_fail(cs.status(), "last_combine_stages");
    for (const NormalStageTime& t : *ds) {
      if (i == 0) d_order.push_back(t.kernel);
      d[t.kernel] += t.us / iters;
    }
    for (const NormalStageTime& t : *cs) {
      if (i == 0) c_order.push_back(t.kernel);
      c[t.kernel] += t.us / iters;
    }
  }
  cuda_or_fail(cudaStreamSynchronize(stream), "timed stages");
  ok_or_fail(buffer.set_stage_timing(false), "set_stage_timing");
  ok_or_fail(job.barrier(), "barrier");
  auto object = [](const std::vector<std::string>& order, const std::map<std::string, double>& m) {
    std::ostringstream o;
    o << "{";
    for (size_t i = 0; i < order.size(); ++i) o << (i ? "," : "") << "\"" << order[i] << "\":" << m.at(order[i]);
    o << "}";
    return o.str();
  };
  return "{\"dispatch\":" + object(d_order, d) + ",\"combine\":" + object(c_order, c) + "}";
}

void bench(Job& job, const Args& args, cudaStream_t stream) {
  const Case c{args.hidden, args.experts, args.topk, args.tokens, {args.tokens}, false, 1, NormalRouting::kBalanced};
  const NormalShape s = shape_of(args, c);
  auto buffer = make_buffer(job, args, s);
  const int me = static_cast<int>(args.rank);
  NormalPayload bf16, fp8;
  fp8.fp8 = true;
  fp8.num_scales = s.hidden / 128;
  const NormalJobInputs in = NormalJobInputs::random(s, bf16, 77, c.tokens, c.routing);
  const NormalJobInputs in8 = NormalJobInputs::random(s, fp8, 77, c.tokens, c.routing);
  RankInputs dev(in, me), dev8(in8, me);
  LayoutArrays layout(s);
  NormalStreams streams{stream};
  ok_or_fail(buffer->get_dispatch_layout(dev.topk.get(), args.tokens, layout.outputs(), streams).status(), "layout");
  auto handle = buffer->new_handle();
  ok_or_fail(handle.status(), "new_handle");
  const NormalConfig config{args.num_sms};
  NormalDispatchInput d = dispatch_input(in, dev, layout, me, c);
  auto first = buffer->dispatch(d, **handle, config, streams);
  ok_or_fail(first.status(), "dispatch");
  const int recv = first->num_recv_tokens;
  DeviceArray<uint16_t> y(static_cast<size_t>(std::max(recv, 1)) * s.hidden);
  cuda_or_fail(cudaMemcpy(y.get(), first->recv_x, static_cast<size_t>(recv) * s.hidden * 2, cudaMemcpyDeviceToDevice),
               "expert outputs");
  std::map<std::string, double> us;
  us["layout"] = time_calls(job, stream, args.iters, [&] {
    ok_or_fail(buffer->get_dispatch_layout(dev.topk.get(), args.tokens, layout.outputs(), streams).status(), "layout");
  });
  // DeepEP's benchmark times dispatch with the cached handle (no count
  // exchange, no host wait); both are timed here.
  us["dispatch_bf16"] = time_calls(job, stream, args.iters, [&] {
    ok_or_fail(buffer->dispatch(d, **handle, config, streams).status(), "dispatch");
  });
  NormalDispatchInput cached;
  cached.x = dev.x.get();
  cached.num_tokens = args.tokens;
  cached.cached = true;
  const ProxyTotals before_dispatch = proxy_totals(args.socket);
  us["dispatch_bf16_cached"] = time_calls(job, stream, args.iters, [&] {
    ok_or_fail(buffer->dispatch(cached, **handle, config, streams).status(), "cached dispatch");
  });
  const ProxyTotals after_dispatch = proxy_totals(args.socket);
  NormalDispatchInput cached8 = cached;
  cached8.x = dev8.x.get();
  cached8.x_scales = dev8.scales.get();
  cached8.num_scales = fp8.num_scales;
  us["dispatch_fp8_cached"] = time_calls(job, stream, args.iters, [&] {
    ok_or_fail(buffer->dispatch(cached8, **handle, config, streams).status(), "cached FP8 dispatch");
  });
  NormalCombineInput ci;
  ci.x = y.get();
  const ProxyTotals before_combine = proxy_totals(args.socket);
  us["combine"] = time_calls(job, stream, args.iters,
                             [&] { ok_or_fail(buffer->combine(ci, **handle, config, streams).status(), "combine"); });
  const ProxyTotals after_combine = proxy_totals(args.socket);
  // Same-run floor: one device-to-device copy of the bytes this rank receives.
  DeviceArray<uint8_t> src(static_cast<size_t>(recv) * s.hidden * 2), dst(static_cast<size_t>(recv) * s.hidden * 2);
  us["d2d_copy_floor"] = time_calls(job, stream, args.iters, [&] {
    cuda_or_fail(cudaMemcpyAsync(dst.get(), src.get(), static_cast<size_t>(recv) * s.hidden * 2,
                                 cudaMemcpyDeviceToDevice, stream),
                 "copy");
  });
  ok_or_fail(buffer->check(), "bench");
  const std::string stages = stage_figures(
      job, *buffer, stream, args.iters,
      [&] { ok_or_fail(buffer->dispatch(cached, **handle, config, streams).status(), "timed cached dispatch"); },
      [&] { ok_or_fail(buffer->combine(ci, **handle, config, streams).status(), "timed combine"); });
  // DeepEP's byte counting: the bytes this rank receives.
  const double bf16_bytes = static_cast<double>(recv) * s.hidden * 2;
  const double fp8_bytes = static_cast<double>(recv) * (s.hidden + 4.0 * fp8.num_scales);
  std::map<std::string, double> gbps;
  gbps["dispatch_bf16"] = bf16_bytes / us["dispatch_bf16"] / 1e3;
  gbps["dispatch_bf16_cached"] = bf16_bytes / us["dispatch_bf16_cached"] / 1e3;
  gbps["dispatch_fp8_cached"] = fp8_bytes / us["dispatch_fp8_cached"] / 1e3;
  gbps["combine"] = bf16_bytes / us["combine"] / 1e3;
  gbps["d2d_copy_floor"] = bf16_bytes / us["d2d_copy_floor"] / 1e3;
  std::string network;
  if (s.nodes() > 1 && me == 0)
    network = network_figures(s, in, buffer->rdma_window(), us, args.baseline_pairs, args.fabric_peer);
  if (me == 0) {
    std::ostringstream o;
    o << "NORMAL_BENCH {\"ranks\":" << args.world << ",\"tokens\":" << args.tokens << ",\"hidden\":" << args.hidden
      << ",\"topk\":" << args.topk << ",\"experts\":" << args.experts << ",\"recv_tokens\":" << recv
      << ",\"num_sms\":" << (args.num_sms > 0 ? args.num_sms : 20) << ",\"iters\":" << args.iters;
    for (const auto& [k, v] : us) o << ",\"" << k << "_us\":" << v;
    for (const auto& [k, v] : gbps) o << ",\"" << k << "_GBps\":" << v;
    if (s.nodes() > 1) {
      o << ",\"proxy_per_call\":{\"dispatch\":" << per_call(before_dispatch, after_dispatch, args.iters)
        << ",\"combine\":" << per_call(before_combine, after_combine, args.iters) << "}";
    }
    o << network << ",\"stages_us\":" << stages << "}";
    std::cout << o.str() << std::endl;
  }
  // Every rank's stage times: across nodes one rank's receive can finish
  // while its peer's is still moving, which rank 0's alone cannot show.
  std::cout << "NORMAL_STAGES rank " << me << " " << stages << std::endl;
}

int run(int argc, char** argv) {
  RankArgs defaults;
  defaults.job = "normal";
  defaults.iters = 20;
  defaults.experts = 256;
  defaults.tokens = 4096;
  const Args args = parse_rank_args(argc, argv, defaults);
  auto client = connect_rank(args, "normal rank");
  auto job = join_rank(*client, args);
  g_ranks_per_node = static_cast<int>(job.table().same_node_ranks(0).size());
  if (args.rank == 0) {
    std::cout << "job: " << args.world << " ranks, " << args.world / g_ranks_per_node << " node(s) of "
              << g_ranks_per_node << std::endl;
  }
  cudaStream_t stream;
  cuda_or_fail(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  if (args.mode == "check") {
    check_arguments(job, args, stream);
    check_suite(job, args, stream);
    check_graph(job, args, stream);
  } else if (args.mode == "kill") {
    check_kill(*client, job, args, stream);
  } else if (args.mode == "bench") {
    bench(job, args, stream);
  } else {
    fail("unknown --mode " + args.mode);
  }
  std::cout << "NORMAL_DONE rank " << args.rank << std::endl;
  return 0;
}

}  // namespace
}  // namespace epx

int main(int argc, char** argv) { return epx::run(argc, argv); }
