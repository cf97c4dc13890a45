"""LowLatencyBuffer: epx::LowLatencyBuffer (DeepEP's low-latency dispatch
and combine) over raw device pointers. Callers check shapes and dtypes
first (deep_ep.Buffer does); this layer only moves pointers and statuses.
Across nodes the buffer takes words of the job's one signal array, which
libepx_c shares among all the job's buffers (python/native/epx_c.h)."""

import ctypes
from typing import Callable, List, NamedTuple, Optional

from . import _native
from .client import Job


class DispatchOutput(NamedTuple):
    recv_x: int        # device pointer
    recv_scales: int   # device pointer, 0 for BF16
    recv_count: int    # device pointer
    handle: _native.LLHandle
    hook: Optional[Callable[[], None]]


class CombineOutput(NamedTuple):
    combined_x: int    # device pointer
    hook: Optional[Callable[[], None]]


class _Hook:
    """The deferred receive: calling it enqueues the receive (once)."""

    def __init__(self, handle: int) -> None:
        self._handle: Optional[int] = handle

    def __call__(self) -> None:
        _native.call("epx_ll_hook_run", self._handle)

    def __del__(self) -> None:
        try:
            handle, self._handle = self._handle, None
            _native.destroy("epx_ll_hook_destroy", handle)
        except Exception:
            pass


def _hook(handle: ctypes.c_void_p) -> Optional[Callable[[], None]]:
    return _Hook(handle.value) if handle.value else None


def size_hint(num_max_dispatch_tokens_per_rank: int, hidden: int, num_ranks: int, num_experts: int) -> int:
    """Bytes of one rank's rdma space for this shape (an upper bound)."""
    out = ctypes.c_uint64()
    _native.call("epx_ll_size_hint", int(num_max_dispatch_tokens_per_rank), int(hidden), int(num_ranks),
                 int(num_experts), ctypes.byref(out))
    return out.value


class LowLatencyBuffer:
    """Collective: every rank of `job` creates it with the same shape."""

    def __init__(self, job: Job, num_max_dispatch_tokens_per_rank: int, hidden: int, num_experts: int,
                 num_topk: int, device: int, timeout_ms: int = 0) -> None:
        self.job = job
        self.shape = (int(num_max_dispatch_tokens_per_rank), int(hidden), int(num_experts), int(num_topk))
        options = _native.LLOptions(int(num_max_dispatch_tokens_per_rank), int(hidden), int(num_experts),
                                    int(num_topk), int(device), int(timeout_ms))
        handle = ctypes.c_void_p()
        _native.call("epx_ll_create", job.handle, ctypes.byref(options), ctypes.byref(handle))
        self._handle: Optional[int] = handle.value
        # deep_ep's tensors over this buffer's memory (deep_ep/tensors.py); emptied when the memory goes.
        self.tensor_cache: dict = {}
        local = ctypes.c_int()
        _native.call("epx_ll_local_experts", self._handle, ctypes.byref(local))
        self.local_experts = local.value

    def dispatch(self, x: int, topk_idx: int, num_tokens: int, use_fp8: bool, round_scale: bool, use_ue8m0: bool,
                 return_recv_hook: bool, cumulative_recv_stats: int, stream: int) -> DispatchOutput:
        out = _native.LLDispatchOut()
        hook = ctypes.c_void_p()
        _native.call("epx_ll_dispatch", self._handle, x, topk_idx, int(num_tokens), int(use_fp8), int(round_scale),
                     int(use_ue8m0), int(return_recv_hook), cumulative_recv_stats or None, stream or None,
                     ctypes.byref(out), ctypes.byref(hook))
        return DispatchOutput(out.recv_x or 0, out.recv_scales or 0, out.recv_count or 0, out.handle, _hook(hook))

    def combine(self, x: int, topk_idx: int, topk_weights: int, handle: _native.LLHandle, zero_copy: bool,
                return_recv_hook: bool, out: int, stream: int) -> CombineOutput:
        combined = ctypes.c_void_p()
        hook = ctypes.c_void_p()
        _native.call("epx_ll_combine", self._handle, x, topk_idx, topk_weights, ctypes.byref(handle), int(zero_copy),
                     int(return_recv_hook), out or None, stream or None, ctypes.byref(combined), ctypes.byref(hook))
        return CombineOutput(combined.value or 0, _hook(hook))

    def next_combine_buffer(self, handle: _native.LLHandle) -> int:
        out = ctypes.c_void_p()
        _native.call("epx_ll_next_combine_buffer", self._handle, ctypes.byref(handle), ctypes.byref(out))
        return out.value or 0

    def clean(self) -> None:
        _native.call("epx_ll_clean", self._handle)

    def check(self) -> None:
        """Raises the first failure a kernel recorded (e.g. the rank that never sent)."""
        _native.call("epx_ll_check", self._handle)

    def mask_rank(self, rank: int) -> None:
        _native.call("epx_ll_mask_rank", self._handle, int(rank))

    def masked_ranks(self) -> List[int]:
        n = self.job.world_size
        ranks = (ctypes.c_uint32 * n)()
        count = ctypes.c_size_t()
        _native.call("epx_ll_masked_ranks", self._handle, ranks, n, ctypes.byref(count))
        return [ranks[i] for i in range(min(count.value, n))]

    def region(self, rdma: bool = False) -> _native.LocalRegion:
        """This rank's nvl space (device memory same-node ranks store into),
        or with rdma its rdma window (only with ranks on other nodes; else
        EpxFailedPreconditionError). Freed by close()."""
        return _native.region("epx_ll_region", self._handle, rdma)

    def close(self) -> None:
        handle, self._handle = self._handle, None
        self.tensor_cache = {}
        _native.destroy("epx_ll_destroy", handle)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
