"""deep_ep.Buffer backed by EPX: DeepEP v1's Python API (names, signatures,
defaults, return tuples, dtypes) over the node's epxd.

Construction joins a job from the group (epx.join_group: one
all_gather_object, then the daemon). The low-latency buffer is created on
the first low_latency_dispatch, when its shape is known (collective, as
every rank makes that call), and is reused while the shape stays the same.
Every call enqueues on torch.cuda.current_stream().

Arguments EPX ignores: num_nvl_bytes beyond sizing normal mode,
num_rdma_bytes (EPX sizes its own memory), num_qps_per_rank (no NVSHMEM
queue pairs; the daemon owns the NICs), allow_mnnvl, use_fabric, Config's
chunk sizes. Arguments it cannot honour raise EpxInvalidArgumentError:
allow_nvlink_for_low_latency_mode=False, comm (mpi4py) without a group,
use_logfmt=True, the *_wait_recv_cost_stats tensors.

Normal mode (get_dispatch_layout, dispatch, combine) runs inside one node
and across nodes that each hold the same number of consecutive ranks
(deep_ep/normal_mode.py says how). internode_dispatch and internode_combine
keep DeepEP's signatures and are dispatch and combine: EPX has one
implementation for both, with the same 6-tuple handle (DeepEP's dispatch
calls internode_dispatch itself when the group spans nodes; here either
works anywhere). A Buffer may hold a low-latency and a normal-mode buffer
spanning nodes at once (SGLang's AUTO mode): they share the job's one
signal array (python/native/epx_c.h).

get_local_buffer_tensor aliases this rank's own memory (no copy): the
NVLink buffer is the normal-mode buffer's receive space (from the first
dispatch on); the RDMA buffer (use_rdma_buffer=True, only across nodes) is
the network window of the low-latency buffer with low_latency_mode=True
(from the first low_latency_dispatch on), else of the normal-mode buffer.
Before that memory exists it raises EpxFailedPreconditionError saying why.
EPX's calls write that memory, so writes through the tensor during any
rank's call corrupt it, as in DeepEP (the method's docstring has the
details)."""

from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import epx
from epx import _native
from epx.errors import EpxFailedPreconditionError
from epx.low_latency import LowLatencyBuffer, size_hint

from . import checks, normal_mode
from .config import Config
from .event_overlap import EventOverlap, record_on_current_stream
from .streams import current_stream_pointer
from .tensors import alias, device_tensor, element_size, local_view


class Buffer:
    num_sms: int = 20

    def __init__(self, group: Optional[Any], num_nvl_bytes: int = 0, num_rdma_bytes: int = 0,
                 low_latency_mode: bool = False, num_qps_per_rank: int = 24,
                 allow_nvlink_for_low_latency_mode: bool = True, allow_mnnvl: bool = False, use_fabric: bool = False,
                 explicitly_destroy: bool = False, enable_shrink: bool = False, comm: Optional[Any] = None) -> None:
        call = "deep_ep.Buffer"
        if group is None:
            raise checks.unsupported(call, "comm", "EPX bootstraps from a torch.distributed group; pass group")
        if not allow_nvlink_for_low_latency_mode:
            raise checks.unsupported(call, "allow_nvlink_for_low_latency_mode=False",
                                     "EPX always reaches same-node ranks over NVLink")
        import torch.distributed as dist
        self.rank = dist.get_rank(group)
        self.group_size = dist.get_world_size(group)
        self.group = group
        self.num_nvl_bytes = num_nvl_bytes
        self.num_rdma_bytes = num_rdma_bytes
        self.low_latency_mode = low_latency_mode
        self.explicitly_destroy = explicitly_destroy
        self.enable_shrink = enable_shrink
        self.job: Optional[epx.Job] = epx.join_group(group)
        # Each rank's node index (its daemon's), from the job's rank table:
        # num_tokens_per_rdma_rank has one entry per node.
        self.node_of_rank: List[int] = self.job.node_of_rank()
        self.num_nodes = max(self.node_of_rank) + 1 if self.node_of_rank else 1
        self._ll: Optional[LowLatencyBuffer] = None
        self._normal: Optional[Any] = None  # epx.normal.NormalBuffer, made on the first dispatch
        self._device = 0
        # The native handle of each half's latest dispatch, by its src_info pointer.
        self._handles: Dict[int, _native.LLHandle] = {}
        self._pending_masks: List[int] = []

    # ---- lifetime ----
    def destroy(self) -> None:
        if not self.explicitly_destroy:
            raise EpxFailedPreconditionError("deep_ep.Buffer.destroy: create the Buffer with explicitly_destroy=True",
                                             "FAILED_PRECONDITION")
        self._release()

    def _release(self) -> None:
        if self._ll is not None:
            self._ll.close()
            self._ll = None
        if self._normal is not None:
            self._normal.close()
            self._normal = None
        if self.job is not None:
            client = self.job.client
            self.job.leave()
            client.close()
            self.job = None

    def __del__(self) -> None:
        try:
            self._release()
        except Exception:
            pass

    # ---- static helpers ----
    @staticmethod
    def is_sm90_compiled() -> bool:
        return True

    @staticmethod
    def set_num_sms(new_num_sms: int) -> None:
        assert new_num_sms % 2 == 0, "The SM count must be even"
        Buffer.num_sms = new_num_sms

    @staticmethod
    def capture() -> EventOverlap:
        return EventOverlap(record_on_current_stream())

    @staticmethod
    def get_low_latency_rdma_size_hint(num_max_dispatch_tokens_per_rank: int, hidden: int, num_ranks: int,
                                       num_experts: int) -> int:
        return size_hint(num_max_dispatch_tokens_per_rank, hidden, num_ranks, num_experts)

    @staticmethod
    def get_dispatch_config(num_ranks: int) -> Config:
        return Config(Buffer.num_sms)

    @staticmethod
    def get_combine_config(num_ranks: int) -> Config:
        return Config(Buffer.num_sms)

    def get_comm_stream(self) -> Any:
        import torch
        return torch.cuda.current_stream()

    # ---- normal mode (inside one node and across nodes) ----
    def get_local_buffer_tensor(self, dtype: Any, size: Optional[Any] = None, offset: int = 0,
                                use_rdma_buffer: bool = False) -> Any:
        """This rank's raw buffer memory as a CUDA tensor of `dtype`, as
        DeepEP's: no copy, the tensor aliases the memory EPX communicates
        through.

        use_rdma_buffer=False: the NVLink buffer, i.e. the normal-mode
        buffer's receive space: GPU memory that this node's ranks store into
        over CUDA IPC during dispatch and combine (DeepEP's NVL buffer, which
        num_nvl_bytes sizes here too). It exists from the first dispatch (or
        internode_dispatch) on: its layout depends on hidden, num_experts and
        top-k, so EPX cannot make it at construction.

        use_rdma_buffer=True: the RDMA buffer, i.e. the window the daemon's
        NICs write other nodes' data into and send from. With
        low_latency_mode=True it is the low-latency buffer's (DeepEP's RDMA
        buffer is the low-latency buffer), made on the first
        low_latency_dispatch; otherwise the normal-mode buffer's, made on the
        first dispatch. It exists only when the group spans nodes: on one
        node every rank is reached over NVLink and EPX has no RDMA memory.
        It is GPU memory, or pinned host memory mapped for the GPU when the
        daemon's rails cannot take GPU memory (the window's host fallback).

        Where the memory does not exist (yet), EpxFailedPreconditionError
        says why and what to do.

        offset: where the tensor starts, in bytes (as DeepEP: added to a byte
        pointer); a multiple of dtype's element size (DeepEP does not check:
        a misaligned tensor faults in CUDA kernels) and at most the buffer's
        size. With size=None the tensor is 1-D and holds every whole element
        from offset to the end: (num_bytes - offset) // element_size of them
        (DeepEP takes num_bytes // element_size and so runs past the end of
        its buffer when offset > 0; EPX does not). With a torch.Size `size`
        (or a tuple of ints), the first size.numel() of those elements viewed
        as `size`; EpxInvalidArgumentError when fewer fit. num_bytes is what
        EPX lays out for that buffer, not num_nvl_bytes or num_rdma_bytes:
        EPX sizes its own memory (the NVLink buffer is the largest that fits
        num_nvl_bytes for the dispatch's shape).

        Lifetime: valid until destroy(), and for the normal-mode buffer's
        memory only until a dispatch re-creates that buffer for another
        hidden, num_experts or top-k (take a new tensor after it); using it
        later touches freed memory. The tensor holds this Buffer, so
        dropping the Buffer alone frees nothing under it.

        Contents: EPX's calls write this memory (this rank's kernels, other
        ranks' NVLink stores, the daemon's network writes), as DeepEP's do,
        so a write through the tensor while any rank's call is in flight
        corrupts that call, and a read then sees whatever is there. Between
        calls it holds what the last call left, including EPX's per-call
        sequence and arrival words (kernels/normal_format.h,
        kernels/low_latency_kernels.h): overwriting those makes a later call
        wait for ranks that already sent, and time out naming them."""
        import torch
        call = "deep_ep.Buffer.get_local_buffer_tensor"
        if not isinstance(dtype, torch.dtype):
            raise checks.fail(call, f"dtype must be a torch.dtype, got {dtype!r}")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise checks.fail(call, f"offset must be an int >= 0 (bytes), got {offset!r}")
        if size is not None and (not isinstance(size, (torch.Size, tuple, list)) or
                                 not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in size)):
            raise checks.fail(call, f"size must be None or a torch.Size of dimensions >= 0, got {size!r}")
        itemsize = element_size(dtype)
        if offset % itemsize != 0:
            raise checks.fail(call, f"offset={offset} is not a multiple of {dtype}'s {itemsize} bytes (a misaligned "
                                    "tensor faults in CUDA kernels)")
        owner, region = self._local_region(call, bool(use_rdma_buffer))
        count, shape = local_view(call, region.bytes, offset, itemsize, size)
        # The tensor holds this Buffer and the native buffer object, so
        # neither is collected (and its memory freed) under it.
        return alias(region.pointer + offset, count, shape, dtype, self._device, (self, owner))

    def _local_region(self, call: str, use_rdma_buffer: bool) -> Tuple[Any, _native.LocalRegion]:
        """The native buffer whose memory get_local_buffer_tensor aliases, and
        that memory; EpxFailedPreconditionError naming why when there is none."""
        if self.job is None:
            raise EpxFailedPreconditionError(f"{call}: the Buffer was destroyed", "FAILED_PRECONDITION")
        if not use_rdma_buffer:
            if self._normal is None:
                hint = "" if self.num_nvl_bytes > 0 else \
                    " (num_nvl_bytes=0 holds no normal-mode buffer: create the Buffer with num_nvl_bytes, e.g. " \
                    "Config.get_nvl_buffer_size_hint)"
                raise EpxFailedPreconditionError(
                    f"{call}: the NVLink buffer does not exist yet: EPX makes it on the first dispatch (or "
                    f"internode_dispatch), whose hidden, num_experts and top-k lay it out; call this after "
                    f"that dispatch{hint}", "FAILED_PRECONDITION")
            return self._normal, self._normal.region(rdma=False)
        if self.num_nodes == 1:
            raise EpxFailedPreconditionError(
                f"{call}: use_rdma_buffer=True, but this Buffer's group is on one node: EPX reaches every rank over "
                f"NVLink there and holds no RDMA memory; use_rdma_buffer=False gives the NVLink buffer (the "
                f"normal-mode buffer's, from the first dispatch on)", "FAILED_PRECONDITION")
        if self.low_latency_mode:
            if self._ll is None:
                raise EpxFailedPreconditionError(
                    f"{call}: the RDMA buffer does not exist yet: with low_latency_mode=True it is the low-latency "
                    f"buffer's window, which EPX makes on the first low_latency_dispatch (whose shape sizes it); call "
                    f"this after that dispatch", "FAILED_PRECONDITION")
            return self._ll, self._ll.region(rdma=True)
        if self._normal is None:
            raise EpxFailedPreconditionError(
                f"{call}: the RDMA buffer does not exist yet: it is the normal-mode buffer's window for the network "
                f"hop, which EPX makes on the first dispatch (or internode_dispatch), whose hidden, num_experts and "
                f"top-k lay it out; call this after that dispatch", "FAILED_PRECONDITION")
        return self._normal, self._normal.region(rdma=True)

    def get_dispatch_layout(self, topk_idx: Any, num_experts: int, previous_event: Optional[EventOverlap] = None,
                            async_finish: bool = False, allocate_on_comm_stream: bool = False) -> Tuple:
        return normal_mode.get_dispatch_layout(self, topk_idx, num_experts, previous_event, async_finish)

    def dispatch(self, x: Any, handle: Optional[Tuple] = None, num_tokens_per_rank: Optional[Any] = None,
                 num_tokens_per_rdma_rank: Optional[Any] = None, is_token_in_rank: Optional[Any] = None,
                 num_tokens_per_expert: Optional[Any] = None, topk_idx: Optional[Any] = None,
                 topk_weights: Optional[Any] = None, expert_alignment: int = 1, num_worst_tokens: int = 0,
                 config: Optional[Config] = None, previous_event: Optional[EventOverlap] = None,
                 async_finish: bool = False, allocate_on_comm_stream: bool = False) -> Tuple:
        return normal_mode.dispatch(self, "deep_ep.Buffer.dispatch", x, handle, num_tokens_per_rank,
                                    num_tokens_per_rdma_rank, is_token_in_rank, num_tokens_per_expert, topk_idx,
                                    topk_weights, expert_alignment, num_worst_tokens, _num_sms(config),
                                    previous_event, async_finish)

    def combine(self, x: Any, handle: Tuple, topk_weights: Optional[Any] = None,
                bias: Union[Any, Tuple[Any, Any]] = None, config: Optional[Config] = None,
                previous_event: Optional[EventOverlap] = None, async_finish: bool = False,
                allocate_on_comm_stream: bool = False) -> Tuple:
        return normal_mode.combine(self, "deep_ep.Buffer.combine", x, handle, topk_weights, bias, _num_sms(config),
                                   previous_event, async_finish)

    # DeepEP's signatures; the same implementation as dispatch and combine
    # (one for one node and many), with the same 6-tuple handle.
    def internode_dispatch(self, x: Any, handle: Optional[Tuple] = None, num_tokens_per_rank: Any = None,
                           num_tokens_per_rdma_rank: Any = None, is_token_in_rank: Any = None,
                           num_tokens_per_expert: Any = None, topk_idx: Any = None, topk_weights: Any = None,
                           expert_alignment: int = 1, num_worst_tokens: int = 0, config: Optional[Config] = None,
                           previous_event: Optional[EventOverlap] = None, async_finish: bool = False,
                           allocate_on_comm_stream: bool = False) -> Tuple:
        return normal_mode.dispatch(self, "deep_ep.Buffer.internode_dispatch", x, handle, num_tokens_per_rank,
                                    num_tokens_per_rdma_rank, is_token_in_rank, num_tokens_per_expert, topk_idx,
                                    topk_weights, expert_alignment, num_worst_tokens, _num_sms(config),
                                    previous_event, async_finish)

    def internode_combine(self, x: Any, handle: Any, topk_weights: Any = None, bias: Any = None,
                          config: Optional[Config] = None, previous_event: Optional[EventOverlap] = None,
                          async_finish: bool = False, allocate_on_comm_stream: bool = False) -> Tuple:
        return normal_mode.combine(self, "deep_ep.Buffer.internode_combine", x, handle, topk_weights, bias,
                                   _num_sms(config), previous_event, async_finish)

    # ---- low-latency mode ----
    def _stream(self) -> int:
        return current_stream_pointer()

    def _buffer_for(self, call: str, num_max: int, hidden: int, num_experts: int, num_topk: int) -> LowLatencyBuffer:
        if not self.low_latency_mode:
            raise checks.fail(call, "needs a Buffer created with low_latency_mode=True")
        if self.job is None:
            raise EpxFailedPreconditionError(f"{call}: the Buffer was destroyed", "FAILED_PRECONDITION")
        shape = (num_max, hidden, num_experts, num_topk)
        if self._ll is not None:
            if self._ll.shape != shape:
                raise checks.fail(call, f"(num_max_dispatch_tokens_per_rank, hidden, num_experts, num_topk) = {shape} "
                                        f"differs from the first call's {self._ll.shape}; EPX keeps one shape per Buffer")
            return self._ll
        import torch
        self._device = torch.cuda.current_device()
        self._ll = LowLatencyBuffer(self.job, num_max, hidden, num_experts, num_topk, self._device)
        for rank in self._pending_masks:
            self._ll.mask_rank(rank)
        self._pending_masks = []
        return self._ll

    def clean_low_latency_buffer(self, num_max_dispatch_tokens_per_rank: int, hidden: int, num_experts: int) -> None:
        call = "deep_ep.Buffer.clean_low_latency_buffer"
        if self._ll is None:
            return  # created zeroed on the first dispatch
        if self._ll.shape[:3] != (num_max_dispatch_tokens_per_rank, hidden, num_experts):
            raise checks.fail(call, f"(num_max_dispatch_tokens_per_rank, hidden, num_experts) = "
                                    f"{(num_max_dispatch_tokens_per_rank, hidden, num_experts)} differs from the "
                                    f"buffer's {self._ll.shape[:3]}")
        self._ll.clean()

    def low_latency_dispatch(self, x: Any, topk_idx: Any, num_max_dispatch_tokens_per_rank: int, num_experts: int,
                             cumulative_local_expert_recv_stats: Optional[Any] = None,
                             dispatch_wait_recv_cost_stats: Optional[Any] = None, use_fp8: bool = True,
                             round_scale: bool = False, use_ue8m0: bool = False, async_finish: bool = False,
                             return_recv_hook: bool = False) -> Tuple[Any, Any, Tuple, EventOverlap, Optional[Callable]]:
        import torch
        call = "deep_ep.Buffer.low_latency_dispatch"
        checks.check_positive(call, "num_max_dispatch_tokens_per_rank", num_max_dispatch_tokens_per_rank)
        checks.check_positive(call, "num_experts", num_experts)
        if num_experts % self.group_size != 0:
            raise checks.fail(call, f"num_experts={num_experts} is not a multiple of the {self.group_size} ranks")
        checks.check_tensor(call, "x", x, torch.bfloat16, [None, None])
        num_tokens, hidden = x.shape
        checks.check_tensor(call, "topk_idx", topk_idx, torch.int64, [num_tokens, None])
        if num_tokens > num_max_dispatch_tokens_per_rank:
            raise checks.fail(call, f"x has {num_tokens} tokens, more than num_max_dispatch_tokens_per_rank="
                                    f"{num_max_dispatch_tokens_per_rank}")
        local_experts = num_experts // self.group_size
        if cumulative_local_expert_recv_stats is not None:
            checks.check_tensor(call, "cumulative_local_expert_recv_stats", cumulative_local_expert_recv_stats,
                                torch.int32, [local_experts])
        if dispatch_wait_recv_cost_stats is not None:
            raise checks.unsupported(call, "dispatch_wait_recv_cost_stats", "EPX does not time receives per rank")
        if use_ue8m0 and not round_scale:
            raise checks.fail(call, "use_ue8m0=True needs round_scale=True")
        checks.check_cuda(call, [("x", x), ("topk_idx", topk_idx),
                                 ("cumulative_local_expert_recv_stats", cumulative_local_expert_recv_stats)])

        ll = self._buffer_for(call, num_max_dispatch_tokens_per_rank, hidden, num_experts, topk_idx.shape[1])
        stats = 0 if cumulative_local_expert_recv_stats is None else cumulative_local_expert_recv_stats.data_ptr()
        out = ll.dispatch(x.data_ptr(), topk_idx.data_ptr(), num_tokens, use_fp8, round_scale, use_ue8m0,
                          return_recv_hook, stats, self._stream())
        rows = self.group_size * num_max_dispatch_tokens_per_rank
        dev = self._device
        if use_fp8:
            recv_x = device_tensor(out.recv_x, [local_experts, rows, hidden], torch.float8_e4m3fn, dev, ll)
            # Scales are column-major in their last two dimensions (DeepEP's layout, for TMA).
            groups, scale_dtype = (hidden // 512, torch.int32) if use_ue8m0 else (hidden // 128, torch.float32)
            scales = device_tensor(out.recv_scales, [local_experts, rows, groups], scale_dtype, dev, ll,
                                   strides=[groups * rows, 1, rows])
            packed_recv_x: Any = (recv_x, scales)
        else:
            packed_recv_x = device_tensor(out.recv_x, [local_experts, rows, hidden], torch.bfloat16, dev, ll)
        recv_count = device_tensor(out.recv_count, [local_experts], torch.int32, dev, ll)
        src_info = device_tensor(out.handle.src_info, [local_experts, rows], torch.int32, dev, ll)
        layout_range = device_tensor(out.handle.layout_range, [local_experts, self.group_size], torch.int64, dev, ll)
        self._handles[src_info.data_ptr()] = out.handle
        handle = (src_info, layout_range, num_max_dispatch_tokens_per_rank, hidden, num_experts)
        event = EventOverlap(record_on_current_stream(), (x, topk_idx)) if async_finish else EventOverlap()
        return packed_recv_x, recv_count, handle, event, out.hook

    def _native_handle(self, call: str, handle: Tuple, num_tokens: Optional[int]) -> _native.LLHandle:
        if not isinstance(handle, (tuple, list)) or len(handle) != 5:
            raise checks.fail(call, "handle must be the 5-tuple low_latency_dispatch returned")
        data_ptr = getattr(handle[0], "data_ptr", None)
        native = self._handles.get(data_ptr()) if callable(data_ptr) else None
        if native is None:
            raise checks.fail(call, "handle is not from this Buffer's low_latency_dispatch")
        if num_tokens is not None and native.num_tokens != num_tokens:
            raise checks.fail(call, f"topk_idx has {num_tokens} tokens, its dispatch had {native.num_tokens}")
        return native

    def low_latency_combine(self, x: Any, topk_idx: Any, topk_weights: Any, handle: Tuple, use_logfmt: bool = False,
                            zero_copy: bool = False, async_finish: bool = False, return_recv_hook: bool = False,
                            out: Optional[Any] = None, combine_wait_recv_cost_stats: Optional[Any] = None
                            ) -> Tuple[Any, EventOverlap, Optional[Callable]]:
        import torch
        call = "deep_ep.Buffer.low_latency_combine"
        if not isinstance(handle, (tuple, list)) or len(handle) != 5:
            raise checks.fail(call, "handle must be the 5-tuple low_latency_dispatch returned")
        _, _, num_max, hidden, num_experts = handle
        local_experts = num_experts // self.group_size
        checks.check_tensor(call, "x", x, torch.bfloat16, [local_experts, self.group_size * num_max, hidden])
        checks.check_tensor(call, "topk_idx", topk_idx, torch.int64, [None, None])
        num_tokens, num_topk = topk_idx.shape
        checks.check_tensor(call, "topk_weights", topk_weights, torch.float32, [num_tokens, num_topk])
        if out is not None:
            checks.check_tensor(call, "out", out, torch.bfloat16, [num_tokens, hidden])
        if use_logfmt:
            raise checks.unsupported(call, "use_logfmt=True", "EPX combines in BF16")
        if combine_wait_recv_cost_stats is not None:
            raise checks.unsupported(call, "combine_wait_recv_cost_stats", "EPX does not time receives per rank")
        checks.check_cuda(call, [("x", x), ("topk_idx", topk_idx), ("topk_weights", topk_weights), ("out", out)])

        ll = self._buffer_for(call, num_max, hidden, num_experts, num_topk)
        native = self._native_handle(call, handle, num_tokens)
        result = ll.combine(x.data_ptr(), topk_idx.data_ptr(), topk_weights.data_ptr(), native, zero_copy,
                            return_recv_hook, 0 if out is None else out.data_ptr(), self._stream())
        combined_x = out if out is not None else device_tensor(result.combined_x, [num_tokens, hidden],
                                                               torch.bfloat16, self._device, ll)
        event = EventOverlap(record_on_current_stream(), (x, topk_idx, topk_weights)) if async_finish \
            else EventOverlap()
        return combined_x, event, result.hook

    def get_next_low_latency_combine_buffer(self, handle: object) -> Any:
        import torch
        call = "deep_ep.Buffer.get_next_low_latency_combine_buffer"
        if not isinstance(handle, (tuple, list)) or len(handle) != 5:
            raise checks.fail(call, "handle must be the 5-tuple low_latency_dispatch returned")
        _, _, num_max, hidden, num_experts = handle
        native = self._native_handle(call, handle, None)
        ll = self._buffer_for(call, num_max, hidden, num_experts, self._ll.shape[3] if self._ll else 0)
        pointer = ll.next_combine_buffer(native)
        return device_tensor(pointer, [num_experts // self.group_size, self.group_size * num_max, hidden],
                             torch.bfloat16, self._device, ll)

    # ---- shrink mode: masking ranks ----
    def _masked(self) -> List[int]:
        masked = set(self._pending_masks)
        if self._ll is not None:
            masked.update(self._ll.masked_ranks())
        if self.job is not None:
            masked.update(self.job.lost_ranks())
        return sorted(masked)

    def low_latency_update_mask_buffer(self, rank_to_mask: int, mask: bool = False) -> None:
        call = "deep_ep.Buffer.low_latency_update_mask_buffer"
        if not 0 <= rank_to_mask < self.group_size:
            raise checks.fail(call, f"rank_to_mask={rank_to_mask} is not a rank of the {self.group_size}")
        if mask:
            if self._ll is not None:
                self._ll.mask_rank(rank_to_mask)
            elif rank_to_mask not in self._pending_masks:
                self._pending_masks.append(rank_to_mask)
        elif rank_to_mask in self._masked():
            raise EpxFailedPreconditionError(f"{call}: rank {rank_to_mask} is masked, and EPX keeps a masked rank "
                                             "masked for the buffer's life", "FAILED_PRECONDITION")

    def low_latency_query_mask_buffer(self, mask_status: Any) -> None:
        import torch
        checks.check_tensor("deep_ep.Buffer.low_latency_query_mask_buffer", "mask_status", mask_status, torch.int32,
                            [self.group_size])
        mask_status.zero_()
        for rank in self._masked():
            mask_status[rank] = 1

    def low_latency_clean_mask_buffer(self) -> None:
        masked = self._masked()
        if masked:
            raise EpxFailedPreconditionError(f"deep_ep.Buffer.low_latency_clean_mask_buffer: ranks {masked} are "
                                             "masked, and EPX keeps a masked rank masked for the buffer's life",
                                             "FAILED_PRECONDITION")


def _num_sms(config: Optional[Config]) -> int:
    """Config.num_sms (0: the kernels' default)."""
    return config.num_sms if config is not None else 0
