"""deep_ep.Buffer's normal mode (get_dispatch_layout, dispatch, combine,
and DeepEP's internode_dispatch / internode_combine, which are the same
calls here) over epx.NormalBuffer: DeepEP v1's signatures, return tuples
and dtypes. Inside one node, or across nodes when every node holds the same
number of consecutive ranks (EPX sends each token over the network at most
once per destination node, to the rank with the sender's local index there,
which forwards it over NVLink). Every call enqueues on
torch.cuda.current_stream(); previous_event makes that stream wait first,
and async_finish returns an event recorded after the call (EPX has no
separate communication stream in Python: allocate_on_comm_stream is
accepted and changes nothing).

Outputs are fresh tensors (copied from the buffer, as DeepEP's are), so
they outlive later calls. The buffer is created on the first dispatch
(collective, as every rank makes that call) with room for the most tokens
per rank that num_nvl_bytes holds, and re-created when the shape changes.

get_dispatch_layout returns num_tokens_per_rdma_rank ([nodes] int32: this
rank's tokens that any rank of each node receives) when the group spans
nodes, None inside one node, as DeepEP. dispatch accepts it (checked: int32
[nodes]) but needs it no more than num_tokens_per_rank: EPX counts for
itself from is_token_in_rank.

The handle is a 6-tuple like DeepEP's intranode one, on one node and across
nodes alike (DeepEP's internode handle is a 10-tuple of other arrays):
(rank_prefix_matrix, None, None, recv_src_idx, is_token_in_rank, the native
handle); pass it back whole, to combine or internode_combine or a cached
dispatch. rank_prefix_matrix is [ranks][ranks] int32, [s][r] = tokens ranks
0..s send to r; across nodes only the columns of this rank's node are
filled (the others are 0)."""

from typing import Any, List, Optional, Tuple

import epx
from epx import _native
from epx.errors import EpxFailedPreconditionError
from epx.normal import NormalBuffer, max_tokens_for

from . import checks
from .event_overlap import EventOverlap, record_on_current_stream
from .streams import current_stream_pointer
from .tensors import device_tensor


class _Native:
    """The native part of a Python handle (its buffer and pooled handle)."""

    def __init__(self, buffer: NormalBuffer, num_tokens: int, num_recv_tokens: int) -> None:
        self.buffer = buffer
        self.native = buffer.acquire_handle(self)
        self.num_tokens = num_tokens
        self.num_recv_tokens = num_recv_tokens


def _stream() -> int:
    return current_stream_pointer()


def _wait(previous_event: Optional[EventOverlap]) -> None:
    if previous_event is not None and previous_event.event is not None:
        previous_event.current_stream_wait()


def _finish(async_finish: bool, keep: Tuple) -> EventOverlap:
    return EventOverlap(record_on_current_stream(), keep) if async_finish else EventOverlap()


def get_dispatch_layout(buffer: Any, topk_idx: Any, num_experts: int, previous_event: Optional[EventOverlap],
                        async_finish: bool) -> Tuple:
    """EPX's layout kernel once the buffer exists with this num_experts and
    top-k (an expert id outside [0, num_experts) is then skipped and
    reported by the next call's check); before that, torch operations on
    the current stream (no host synchronisation), where such an id counts
    nowhere."""
    import torch
    call = "deep_ep.Buffer.get_dispatch_layout"
    num_nodes = buffer.num_nodes
    checks.check_positive(call, "num_experts", num_experts)
    if num_experts % buffer.group_size != 0:
        raise checks.fail(call, f"num_experts={num_experts} is not a multiple of the {buffer.group_size} ranks")
    checks.check_tensor(call, "topk_idx", topk_idx, torch.int64, [None, None])
    checks.check_cuda(call, [("topk_idx", topk_idx)])
    _wait(previous_event)
    num_tokens = topk_idx.shape[0]
    normal = buffer._normal
    device = topk_idx.device
    if (normal is not None and normal.shape[2:] == (num_experts, topk_idx.shape[1])
            and num_tokens <= normal.shape[0] and normal.num_nodes == num_nodes):
        num_tokens_per_rank = torch.empty(buffer.group_size, dtype=torch.int32, device=device)
        num_tokens_per_rdma_rank = torch.empty(num_nodes, dtype=torch.int32, device=device) if num_nodes > 1 else None
        num_tokens_per_expert = torch.empty(num_experts, dtype=torch.int32, device=device)
        is_token_in_rank = torch.empty((num_tokens, buffer.group_size), dtype=torch.bool, device=device)
        normal.layout(topk_idx.data_ptr(), num_tokens, num_tokens_per_rank.data_ptr(), num_tokens_per_expert.data_ptr(),
                      is_token_in_rank.data_ptr(), _stream(),
                      num_tokens_per_rdma_rank.data_ptr() if num_tokens_per_rdma_rank is not None else 0)
        return (num_tokens_per_rank, num_tokens_per_rdma_rank, num_tokens_per_expert, is_token_in_rank,
                _finish(async_finish, (topk_idx,)))
    return layout_with_torch(topk_idx, num_experts, buffer.node_of_rank) + (_finish(async_finish, (topk_idx,)),)


def layout_with_torch(topk_idx: Any, num_experts: int, node_of_rank: List[int]) -> Tuple:
    """get_dispatch_layout's four tensors from torch operations on
    topk_idx's device (no host synchronisation): num_tokens_per_rank,
    num_tokens_per_rdma_rank (None on one node), num_tokens_per_expert,
    is_token_in_rank. node_of_rank: each rank's node index (the group's
    size is its length). An expert id outside [0, num_experts) counts
    nowhere."""
    import torch
    num_tokens, device = topk_idx.shape[0], topk_idx.device
    num_ranks = len(node_of_rank)
    num_nodes = max(node_of_rank) + 1
    local = num_experts // num_ranks
    valid = (topk_idx >= 0) & (topk_idx < num_experts)
    experts = torch.where(valid, topk_idx, torch.zeros_like(topk_idx))
    hits = torch.zeros((num_tokens, num_experts), dtype=torch.int32, device=device)
    hits.scatter_add_(1, experts, valid.to(torch.int32))
    num_tokens_per_expert = (hits > 0).sum(dim=0, dtype=torch.int32)
    rank_hits = torch.zeros((num_tokens, num_ranks), dtype=torch.int32, device=device)
    rank_hits.scatter_add_(1, experts // local, valid.to(torch.int32))
    is_token_in_rank = rank_hits > 0
    num_tokens_per_rank = is_token_in_rank.sum(dim=0, dtype=torch.int32)
    num_tokens_per_rdma_rank = None
    if num_nodes > 1:
        node_hits = torch.zeros((num_tokens, num_nodes), dtype=torch.int32, device=device)
        node_hits.index_add_(1, torch.tensor(node_of_rank, dtype=torch.int64, device=device), rank_hits)
        num_tokens_per_rdma_rank = (node_hits > 0).sum(dim=0, dtype=torch.int32)
    return num_tokens_per_rank, num_tokens_per_rdma_rank, num_tokens_per_expert, is_token_in_rank


def _buffer_for(buffer: Any, call: str, hidden: int, num_experts: int, num_topk: int,
                num_tokens: int) -> NormalBuffer:
    if buffer.job is None:
        raise EpxFailedPreconditionError(f"{call}: the Buffer was destroyed", "FAILED_PRECONDITION")
    normal = buffer._normal
    if normal is not None and normal.shape[1:] == (hidden, num_experts, num_topk):
        if num_tokens > normal.shape[0]:
            raise checks.fail(call, f"x has {num_tokens} tokens; num_nvl_bytes={buffer.num_nvl_bytes} holds "
                                    f"{normal.shape[0]} per rank for this shape")
        return normal
    most = max_tokens_for(buffer.num_nvl_bytes, hidden, buffer.group_size, num_experts, num_topk)
    if most < max(num_tokens, 1):
        raise checks.fail(call, f"num_nvl_bytes={buffer.num_nvl_bytes} holds {most} tokens per rank for hidden="
                                f"{hidden}, {num_experts} experts, top-{num_topk}; {num_tokens} need "
                                f"{epx.normal.size(max(num_tokens, 1), hidden, buffer.group_size, num_experts, num_topk)}"
                                f" bytes")
    if normal is not None:
        normal.close()
        buffer._normal = None
    import torch
    buffer._device = torch.cuda.current_device()
    buffer._normal = NormalBuffer(buffer.job, most, hidden, num_experts, num_topk, buffer._device)
    return buffer._normal


def dispatch(buffer: Any, call: str, x: Any, handle: Optional[Tuple], num_tokens_per_rank: Optional[Any],
             num_tokens_per_rdma_rank: Optional[Any], is_token_in_rank: Optional[Any],
             num_tokens_per_expert: Optional[Any], topk_idx: Optional[Any], topk_weights: Optional[Any],
             expert_alignment: int, num_worst_tokens: int, num_sms: int, previous_event: Optional[EventOverlap],
             async_finish: bool) -> Tuple:
    """Buffer.dispatch and Buffer.internode_dispatch (`call` names which)."""
    import torch
    scales = None
    if isinstance(x, tuple):
        if len(x) != 2:
            raise checks.fail(call, "an FP8 x is the tuple (x, x_scales)")
        x, scales = x
        checks.check_tensor(call, "x", x, torch.float8_e4m3fn, [None, None])
        if scales.dtype not in (torch.float32, torch.int32) or scales.dim() != 2 or scales.shape[0] != x.shape[0]:
            raise checks.fail(call, f"x_scales must be float32 or int32 shaped [{x.shape[0]}, *], got "
                                    f"{scales.dtype} {tuple(scales.shape)}")
    else:
        checks.check_tensor(call, "x", x, torch.bfloat16, [None, None])
    num_tokens, hidden = x.shape
    # Layout counts EPX makes for itself: checked when given, not read.
    if num_tokens_per_rank is not None:
        checks.check_tensor(call, "num_tokens_per_rank", num_tokens_per_rank, torch.int32, [buffer.group_size])
    if num_tokens_per_rdma_rank is not None:
        checks.check_tensor(call, "num_tokens_per_rdma_rank", num_tokens_per_rdma_rank, torch.int32,
                            [buffer.num_nodes])
    if not isinstance(expert_alignment, int) or expert_alignment < 1:
        raise checks.fail(call, f"expert_alignment must be a positive int, got {expert_alignment!r}")
    if not isinstance(num_worst_tokens, int) or num_worst_tokens < 0:
        raise checks.fail(call, f"num_worst_tokens must be an int >= 0, got {num_worst_tokens!r}")
    # Device checks come last but before the buffer is made (which they may need).
    on_device = [("x", x), ("x_scales", scales), ("topk_idx", topk_idx), ("topk_weights", topk_weights),
                 ("is_token_in_rank", is_token_in_rank), ("num_tokens_per_expert", num_tokens_per_expert),
                 ("num_tokens_per_rank", num_tokens_per_rank), ("num_tokens_per_rdma_rank", num_tokens_per_rdma_rank)]
    cached = handle is not None
    if cached:
        if not isinstance(handle, tuple) or len(handle) != 6 or not isinstance(handle[5], _Native):
            raise checks.fail(call, "handle must be the 6-tuple an earlier dispatch of this Buffer returned")
        state: _Native = handle[5]
        if state.buffer is not buffer._normal:
            raise checks.fail(call, "handle belongs to an earlier buffer (the shape changed since)")
        if num_tokens != state.num_tokens:
            raise checks.fail(call, f"x has {num_tokens} tokens, the handle's dispatch had {state.num_tokens}")
        checks.check_cuda(call, on_device)
        normal = state.buffer
    else:
        if topk_idx is None or topk_weights is None or is_token_in_rank is None or num_tokens_per_expert is None:
            raise checks.fail(call, "without a handle, topk_idx, topk_weights, is_token_in_rank and "
                                    "num_tokens_per_expert are required (get_dispatch_layout gives the last two)")
        checks.check_tensor(call, "topk_idx", topk_idx, torch.int64, [num_tokens, None])
        num_topk = topk_idx.shape[1]
        checks.check_tensor(call, "topk_weights", topk_weights, torch.float32, [num_tokens, num_topk])
        checks.check_tensor(call, "is_token_in_rank", is_token_in_rank, torch.bool, [num_tokens, buffer.group_size])
        checks.check_tensor(call, "num_tokens_per_expert", num_tokens_per_expert, torch.int32, [None])
        num_experts = num_tokens_per_expert.shape[0]
        checks.check_cuda(call, on_device)
        normal = _buffer_for(buffer, call, hidden, num_experts, num_topk, num_tokens)
        if num_worst_tokens > buffer.group_size * normal.shape[0]:
            raise checks.fail(call, f"num_worst_tokens={num_worst_tokens} is beyond the buffer's "
                                    f"{buffer.group_size * normal.shape[0]} rows")
    _wait(previous_event)
    args = _native.NormalDispatchIn()
    args.x = x.data_ptr()
    args.num_tokens = num_tokens
    if scales is not None:
        args.x_scales = scales.data_ptr()
        args.num_scales = scales.shape[1]
        args.scale_token_stride = scales.stride(0)
        args.scale_hidden_stride = scales.stride(1)
    if not cached:
        args.topk_idx = topk_idx.data_ptr()
        args.topk_weights = topk_weights.data_ptr()
        args.is_token_in_rank = is_token_in_rank.data_ptr()
        args.num_tokens_per_expert = num_tokens_per_expert.data_ptr()
    args.cached = int(cached)
    args.expert_alignment = expert_alignment
    args.num_worst_tokens = num_worst_tokens
    args.num_sms = num_sms
    state = handle[5] if cached else _Native(normal, num_tokens, -1)
    out = normal.dispatch(state.native, args, _stream())
    rows = num_worst_tokens if num_worst_tokens > 0 else (out.num_recv_tokens if out.num_recv_tokens >= 0
                                                          else state.num_recv_tokens)
    if rows < 0:
        raise checks.fail(call, "a cached dispatch of a handle from a worst-case dispatch needs num_worst_tokens "
                                "(its receive count never reached the host)")
    if not cached:
        state.num_recv_tokens = out.num_recv_tokens
    dev = buffer._device
    if scales is not None:
        recv_x: Any = (device_tensor(out.recv_x, [rows, hidden], torch.float8_e4m3fn, dev, normal).clone(),
                       device_tensor(out.recv_x_scales, [rows, scales.shape[1]], scales.dtype, dev, normal).clone())
    else:
        recv_x = device_tensor(out.recv_x, [rows, hidden], torch.bfloat16, dev, normal).clone()
    if cached:
        return recv_x, None, None, None, None, _finish(async_finish, (x,))
    num_topk = topk_idx.shape[1]
    recv_topk_idx = device_tensor(out.recv_topk_idx, [rows, num_topk], torch.int64, dev, normal).clone()
    recv_topk_weights = device_tensor(out.recv_topk_weights, [rows, num_topk], torch.float32, dev, normal).clone()
    recv_src_idx = device_tensor(out.recv_src_idx, [rows], torch.int32, dev, normal).clone()
    info = state.native.info()
    rank_prefix_matrix = device_tensor(info.rank_prefix_matrix, [buffer.group_size, buffer.group_size], torch.int32,
                                       dev, normal).clone()
    new_handle = (rank_prefix_matrix, None, None, recv_src_idx, is_token_in_rank, state)
    counts: List[int] = out.expert_counts if out.expert_counts is not None else []
    return (recv_x, recv_topk_idx, recv_topk_weights, counts, new_handle,
            _finish(async_finish, (x, topk_idx, topk_weights)))


def combine(buffer: Any, call: str, x: Any, handle: Tuple, topk_weights: Optional[Any], bias: Any, num_sms: int,
            previous_event: Optional[EventOverlap], async_finish: bool) -> Tuple:
    """Buffer.combine and Buffer.internode_combine (`call` names which)."""
    import torch
    if not isinstance(handle, tuple) or len(handle) != 6 or not isinstance(handle[5], _Native):
        raise checks.fail(call, "handle must be the 6-tuple a dispatch of this Buffer returned")
    state: _Native = handle[5]
    if state.buffer is not buffer._normal:
        raise checks.fail(call, "handle belongs to an earlier buffer (the shape changed since)")
    _, hidden, _, num_topk = state.buffer.shape
    rows = x.shape[0] if hasattr(x, "shape") else None
    checks.check_tensor(call, "x", x, torch.bfloat16, [rows, hidden])
    if state.num_recv_tokens >= 0 and rows != state.num_recv_tokens:
        raise checks.fail(call, f"x has {rows} rows, its dispatch received {state.num_recv_tokens}")
    if topk_weights is not None:
        checks.check_tensor(call, "topk_weights", topk_weights, torch.float32, [rows, num_topk])
    biases = list(bias) if isinstance(bias, tuple) else ([] if bias is None else [bias])
    if len(biases) > 2:
        raise checks.fail(call, "bias is one tensor or a tuple of two")
    num_tokens = state.num_tokens
    for i, b in enumerate(biases):
        checks.check_tensor(call, f"bias[{i}]", b, torch.bfloat16, [num_tokens, hidden])
    checks.check_cuda(call, [("x", x), ("topk_weights", topk_weights)] + [(f"bias[{i}]", b) for i, b in
                                                                        enumerate(biases)])
    _wait(previous_event)
    combined_x = torch.empty((num_tokens, hidden), dtype=torch.bfloat16, device=x.device)
    combined_weights = None if topk_weights is None else torch.empty((num_tokens, num_topk), dtype=torch.float32,
                                                                      device=x.device)
    state.buffer.combine(state.native, x.data_ptr(), 0 if topk_weights is None else topk_weights.data_ptr(),
                         biases[0].data_ptr() if len(biases) > 0 else 0, biases[1].data_ptr() if len(biases) > 1 else 0,
                         combined_x.data_ptr(), 0 if combined_weights is None else combined_weights.data_ptr(),
                         num_sms, _stream())
    return combined_x, combined_weights, _finish(async_finish, (x,))
