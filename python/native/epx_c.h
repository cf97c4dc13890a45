/* libepx_c: a C ABI over the EPX client SDK (epx::Client, epx::Job,
 * epx::LowLatencyBuffer, epx::NormalBuffer) for the Python packages `epx` and `deep_ep`, which
 * load it with ctypes. It includes no Python or torch header, so one build
 * serves every CPython and torch: tensors cross as device pointers, the
 * caller checks shapes and dtypes, and passes its CUDA stream explicitly.
 *
 * Every entry point returns a status code (epx_status, gRPC's canonical
 * codes, as epx::StatusCode) and never lets a C++ exception out. On a
 * non-OK code, epx_last_error() returns "CODE: message" for the calling
 * thread (the SDK's or the daemon's message, naming the rank, socket or
 * argument), valid until that thread's next call into this library.
 *
 * Objects are opaque handles the caller destroys, in reverse order of
 * creation: a buffer before its job, a job before its client.
 *
 * Signals across nodes: a buffer whose job spans nodes counts remote
 * arrivals in signal words, and the daemon gives a job's rank one signal
 * array. Each epx_job opens that array when its first such buffer is
 * created (low-latency or normal-mode) and lends every such buffer fresh
 * words: 64 * 4 * world_size words (64 low-latency buffers' worth), at most
 * 65536 (epxd's default max_signals; a daemon configured lower is asked for
 * less, down to what the first buffer needs). Words are never lent twice, so
 * a job's buffers spanning nodes, destroyed ones included, share that count
 * (a low-latency buffer takes 4 * world_size words, a normal-mode one
 * 2 * nodes); one more than fits fails with RESOURCE_EXHAUSTED. Every rank
 * must create its buffers in the same order (as it must anyway: creation is
 * collective). A job on one node opens no signals. */
#ifndef EPX_C_H_
#define EPX_C_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 2: epx_job_nodes, epx_normal_ranks_per_node; normal mode across nodes;
 * the job's shared signal array. 3: epx_ll_region, epx_normal_region. */
#define EPX_C_ABI_VERSION 3

typedef enum epx_status {
  EPX_OK = 0,
  EPX_CANCELLED = 1,
  EPX_UNKNOWN = 2,
  EPX_INVALID_ARGUMENT = 3,
  EPX_DEADLINE_EXCEEDED = 4,
  EPX_NOT_FOUND = 5,
  EPX_ALREADY_EXISTS = 6,
  EPX_PERMISSION_DENIED = 7,
  EPX_RESOURCE_EXHAUSTED = 8,
  EPX_FAILED_PRECONDITION = 9,
  EPX_ABORTED = 10,
  EPX_OUT_OF_RANGE = 11,
  EPX_UNSUPPORTED = 12, /* gRPC's code 12 */
  EPX_INTERNAL = 13,
  EPX_UNAVAILABLE = 14,
  EPX_DATA_LOSS = 15,
  EPX_UNAUTHENTICATED = 16
} epx_status;

typedef struct epx_client epx_client;
typedef struct epx_job epx_job;
typedef struct epx_ll_buffer epx_ll_buffer;
/* A deferred receive (DeepEP's return_recv_hook). */
typedef struct epx_ll_hook epx_ll_hook;

/* EPX_C_ABI_VERSION of the loaded library. */
int epx_abi_version(void);
/* The calling thread's message for its last non-OK call ("" if none). */
const char* epx_last_error(void);

/* ---- Client ---- */
/* Connects to the epxd listening on `socket_path`. name: shown by
 * `epxctl status` (NULL or "": "pid <n>"). rpc_timeout_ms <= 0: the SDK's. */
int epx_client_connect(const char* socket_path, const char* name, int rpc_timeout_ms, epx_client** out);
void epx_client_destroy(epx_client* client);
/* The daemon's node name and peer address (the coordinator address other
 * ranks pass to join), NUL-terminated into the caller's buffers;
 * OUT_OF_RANGE when a buffer is too small. */
int epx_client_daemon_info(epx_client* client, char* node, size_t node_len, char* peer_address,
                           size_t peer_address_len);

/* ---- Job ---- */
/* Joins `job_id` as `rank` of `world_size` and waits at its bootstrap
 * barrier (timeout_ms; <= 0: 60 s). coordinator: peer address of the
 * coordinating daemon, NULL or "": the local one. gpu_pci_address: the
 * rank's GPU (epx_gpu_pci_address), so the daemon serves it from the NICs
 * nearest that GPU; NULL or "": every NIC. */
int epx_client_join(epx_client* client, const char* job_id, uint32_t world_size, uint32_t rank, uint32_t local_rank,
                    const char* coordinator, int timeout_ms, const char* gpu_pci_address, epx_job** out);
/* CUDA device `device`'s PCI address ("0000:19:00.0"), NUL-terminated;
 * an error when CUDA has no such device (no GPU). */
int epx_gpu_pci_address(int device, char* out, size_t len);
/* Leaves the job (peers see the rank lost) and frees the handle. */
void epx_job_destroy(epx_job* job);
int epx_job_barrier(epx_job* job, int timeout_ms);
/* Ranks the daemon reported lost, ascending: *count of them, the first
 * `capacity` written to ranks. */
int epx_job_lost_ranks(epx_job* job, uint32_t* ranks, size_t capacity, size_t* count);
/* The node of every rank: node_of_rank[r] is the index of rank r's node (its
 * daemon: node name and address), nodes numbered in the order of their
 * first rank, so rank 0's node is 0. *count: the world size; the first
 * `capacity` written. */
int epx_job_nodes(epx_job* job, uint32_t* node_of_rank, size_t capacity, size_t* count);

/* ---- Low-latency buffer (epx/low_latency.h) ---- */
typedef struct epx_ll_options {
  int num_max_dispatch_tokens_per_rank;
  int hidden;
  int num_experts;
  int num_topk;
  int device;     /* CUDA device ordinal */
  int timeout_ms; /* how long a receive waits for a rank; <= 0: 10 s */
} epx_ll_options;

/* What a combine needs from its dispatch; points into the buffer. */
typedef struct epx_ll_handle {
  int half;
  int num_tokens;
  const int32_t* src_info;
  const int64_t* layout_range;
  const int32_t* recv_count;
} epx_ll_handle;

typedef struct epx_ll_dispatch_out {
  void* recv_x;
  void* recv_scales; /* NULL for BF16 */
  int32_t* recv_count;
  epx_ll_handle handle;
} epx_ll_dispatch_out;

/* DeepEP's get_low_latency_rdma_size_hint: bytes of one rank's rdma space
 * for this shape (top-k at the kernels' limit, so an upper bound). */
int epx_ll_size_hint(int num_max_dispatch_tokens_per_rank, int hidden, int num_ranks, int num_experts, uint64_t* bytes);

/* Collective: every rank of the job calls it with the same options. Across
 * nodes it takes 4 * world_size words of the job's signal array (above). */
int epx_ll_create(epx_job* job, const epx_ll_options* options, epx_ll_buffer** out);
void epx_ll_destroy(epx_ll_buffer* buffer);
int epx_ll_local_experts(epx_ll_buffer* buffer, int* out);

/* x: bf16 [num_tokens][hidden]; topk_idx: int64 [num_tokens][num_topk].
 * cumulative_recv_stats: NULL or int32 [local_experts]. With
 * return_recv_hook, *hook receives the deferred receive (else NULL). */
int epx_ll_dispatch(epx_ll_buffer* buffer, const void* x, const int64_t* topk_idx, int num_tokens, int use_fp8,
                    int round_scale, int use_ue8m0, int return_recv_hook, int32_t* cumulative_recv_stats, void* stream,
                    epx_ll_dispatch_out* out, epx_ll_hook** hook);
/* x: bf16 [local_experts][num_ranks * num_max][hidden]; topk_weights: float
 * [num_tokens][num_topk]; out_x: NULL (the buffer's) or bf16
 * [num_tokens][hidden]. *combined_x: where the result is. */
int epx_ll_combine(epx_ll_buffer* buffer, const void* x, const int64_t* topk_idx, const float* topk_weights,
                   const epx_ll_handle* handle, int zero_copy, int return_recv_hook, void* out_x, void* stream,
                   void** combined_x, epx_ll_hook** hook);
int epx_ll_next_combine_buffer(epx_ll_buffer* buffer, const epx_ll_handle* handle, void** out);
int epx_ll_clean(epx_ll_buffer* buffer);
int epx_ll_check(epx_ll_buffer* buffer);
int epx_ll_mask_rank(epx_ll_buffer* buffer, uint32_t rank);
int epx_ll_masked_ranks(epx_ll_buffer* buffer, uint32_t* ranks, size_t capacity, size_t* count);

/* Enqueues the deferred receive on the call's stream (once). */
int epx_ll_hook_run(epx_ll_hook* hook);
void epx_ll_hook_destroy(epx_ll_hook* hook);

/* ---- Normal-mode buffer (epx/normal.h) ----
 * Inside one node, or across nodes when every node holds the same number of
 * consecutive ranks (one network hop per destination node, then NVLink;
 * create() refuses other layouts with FAILED_PRECONDITION). */
typedef struct epx_normal_buffer epx_normal_buffer;
typedef struct epx_normal_handle epx_normal_handle;

typedef struct epx_normal_options {
  int num_max_tokens_per_rank;
  int hidden;
  int num_experts;
  int num_topk;
  int device;
  int timeout_ms; /* <= 0: 10 s */
} epx_normal_options;

/* Bytes of GPU memory the receive space of a buffer of this shape holds on
 * one node (to fit num_nvl_bytes); across nodes it is no larger, and the
 * buffer also holds a window for the network hop (sized by EPX). */
int epx_normal_size(int num_max_tokens_per_rank, int hidden, int num_ranks, int num_experts, int num_topk,
                    uint64_t* bytes);
/* Collective: every rank of the job calls it with the same options. Across
 * nodes it takes 2 * nodes words of the job's signal array (above). */
int epx_normal_create(epx_job* job, const epx_normal_options* options, epx_normal_buffer** out);
/* Ranks of each node (the world size inside one node). */
int epx_normal_ranks_per_node(epx_normal_buffer* buffer, int* out);
void epx_normal_destroy(epx_normal_buffer* buffer);
int epx_normal_new_handle(epx_normal_buffer* buffer, epx_normal_handle** out);
void epx_normal_handle_destroy(epx_normal_handle* handle);

typedef struct epx_normal_handle_info {
  int num_tokens;      /* -1: no dispatch filled it yet */
  int num_recv_tokens; /* -1 after a worst-case dispatch */
  /* [ranks][ranks]; across nodes only the columns of this rank's node are
   * filled (the others 0). */
  const int32_t* rank_prefix_matrix;
  /* [num_tokens][ranks] on one node; across nodes
   * [nodes][num_max_tokens_per_rank][ranks_per_node] (epx/normal.h). */
  const int32_t* send_index;
  const void* is_token_in_rank;
  const int32_t* device_num_recv_tokens;
} epx_normal_handle_info;
int epx_normal_handle_get(const epx_normal_handle* handle, epx_normal_handle_info* out);

/* get_dispatch_layout. num_tokens_per_rdma_rank: NULL, or int32 [nodes]
 * (world size / epx_normal_ranks_per_node), each node's count of tokens
 * that any of its ranks receives. */
int epx_normal_layout(epx_normal_buffer* buffer, const int64_t* topk_idx, int num_tokens, int32_t* num_tokens_per_rank,
                      int32_t* num_tokens_per_rdma_rank, int32_t* num_tokens_per_expert, void* is_token_in_rank,
                      void* stream);

typedef struct epx_normal_dispatch_in {
  const void* x;
  int num_tokens;
  const void* x_scales; /* NULL: BF16 */
  int num_scales;
  int scale_token_stride;
  int scale_hidden_stride;
  const int64_t* topk_idx;
  const float* topk_weights;
  const void* is_token_in_rank;
  const int32_t* num_tokens_per_expert;
  int cached;
  int expert_alignment;
  int num_worst_tokens;
  int num_sms; /* 0: default */
} epx_normal_dispatch_in;

typedef struct epx_normal_dispatch_out {
  void* recv_x;
  void* recv_x_scales;
  int64_t* recv_topk_idx;
  float* recv_topk_weights;
  int32_t* recv_src_idx;
  int num_recv_tokens; /* -1 in worst-case mode */
} epx_normal_dispatch_out;

/* Runs on `stream`. expert_counts: int [local_experts] (aligned counts),
 * written unless worst-case or cached mode (then *expert_counts_written = 0). */
int epx_normal_dispatch(epx_normal_buffer* buffer, epx_normal_handle* handle, const epx_normal_dispatch_in* in,
                        void* stream, epx_normal_dispatch_out* out, int* expert_counts, int* expert_counts_written);
/* out_x / out_topk_weights: NULL for the buffer's own. */
int epx_normal_combine(epx_normal_buffer* buffer, const epx_normal_handle* handle, const void* x,
                       const float* topk_weights, const void* bias0, const void* bias1, void* out_x,
                       float* out_topk_weights, int num_sms, void* stream, void** combined_x,
                       float** combined_topk_weights);
int epx_normal_check(epx_normal_buffer* buffer);
int epx_normal_mask_rank(epx_normal_buffer* buffer, uint32_t rank);

/* ---- A buffer's own memory (deep_ep's get_local_buffer_tensor) ----
 * Where this rank's buffer keeps what other ranks, the daemon and its
 * kernels write during calls, for a caller that aliases it:
 *   EPX_REGION_NVL   its nvl space: device memory that same-node ranks
 *                    store into over CUDA IPC (every buffer has one; the
 *                    layouts are kernels/normal_format.h's NormalLayout
 *                    and low_latency_kernels.h's LowLatencyLayout).
 *   EPX_REGION_RDMA  its rdma space: the window the daemon's NICs write
 *                    other nodes' data into and send from; only when the
 *                    job spans nodes (a low-latency buffer: when any rank
 *                    is remote), else FAILED_PRECONDITION saying so.
 * INVALID_ARGUMENT for another kind. Valid until the buffer is destroyed;
 * its calls write it, so a write into it while any rank's call is in
 * flight corrupts that call. */
typedef enum epx_region_kind { EPX_REGION_NVL = 0, EPX_REGION_RDMA = 1 } epx_region_kind;

typedef struct epx_region {
  void* data;     /* device pointer of its first byte (for a host window: its mapping for the GPU) */
  uint64_t bytes; /* what the buffer lays out in it (a window may be rounded up beyond) */
  int is_device;  /* 1: GPU memory; 0: pinned host memory mapped for the GPU (an rdma
                   * window the daemon's rails could not take as GPU memory) */
} epx_region;

int epx_ll_region(epx_ll_buffer* buffer, int kind, epx_region* out);
int epx_normal_region(epx_normal_buffer* buffer, int kind, epx_region* out);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // EPX_C_H_
