"""NormalBuffer: epx::NormalBuffer (DeepEP's normal-mode dispatch and
combine) over raw device pointers, inside one node or across nodes that
each hold the same number of consecutive ranks (one network hop per
destination node through epxd, then NVLink). Callers check shapes and
dtypes first (deep_ep.Buffer does); this layer only moves pointers and
statuses. A NormalHandle is the native handle a dispatch fills; handles no
longer referenced go back to the buffer's pool, so a dispatch allocates no
device memory once warm.

Across nodes the buffer takes words of the job's one signal array, which
libepx_c shares among all the job's buffers (python/native/epx_c.h)."""

import ctypes
import weakref
from typing import List, NamedTuple, Optional

from . import _native
from .client import Job


def size(num_max_tokens_per_rank: int, hidden: int, num_ranks: int, num_experts: int, num_topk: int) -> int:
    """Bytes of GPU memory a buffer of this shape holds for its receive space
    on one node (across nodes no more, plus its window for the network hop)."""
    out = ctypes.c_uint64()
    _native.call("epx_normal_size", int(num_max_tokens_per_rank), int(hidden), int(num_ranks), int(num_experts),
                 int(num_topk), ctypes.byref(out))
    return out.value


def max_tokens_for(num_bytes: int, hidden: int, num_ranks: int, num_experts: int, num_topk: int) -> int:
    """The most tokens per rank a buffer of at most num_bytes holds (0: none)."""
    lo, hi = 0, 1
    while size(hi, hidden, num_ranks, num_experts, num_topk) <= num_bytes and hi < (1 << 24):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if size(mid, hidden, num_ranks, num_experts, num_topk) <= num_bytes:
            lo = mid
        else:
            hi = mid
    return lo


class NormalHandle:
    """A native handle, owned by its buffer's pool."""

    def __init__(self, pointer: int) -> None:
        self.pointer = pointer

    def info(self) -> _native.NormalHandleInfo:
        out = _native.NormalHandleInfo()
        _native.call("epx_normal_handle_get", self.pointer, ctypes.byref(out))
        return out


class DispatchOutput(NamedTuple):
    recv_x: int
    recv_x_scales: int
    recv_topk_idx: int
    recv_topk_weights: int
    recv_src_idx: int
    num_recv_tokens: int  # -1 in worst-case mode
    expert_counts: Optional[List[int]]  # None in worst-case and cached mode


class NormalBuffer:
    """Collective: every rank of `job` creates it with the same shape."""

    def __init__(self, job: Job, num_max_tokens_per_rank: int, hidden: int, num_experts: int, num_topk: int,
                 device: int, timeout_ms: int = 0) -> None:
        self.job = job
        self.shape = (int(num_max_tokens_per_rank), int(hidden), int(num_experts), int(num_topk))
        self.local_experts = int(num_experts) // job.world_size
        options = _native.NormalOptions(int(num_max_tokens_per_rank), int(hidden), int(num_experts), int(num_topk),
                                        int(device), int(timeout_ms))
        handle = ctypes.c_void_p()
        _native.call("epx_normal_create", job.handle, ctypes.byref(options), ctypes.byref(handle))
        self._handle: Optional[int] = handle.value
        self._free: List[int] = []      # native handles no Python object references
        self._all: List[int] = []
        ranks_per_node = ctypes.c_int()
        _native.call("epx_normal_ranks_per_node", self._handle, ctypes.byref(ranks_per_node))
        self.ranks_per_node = ranks_per_node.value
        self.num_nodes = job.world_size // max(self.ranks_per_node, 1)

    def acquire_handle(self, owner: object) -> NormalHandle:
        """A native handle that returns to the pool when `owner` is collected."""
        if self._free:
            pointer = self._free.pop()
        else:
            out = ctypes.c_void_p()
            _native.call("epx_normal_new_handle", self._handle, ctypes.byref(out))
            pointer = out.value
            self._all.append(pointer)
        weakref.finalize(owner, self._free.append, pointer)
        return NormalHandle(pointer)

    def layout(self, topk_idx: int, num_tokens: int, per_rank: int, per_expert: int, in_rank: int,
               stream: int, per_node: int = 0) -> None:
        """get_dispatch_layout's kernel (the buffer's num_experts and top-k).
        per_node: 0, or int32 [num_nodes] (DeepEP's num_tokens_per_rdma_rank)."""
        _native.call("epx_normal_layout", self._handle, topk_idx or None, int(num_tokens), per_rank,
                     per_node or None, per_expert, in_rank or None, stream or None)

    def dispatch(self, handle: NormalHandle, args: _native.NormalDispatchIn, stream: int) -> DispatchOutput:
        out = _native.NormalDispatchOut()
        counts = (ctypes.c_int * max(self.local_experts, 1))()
        written = ctypes.c_int()
        _native.call("epx_normal_dispatch", self._handle, handle.pointer, ctypes.byref(args), stream or None,
                     ctypes.byref(out), counts, ctypes.byref(written))
        expert_counts = [counts[i] for i in range(self.local_experts)] if written.value else None
        return DispatchOutput(out.recv_x or 0, out.recv_x_scales or 0, out.recv_topk_idx or 0,
                              out.recv_topk_weights or 0, out.recv_src_idx or 0, out.num_recv_tokens, expert_counts)

    def combine(self, handle: NormalHandle, x: int, topk_weights: int, bias0: int, bias1: int, out_x: int,
                out_topk_weights: int, num_sms: int, stream: int) -> None:
        combined = ctypes.c_void_p()
        weights = ctypes.c_void_p()
        _native.call("epx_normal_combine", self._handle, handle.pointer, x or None, topk_weights or None,
                     bias0 or None, bias1 or None, out_x or None, out_topk_weights or None, int(num_sms),
                     stream or None, ctypes.byref(combined), ctypes.byref(weights))

    def check(self) -> None:
        """Raises the first failure a kernel recorded (e.g. the rank that never reported)."""
        _native.call("epx_normal_check", self._handle)

    def mask_rank(self, rank: int) -> None:
        _native.call("epx_normal_mask_rank", self._handle, int(rank))

    def region(self, rdma: bool = False) -> _native.LocalRegion:
        """This rank's receive space (device memory same-node ranks store
        into), or with rdma its window for the network hop (across nodes
        only; else EpxFailedPreconditionError). Freed by close()."""
        return _native.region("epx_normal_region", self._handle, rdma)

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        for pointer in self._all:
            _native.destroy("epx_normal_handle_destroy", pointer)
        self._all, self._free = [], []
        _native.destroy("epx_normal_destroy", handle)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
