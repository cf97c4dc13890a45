// Normal-mode dispatch: across nodes the node scan and pack kernels (one
// message per token and node, posted to the relay in chunks as they are
// staged) and the relay wait, then the
// notify kernel (send lists and the count exchange inside the node) and the
// dispatch kernel (rows straight to their final place in every local rank's
// nvl space), with their launcher. Contract and protocol: normal_kernels.h;
// formats: normal_format.h.
#include <cuda_runtime.h>

#include <string>

#include "cuda/cuda_status.h"
#include "kernels/normal_device.cuh"
#include "kernels/normal_kernels.h"

namespace epx::kernels {
namespace {

using namespace normal;

constexpr int kNotifyThreads = 1024;
constexpr int kDispatchThreads = 512;
constexpr unsigned kFullMask = 0xFFFFFFFFu;

__device__ inline uint64_t current_call(const uint64_t* calls) {
  return *reinterpret_cast<const volatile uint64_t*>(calls) + 1;
}

__device__ inline int32_t* slot_counts(uint8_t* space, const NormalLayout& l, int sender) {
  return reinterpret_cast<int32_t*>(space + l.notify + sender * l.notify_slot_bytes + kNotifyCounts);
}

// Where the job's shape puts this rank.
struct Place {
  int R, P, N, L, K, me, node, li;
  __device__ Place(const NormalShape& s, const NormalTransport& t)
      : R(s.num_ranks), P(s.local_ranks()), N(s.nodes()), L(s.local_experts()), K(s.num_topk), me(t.rank),
        node(t.rank / s.local_ranks()), li(t.rank % s.local_ranks()) {}
  __device__ int local(int j) const { return node * P + j; }
};

// One token of a virtual source, wherever it lives: this rank's inputs, or
// a message in the rdma space.
struct SourceToken {
  const uint8_t* x;
  const uint32_t* scales;
  int64_t scale_stride;
  const int64_t* topk;   // null: no top-k (cached)
  const float* weights;
  int32_t src;
};

// Message i's meta and row in the region at `region` of the rdma space.
__device__ inline uint8_t* meta_at(const NormalShape& s, const NormalTransport& t, size_t region, int i) {
  return t.rdma + region + normal_meta_offset(s, i);
}
__device__ inline uint8_t* row_at(const NormalShape& s, const NormalTransport& t, const NormalPayload& p, size_t region,
                                  int i) {
  return t.rdma + region + normal_row_offset(s, p, i);
}

__device__ inline SourceToken own_token(const NormalShape& s, const NormalDispatchArgs& a, int tok) {
  const size_t row_bytes = a.payload.row_bytes(s.hidden);
  SourceToken o;
  o.x = static_cast<const uint8_t*>(a.x) + static_cast<size_t>(tok) * row_bytes;
  o.scales = a.payload.fp8 ? a.x_scales + static_cast<size_t>(tok) * a.scale_token_stride : nullptr;
  o.scale_stride = a.scale_hidden_stride;
  o.topk = a.topk_idx != nullptr ? a.topk_idx + static_cast<size_t>(tok) * s.num_topk : nullptr;
  o.weights = a.topk_idx != nullptr ? a.topk_weights + static_cast<size_t>(tok) * s.num_topk : nullptr;
  o.src = tok;
  return o;
}

__device__ inline SourceToken relayed_token(const NormalShape& s, const NormalDispatchArgs& a, const uint8_t* meta,
                                           const uint8_t* row) {
  SourceToken o;
  o.x = row;
  o.scales = reinterpret_cast<const uint32_t*>(row + a.payload.row_bytes(s.hidden));
  o.scale_stride = 1;
  o.topk = a.topk_idx != nullptr ? reinterpret_cast<const int64_t*>(meta) : nullptr;
  o.weights = a.topk_idx != nullptr ? reinterpret_cast<const float*>(meta + 8 * s.num_topk) : nullptr;
  o.src = *reinterpret_cast<const volatile int32_t*>(meta + 12 * s.num_topk);
  return o;
}

// Block v (N > 1): which of this rank's tokens node v needs (handle
// node_index, node_counts), each such token's meta and the count at the
// head of the message region (the pack kernel's poster sends them first).
__global__ void __launch_bounds__(1024)
    normal_node_scan_kernel(NormalShape s, NormalTransport t, NormalDispatchArgs a) {
  __shared__ int32_t sums[32];
  __shared__ int32_t running;
  const Place at(s, t);
  const int v = blockIdx.x, K = at.K;
  const uint64_t seq = current_call(&t.state->dispatch_calls);
  const NormalRdmaLayout& r = t.rdma_layout;
  const size_t region = normal_region(r.dispatch_send, r.message_region, at.N, seq, v);
  for (int c = threadIdx.x; c < kNormalChunks; c += blockDim.x) t.chunk_staged[normal_chunk_cell(0, at.N, v, c)] = 0;
  if (threadIdx.x == 0) running = 0;
  __syncthreads();
  for (int base = 0; base < a.num_tokens; base += blockDim.x) {
    const int tok = base + threadIdx.x;
    int index = -1;
    if (a.cached) {
      if (tok < a.num_tokens) index = a.handle.node_index[static_cast<size_t>(tok) * at.N + v];
    } else {
      int flag = 0;
      if (tok < a.num_tokens && v != at.node) {
        for (int j = 0; j < at.P; ++j) flag |= a.is_token_in_rank[static_cast<size_t>(tok) * at.R + v * at.P + j] != 0;
      }
      const int excl = block_prefix(flag, sums, &running);
      index = flag ? excl : -1;
      if (tok < a.num_tokens) a.handle.node_index[static_cast<size_t>(tok) * at.N + v] = index;
    }
    if (index >= 0 && v != at.node) {
      uint8_t* m = meta_at(s, t, region, index);
      if (a.topk_idx != nullptr) {
        for (int k = 0; k < K; ++k) {
          reinterpret_cast<int64_t*>(m)[k] = a.topk_idx[static_cast<size_t>(tok) * K + k];
          reinterpret_cast<float*>(m + 8 * K)[k] = a.topk_weights[static_cast<size_t>(tok) * K + k];
        }
      }
      *reinterpret_cast<int32_t*>(m + 12 * K) = tok;
      *reinterpret_cast<uint32_t*>(m + 12 * K + 4) = static_cast<uint32_t>(seq);
    }
  }
  if (threadIdx.x == 0) {
    const int32_t count = a.cached ? a.handle.node_counts[v] : running;
    if (!a.cached) a.handle.node_counts[v] = count;
    volatile uint32_t* head = reinterpret_cast<volatile uint32_t*>(t.rdma + region);
    head[0] = static_cast<uint32_t>(count);
    head[1] = static_cast<uint32_t>(seq);
  }
  // The daemon copies the head and metas once the poster's descriptor is
  // seen (next kernel): every thread's stores are made visible system-wide.
  __syncthreads();
  if (threadIdx.x == 0) __threadfence_system();
}

// N > 1, lane v of the pack kernel's last block: node v's head and metas
// in one write, then each row chunk as soon as its rows are staged, to the
// relay (this warp is ring v's only producer during the call).
__device__ void post_node_chunks(const NormalShape& s, const NormalTransport& t, const NormalDispatchArgs& a,
                                 const Place& at, uint64_t seq, int lane) {
  const NormalRdmaLayout& r = t.rdma_layout;
  const int T = s.max_tokens_per_rank, M = normal_chunk_tokens(T);
  const size_t row = normal_message_row(s, a.payload);
  for (int v = lane; v < at.N; v += 32) {
    const int relay = v * at.P + at.li;
    if (v == at.node || masked(t, relay)) continue;
    const int count = a.handle.node_counts[v];
    const size_t send = normal_region(r.dispatch_send, r.message_region, at.N, seq, v);
    const size_t recv = normal_region(r.dispatch_recv, r.message_region, at.N, seq, at.node);
    if (!post_region(t, static_cast<uint32_t>(v), relay, send, recv, normal_meta_offset(s, count),
                     normal_meta_signal(at.N, at.node, seq))) {
      continue;
    }
    for (int c = 0; c < kNormalChunks; ++c) {
      const int n = normal_chunk_count(T, count, c);
      if (n > 0 && !wait_staged(t, 0, at.N, v, c, n, relay)) break;
      // A chunk with no rows rewrites the head (final before this kernel),
      // so its signal still counts one write this call.
      const size_t off = n > 0 ? normal_row_offset(s, a.payload, c * M) : 0;
      const size_t bytes = n > 0 ? static_cast<size_t>(n) * row : kMessageHeader;
      if (!post_region(t, static_cast<uint32_t>(v), relay, send + off, recv + off, bytes,
                       normal_dispatch_chunk_signal(at.N, at.node, c, seq))) {
        break;
      }
    }
  }
}

// N > 1: warps stage every token's row once for each other node that needs
// it; the last block's first warp posts them (post_node_chunks) chunk by
// chunk while the others stage.
__global__ void __launch_bounds__(kDispatchThreads)
    normal_node_pack_kernel(NormalShape s, NormalTransport t, NormalDispatchArgs a) {
  const Place at(s, t);
  const uint64_t seq = current_call(&t.state->dispatch_calls);
  const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (blockIdx.x == gridDim.x - 1) {
    if (warp == 0) post_node_chunks(s, t, a, at, seq, lane);
    return;
  }
  const NormalRdmaLayout& r = t.rdma_layout;
  const size_t row_bytes = a.payload.row_bytes(s.hidden);
  const int M = normal_chunk_tokens(s.max_tokens_per_rank), stagers = gridDim.x - 1;
  for (int tok = blockIdx.x * warps + warp; tok < a.num_tokens; tok += stagers * warps) {
    const SourceToken src = own_token(s, a, tok);
    for (int v = 0; v < at.N; ++v) {
      const int32_t index = a.handle.node_index[static_cast<size_t>(tok) * at.N + v];
      if (v == at.node || index < 0 || masked(t, v * at.P + at.li)) continue;
      uint8_t* m = row_at(s, t, a.payload, normal_region(r.dispatch_send, r.message_region, at.N, seq, v), index);
      warp_copy(m, src.x, row_bytes, lane);
      if (a.payload.fp8) {
        uint32_t* scales = reinterpret_cast<uint32_t*>(m + row_bytes);
        for (int j = lane; j < a.payload.num_scales; j += 32) scales[j] = src.scales[j * src.scale_stride];
      }
      mark_staged(t, 0, at.N, v, index / M, lane);
    }
  }
}

// N > 1, one warp, before notify: waits for every other node's message
// (signal, then the head's tag) and records once, for every block of the
// kernels after it, how many tokens each node relayed (t.relayed[v]) and
// which relay never sent (t.relayed[N + v]: its rank + 1, else 0). One
// polling thread per node instead of spinning notify blocks: those held
// whole SMs while they waited, taking them from the other ranks' kernels
// on a shared GPU.
__global__ void normal_relay_wait_kernel(NormalShape s, NormalTransport t, NormalDispatchArgs a) {
  const Place at(s, t);
  const uint64_t seq = current_call(&t.state->dispatch_calls);
  const NormalRdmaLayout& r = t.rdma_layout;
  const int T = s.max_tokens_per_rank;
  for (int v = threadIdx.x; v < at.N; v += blockDim.x) {
    int32_t relayed = 0, late = 0;
    if (v != at.node) {
      const int relay_from = v * at.P + at.li;
      const bool gone = masked(t, relay_from);
      const uint8_t* head = t.rdma + normal_region(r.dispatch_recv, r.message_region, at.N, seq, v);
      const bool ok = !gone &&
                      wait_signal_word(t, normal_meta_signal(at.N, v, seq), normal_signal_target(seq), relay_from,
                                       kNormalRelayTimeout) &&
                      wait_tag(t, head + 4, static_cast<uint32_t>(seq), relay_from);
      if (!gone && !ok) late = relay_from + 1;
      if (ok) {
        relayed = a.cached ? a.handle.relay_counts[v] : static_cast<int32_t>(*reinterpret_cast<const volatile uint32_t*>(head));
        if (relayed < 0 || relayed > T) {  // a message head no sender could have written
          record_error(t.error, kNormalBadCount, static_cast<uint32_t>(relay_from), T, static_cast<uint32_t>(relayed));
          relayed = 0;
        }
      }
      if (!a.cached) a.handle.relay_counts[v] = relayed;
    }
    t.relayed[v] = relayed;
    t.relayed[at.N + v] = late;
  }
}

// Block (v, j): virtual source v's tokens for local rank j (its send list
// and count), told to every local rank.
__global__ void __launch_bounds__(kNotifyThreads)
    normal_notify_kernel(NormalShape s, NormalLayout l, NormalTransport t, NormalDispatchArgs a) {
  extern __shared__ int32_t expert_counts[];  // [L] (relayed tokens)
  __shared__ int32_t sums[32];
  __shared__ int32_t running;
  __shared__ int32_t relayed;
  __shared__ int32_t late;  // the relay whose message never came, + 1; 0 none
  const Place at(s, t);
  const int v = blockIdx.x / at.P, j = blockIdx.x % at.P, dst = at.local(j);
  const int T = s.max_tokens_per_rank, R = at.R, L = at.L, K = at.K;
  const uint64_t seq = current_call(&t.state->dispatch_calls);
  const bool own = v == at.node;
  const NormalRdmaLayout& r = t.rdma_layout;
  if (threadIdx.x == 0) {
    running = 0;
    // normal_relay_wait_kernel decided, once for every block, what arrived.
    relayed = own ? 0 : t.relayed[v];
    late = own ? 0 : t.relayed[at.N + v];
  }
  for (int e = threadIdx.x; e < L; e += blockDim.x) expert_counts[e] = 0;
  __syncthreads();
  const int n = own ? a.num_tokens : relayed;
  int32_t* index = a.handle.send_index + static_cast<size_t>(v) * T * at.P;
  int32_t count = 0;
  if (!a.cached) {
    const size_t region = own ? 0 : normal_region(r.dispatch_recv, r.message_region, at.N, seq, v);
    const int64_t first = static_cast<int64_t>(dst) * L;
    for (int base = 0; base < n; base += blockDim.x) {
      const int tok = base + threadIdx.x;
      int flag = 0;
      if (tok < n) {
        if (own) {
          flag = a.is_token_in_rank[static_cast<size_t>(tok) * R + dst] != 0;
        } else {
          // The relay's message landed while this kernel ran: read once its
          // tag is this call's, at system scope.
          const uint8_t* m = meta_at(s, t, region, tok);
          // A message whose tag never came is not forwarded (the error names its relay).
          const bool fresh = wait_tag(t, m + 12 * K + 4, static_cast<uint32_t>(seq), v * at.P + at.li);
          const volatile int64_t* topk = reinterpret_cast<const volatile int64_t*>(m);
          for (int k = 0; k < K && fresh; ++k) {
            const int64_t e = topk[k];
            if (e < first || e >= first + L) continue;
            flag = 1;
            bool seen = false;  // a token counts once per expert
            for (int q = 0; q < k; ++q) seen |= topk[q] == e;
            if (!seen) atomicAdd(&expert_counts[e - first], 1);
          }
        }
      }
      const int excl = block_prefix(flag, sums, &running);
      if (tok < n) index[static_cast<size_t>(tok) * at.P + j] = flag ? excl : -1;
    }
    // The handle's copy of is_token_in_rank: block (v, j) copies column v * P + j.
    for (int tok = threadIdx.x; tok < a.num_tokens; tok += blockDim.x) {
      const size_t cell = static_cast<size_t>(tok) * R + v * at.P + j;
      a.handle.is_token_in_rank[cell] = a.is_token_in_rank[cell];
    }
    count = running;
    if (threadIdx.x == 0) a.handle.send_counts[v * at.P + j] = count;
  } else {
    count = v == at.node || relayed > 0 ? a.handle.send_counts[v * at.P + j] : 0;
  }
  // A relay that never sent is told to every local rank as -(its rank + 1),
  // so each rank whose rows it carried names it too.
  const int32_t told = late != 0 ? -late : count;
  for (int p = threadIdx.x; p < at.P; p += blockDim.x) {
    if (!masked(t, at.local(p))) slot_counts(t.peers.ptrs[at.local(p)], l, at.li)[v * at.P + j] = told;
  }
  if (!masked(t, dst)) {
    int32_t* experts = slot_counts(t.peers.ptrs[dst], l, at.li) + at.N * at.P + v * L;
    for (int e = threadIdx.x; e < L; e += blockDim.x) {
      experts[e] = a.cached ? 0 : (own ? a.tokens_per_expert[dst * L + e] : expert_counts[e]);
    }
  }
  __threadfence_system();
  if (last_block(&t.state->finished[0])) {
    for (int p = threadIdx.x; p < at.P; p += blockDim.x) {
      if (!masked(t, at.local(p))) {
        store_seq(t.peers.ptrs[at.local(p)] + l.notify + at.li * l.notify_slot_bytes + kNotifySeq, seq);
      }
    }
  }
}

__global__ void __launch_bounds__(kDispatchThreads)
    normal_dispatch_kernel(NormalShape s, NormalLayout l, NormalTransport t, NormalDispatchArgs a) {
  extern __shared__ int32_t shared[];
  __shared__ int32_t num_recv;
  const Place at(s, t);
  const int R = at.R, P = at.P, N = at.N, L = at.L, K = at.K, T = s.max_tokens_per_rank;
  int32_t* start = shared;          // [N][P]: where virtual source v's rows begin at local rank j
  int32_t* lost = shared + N * P;   // [P]: local rank masked, or its notify never came
  const uint64_t seq = current_call(&t.state->dispatch_calls);
  uint8_t* own = t.peers.ptrs[at.me];
  // Count of global source g for local rank j (0 from a lost sender).
  auto count = [&](int g, int j) -> int32_t {
    const int sender = g % P;
    const int32_t c = lost[sender] ? 0 : slot_counts(own, l, sender)[(g / P) * P + j];
    return c < 0 ? 0 : c;  // < 0: the relay of g's tokens never sent them
  };

  for (int i = threadIdx.x; i < P; i += blockDim.x) {
    // Across nodes a local rank's notify waits for its relay's message first.
    lost[i] = masked(t, at.local(i)) || !wait_seq(t, own + l.notify + i * l.notify_slot_bytes + kNotifySeq, seq,
                                                  at.local(i), kNormalNotifyTimeout, N > 1 ? 2 : 1);
  }
  __syncthreads();
  for (int c = threadIdx.x; c < N * P; c += blockDim.x) {
    const int v = c / P, j = c % P, g = v * P + at.li;
    int32_t sum = 0;
    for (int q = 0; q < g; ++q) sum += count(q, j);
    start[c] = sum;
  }
  if (threadIdx.x == 0) {
    int32_t sum = 0;
    for (int g = 0; g < R; ++g) {
      sum += count(g, at.li);
      const int32_t raw = lost[g % P] ? 0 : slot_counts(own, l, g % P)[(g / P) * P + at.li];
      if (raw < 0 && blockIdx.x == 0) record_error(t.error, kNormalRelayTimeout, static_cast<uint32_t>(-raw - 1), seq, 0);
    }
    num_recv = sum;
  }
  __syncthreads();

  if (blockIdx.x == 0) {
    if (!a.cached) {
      for (int j = threadIdx.x; j < P; j += blockDim.x) {
        int32_t sum = 0;
        for (int g = 0; g < R; ++g) {
          sum += count(g, j);
          a.handle.rank_prefix_matrix[g * R + at.local(j)] = sum;
        }
      }
      for (int e = threadIdx.x; e < L; e += blockDim.x) {
        int32_t sum = 0;
        for (int i = 0; i < P; ++i) {
          if (lost[i]) continue;
          const int32_t* experts = slot_counts(own, l, i) + N * P;
          for (int v = 0; v < N; ++v) sum += experts[v * L + e];
        }
        const int align = a.expert_alignment;
        t.host_counts->expert_counts[e] = (sum + align - 1) / align * align;
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      *a.handle.num_recv_tokens = num_recv;
      if (a.num_worst_tokens > 0 && num_recv > a.num_worst_tokens) {
        record_error(t.error, kNormalWorstExceeded, static_cast<uint32_t>(at.me), a.num_worst_tokens, num_recv);
      }
      t.host_counts->num_recv_tokens = num_recv;
      __threadfence_system();
      ring::ring_store_release(reinterpret_cast<volatile uint64_t*>(&t.host_counts->seq), a.host_tag);
    }
  }

  // Rows: a warp per token of each virtual source, every local destination
  // of the token in turn; own tokens first, then each relayed chunk as it
  // lands.
  const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const size_t row_bytes = a.payload.row_bytes(s.hidden);
  const NormalRdmaLayout& r = t.rdma_layout;
  const int M = normal_chunk_tokens(T);
  for (int i = 0; i < N; ++i) {
    const int v = (at.node + i) % N;
    const bool mine = v == at.node;
    const int n = mine ? a.num_tokens : t.relayed[v];
    const size_t region = mine ? 0 : normal_region(r.dispatch_recv, r.message_region, N, seq, v);
    const int32_t* send_index = a.handle.send_index + static_cast<size_t>(v) * T * P;
    for (int tok = blockIdx.x * warps + warp; tok < n; tok += gridDim.x * warps) {
      if (!mine) {
        int ok = 0;
        if (lane == 0) {
          const int relay = v * P + at.li, c = tok / M;
          ok = wait_tag(t, meta_at(s, t, region, tok) + 12 * K + 4, static_cast<uint32_t>(seq), relay) &&
               await_chunk(t, 0, N, v, c, seq, normal_dispatch_chunk_signal(N, v, c, seq), relay,
                           kNormalRelayTimeout, 1);
        }
        ok = __shfl_sync(kFullMask, ok, 0);
        __syncwarp();  // orders the other lanes' row reads after lane 0's acquire (a shuffle does not)
        if (!ok) continue;  // named in the DeviceError; its rows stay unwritten
      }
      const SourceToken src =
          mine ? own_token(s, a, tok) : relayed_token(s, a, meta_at(s, t, region, tok), row_at(s, t, a.payload, region, tok));
      const int32_t* index = send_index + static_cast<size_t>(tok) * P;
      for (int base = 0; base < P; base += 32) {
        const int mj = base + lane;
        const int32_t pos = mj < P && !lost[mj] ? index[mj] : -1;
        unsigned todo = __ballot_sync(kFullMask, pos >= 0);
        while (todo != 0) {
          const int b = __ffs(todo) - 1;
          todo &= todo - 1;
          const int j = base + b, d = at.local(j);
          const size_t row = static_cast<size_t>(start[v * P + j]) + __shfl_sync(kFullMask, pos, b);
          if (row >= s.max_recv_rows()) {  // counts that disagree with the send lists: never write past the buffer
            if (lane == 0) record_error(t.error, kNormalBadCount, static_cast<uint32_t>(d), s.max_recv_rows(), row);
            continue;
          }
          uint8_t* peer = t.peers.ptrs[d];
          if (mine) {
            warp_copy(peer + l.recv_x + row * row_bytes, src.x, row_bytes, lane);
          } else {
            warp_copy<true>(peer + l.recv_x + row * row_bytes, src.x, row_bytes, lane);
          }
          if (a.payload.fp8) {
            uint32_t* scales = reinterpret_cast<uint32_t*>(peer + l.recv_scales) + row * a.payload.num_scales;
            for (int q = lane; q < a.payload.num_scales; q += 32) scales[q] = src.scales[q * src.scale_stride];
          }
          if (src.topk != nullptr && lane < K) {
            const int64_t e = reinterpret_cast<const volatile int64_t*>(src.topk)[lane];
            const bool local = e >= static_cast<int64_t>(d) * L && e < static_cast<int64_t>(d + 1) * L;
            reinterpret_cast<int64_t*>(peer + l.recv_topk_idx)[row * K + lane] = local ? e - static_cast<int64_t>(d) * L : -1;
            reinterpret_cast<float*>(peer + l.recv_topk_weights)[row * K + lane] = local ? reinterpret_cast<const volatile float*>(src.weights)[lane] : 0.0f;
          }
          if (lane == 0) reinterpret_cast<int32_t*>(peer + l.recv_src_idx)[row] = src.src;
        }
      }
    }
  }
  // Worst-case mode: the rows past what arrives read as "no expert".
  if (a.num_worst_tokens > 0 && a.topk_idx != nullptr) {
    const size_t first = static_cast<size_t>(num_recv) * K, end = static_cast<size_t>(a.num_worst_tokens) * K;
    for (size_t i = first + blockIdx.x * blockDim.x + threadIdx.x; i < end; i += gridDim.x * blockDim.x) {
      reinterpret_cast<int64_t*>(own + l.recv_topk_idx)[i] = -1;
      reinterpret_cast<float*>(own + l.recv_topk_weights)[i] = 0.0f;
    }
  }

  if (N > 1 && blockIdx.x == 0) {
    await_empty_chunks(t, 0, N, P, T, seq, kNormalRelayTimeout, 1,
                       [&](int v) { return t.relayed[N + v] != 0 ? -1 : t.relayed[v]; });
  }
  __threadfence_system();
  if (last_block(&t.state->finished[1])) {
    for (int p = threadIdx.x; p < P; p += blockDim.x) {
      if (!lost[p]) store_seq(t.peers.ptrs[at.local(p)] + l.arrivals + sizeof(uint64_t) * at.li, seq);
    }
    for (int i = threadIdx.x; i < P; i += blockDim.x) {
      // Across nodes a local rank may first wait for its relay's metas and
      // then its chunks (a timeout each), so it is given three.
      if (!lost[i]) {
        wait_seq(t, own + l.arrivals + sizeof(uint64_t) * i, seq, at.local(i), kNormalDispatchTimeout, N > 1 ? 3 : 1);
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) *reinterpret_cast<volatile uint64_t*>(&t.state->dispatch_calls) = seq;
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

Status check_normal_transport(const char* who, const NormalShape& s, const NormalTransport& t) {
  const std::string prefix = std::string(who) + ": ";
  if (t.rank < 0 || t.rank >= s.num_ranks) return invalid_argument(prefix + "rank " + std::to_string(t.rank) + " is not in the job");
  if (t.peers.ptrs == nullptr || t.peers.world != static_cast<uint32_t>(s.num_ranks)) {
    return invalid_argument(prefix + "peers must list all " + std::to_string(s.num_ranks) + " ranks");
  }
  if (t.state == nullptr || t.error == nullptr || t.rank_mask == nullptr || t.host_counts == nullptr) {
    return invalid_argument(prefix + "null state, error, rank mask or host counts");
  }
  if (t.timeout_ns == 0) return invalid_argument(prefix + "timeout_ns is 0 (every wait needs a limit)");
  if (t.num_sms <= 0 || t.num_sms > 1024) return invalid_argument(prefix + "num_sms=" + std::to_string(t.num_sms) + " is not in 1..1024");
  return Status();
}

Status launch_normal_dispatch(const NormalShape& s, const NormalLayout& l, const NormalTransport& t,
                              const NormalDispatchArgs& a, void* stream) {
  const char* who = "launch_normal_dispatch";
  const std::string prefix = std::string(who) + ": ";
  EPX_RETURN_IF_ERROR(check_normal_shape(who, s));
  EPX_RETURN_IF_ERROR(check_normal_payload(who, s, a.payload));
  EPX_RETURN_IF_ERROR(check_normal_transport(who, s, t));
  NormalLayout want;
  EPX_RETURN_IF_ERROR(normal_layout(s, &want));
  if (want.nvl_bytes != l.nvl_bytes || want.combine_weights != l.combine_weights) {
    return invalid_argument(prefix + "the layout is not normal_layout() of this shape");
  }
  if (a.num_tokens < 0 || a.num_tokens > s.max_tokens_per_rank) {
    return invalid_argument(prefix + "num_tokens=" + std::to_string(a.num_tokens) + " is not in [0, " +
                            std::to_string(s.max_tokens_per_rank) + "]");
  }
  if (a.num_tokens > 0 && (a.x == nullptr || !aligned16(a.x))) return invalid_argument(prefix + "x is null or not 16-byte aligned");
  if (a.payload.fp8 && a.num_tokens > 0 && a.x_scales == nullptr) return invalid_argument(prefix + "FP8 x without scales");
  if (a.cached) {
    if (a.handle.rank_prefix_matrix == nullptr) return invalid_argument(prefix + "cached dispatch without a handle");
  } else if (a.num_tokens > 0 && (a.is_token_in_rank == nullptr || a.tokens_per_expert == nullptr)) {
    return invalid_argument(prefix + "null is_token_in_rank or num_tokens_per_expert");
  }
  if ((a.topk_idx == nullptr) != (a.topk_weights == nullptr)) {
    return invalid_argument(prefix + "topk_idx and topk_weights come together");
  }
  if (a.expert_alignment < 1) return invalid_argument(prefix + "expert_alignment must be >= 1");
  if (a.num_worst_tokens < 0 || static_cast<size_t>(a.num_worst_tokens) > s.max_recv_rows()) {
    return invalid_argument(prefix + "num_worst_tokens=" + std::to_string(a.num_worst_tokens) +
                            " is beyond the buffer's " + std::to_string(s.max_recv_rows()) + " rows");
  }
  if (a.handle.send_index == nullptr || a.handle.is_token_in_rank == nullptr || a.handle.num_recv_tokens == nullptr ||
      a.handle.rank_prefix_matrix == nullptr) {
    return invalid_argument(prefix + "the handle's arrays are not allocated");
  }
  const int N = s.nodes();
  if (a.handle.send_counts == nullptr) return invalid_argument(prefix + "the handle's arrays are not allocated");
  if (N > 1) {
    if (t.rdma == nullptr || t.relayed == nullptr || t.chunk_gates == nullptr || t.chunk_staged == nullptr ||
        t.rings.rings == nullptr || t.signals.words == nullptr) {
      return invalid_argument(prefix + "a job across nodes needs the rdma space, rings and signals");
    }
    if (a.handle.node_index == nullptr || a.handle.node_counts == nullptr || a.handle.relay_counts == nullptr) {
      return invalid_argument(prefix + "a job across nodes needs the handle's node arrays");
    }
  }
  const size_t expert_shared = sizeof(int32_t) * static_cast<size_t>(s.local_experts());
  if (expert_shared > 48 * 1024) {
    return invalid_argument(prefix + std::to_string(s.local_experts()) +
                            " experts per rank: the notify kernel counts at most 12288 in shared memory");
  }
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  int stage = 0;
  auto launched = [&](const char* kernel) -> Status {
    EPX_RETURN_IF_ERROR(cuda_status(cudaGetLastError(), std::string("launch ") + kernel));
    return normal::record_stage(a.stage_events, ++stage, st);
  };
  EPX_RETURN_IF_ERROR(normal::record_stage(a.stage_events, 0, st));
  if (N > 1) {
    normal_node_scan_kernel<<<N, 1024, 0, st>>>(s, t, a);
    EPX_RETURN_IF_ERROR(launched("normal_node_scan_kernel"));
    // One block more than the data kernels: its first warp posts.
    normal_node_pack_kernel<<<t.num_sms + 1, kDispatchThreads, 0, st>>>(s, t, a);
    EPX_RETURN_IF_ERROR(launched("normal_node_pack_kernel"));
    normal_relay_wait_kernel<<<1, 32, 0, st>>>(s, t, a);
    EPX_RETURN_IF_ERROR(launched("normal_relay_wait_kernel"));
  }
  normal_notify_kernel<<<N * s.local_ranks(), kNotifyThreads, expert_shared, st>>>(s, l, t, a);
  EPX_RETURN_IF_ERROR(launched("normal_notify_kernel"));
  const size_t shared = sizeof(int32_t) * (static_cast<size_t>(N) * s.local_ranks() + s.local_ranks());
  normal_dispatch_kernel<<<t.num_sms, kDispatchThreads, shared, st>>>(s, l, t, a);
  return launched("normal_dispatch_kernel");
}

}  // namespace epx::kernels
