"""deep_ep.Buffer checks its arguments before any native call and names
the argument and why; internode_dispatch / internode_combine are dispatch /
combine under DeepEP's other names; get_local_buffer_tensor raises
NotImplementedError saying why. A real epxd and a one-rank gloo group; CPU
tensors (no GPU here)."""

import pytest
import torch

import deep_ep
import epx
from deep_ep import normal_mode


@pytest.fixture
def buffer(single_rank_group):
    b = deep_ep.Buffer(single_rank_group, low_latency_mode=True, explicitly_destroy=True)
    yield b
    assert b._ll is None, "a check let a call reach the native buffer"
    if b.job is not None:
        b.destroy()


def dispatch_args(tokens=4, hidden=256, topk=2):
    return torch.zeros(tokens, hidden, dtype=torch.bfloat16), torch.zeros(tokens, topk, dtype=torch.int64)


def expect(match, fn, *args, **kwargs):
    with pytest.raises(epx.EpxInvalidArgumentError, match=match):
        fn(*args, **kwargs)


def test_dispatch_checks_dtypes_shapes_and_device(buffer):
    x, idx = dispatch_args()
    expect(r"x must be torch.bfloat16, got torch.float32", buffer.low_latency_dispatch, x.float(), idx, 8, 4)
    expect(r"topk_idx must be torch.int64, got torch.int32", buffer.low_latency_dispatch, x, idx.int(), 8, 4)
    expect(r"topk_idx must be shaped \[4, \*\]", buffer.low_latency_dispatch, x, idx[:3], 8, 4)
    expect(r"x must have 2 dimensions", buffer.low_latency_dispatch, x[0], idx, 8, 4)
    expect(r"4 tokens, more than num_max_dispatch_tokens_per_rank=2", buffer.low_latency_dispatch, x, idx, 2, 4)
    expect(r"num_experts must be a positive int", buffer.low_latency_dispatch, x, idx, 8, 0)
    expect(r"cumulative_local_expert_recv_stats must be torch.int32", buffer.low_latency_dispatch, x, idx, 8, 4,
           cumulative_local_expert_recv_stats=torch.zeros(4, dtype=torch.int64))
    expect(r"cumulative_local_expert_recv_stats must be shaped \[4\]", buffer.low_latency_dispatch, x, idx, 8, 4,
           cumulative_local_expert_recv_stats=torch.zeros(3, dtype=torch.int32))
    expect(r"dispatch_wait_recv_cost_stats is not supported", buffer.low_latency_dispatch, x, idx, 8, 4,
           dispatch_wait_recv_cost_stats=torch.zeros(1, 1, dtype=torch.int64))
    expect(r"x must be contiguous", buffer.low_latency_dispatch, x.t().contiguous().t(), idx, 8, 4)
    expect(r"x must be a CUDA tensor, got one on cpu", buffer.low_latency_dispatch, x, idx, 8, 4)


def test_combine_checks_handle_shapes_and_unsupported_flags(buffer):
    idx = torch.zeros(4, 2, dtype=torch.int64)
    w = torch.zeros(4, 2, dtype=torch.float32)
    handle = (torch.zeros(4, 8, dtype=torch.int32), torch.zeros(4, 1, dtype=torch.int64), 8, 256, 4)
    y = torch.zeros(4, 8, 256, dtype=torch.bfloat16)
    expect(r"handle must be the 5-tuple", buffer.low_latency_combine, y, idx, w, handle[:3])
    expect(r"x must be shaped \[4, 8, 256\]", buffer.low_latency_combine, y[:, :4], idx, w, handle)
    expect(r"topk_weights must be torch.float32, got torch.bfloat16", buffer.low_latency_combine, y, idx,
           w.bfloat16(), handle)
    expect(r"out must be shaped \[4, 256\]", buffer.low_latency_combine, y, idx, w, handle,
           out=torch.zeros(4, 128, dtype=torch.bfloat16))
    expect(r"use_logfmt=True is not supported", buffer.low_latency_combine, y, idx, w, handle, use_logfmt=True)
    expect(r"x must be a CUDA tensor, got one on cpu", buffer.low_latency_combine, y, idx, w, handle)


def test_low_latency_calls_need_low_latency_mode(single_rank_group):
    b = deep_ep.Buffer(single_rank_group)
    x, idx = dispatch_args()
    expect(r"x must be a CUDA tensor", b.low_latency_dispatch, x, idx, 8, 4)  # checks first
    with pytest.raises(epx.EpxInvalidArgumentError, match="low_latency_mode=True"):
        b._buffer_for("call", 8, 256, 4, 2)


def test_normal_mode_checks_its_arguments(buffer):
    idx = torch.zeros(4, 2, dtype=torch.int64)
    expect(r"num_experts must be a positive int", buffer.get_dispatch_layout, idx, 0)
    expect(r"topk_idx must be torch.int64", buffer.get_dispatch_layout, idx.int(), 4)
    expect(r"topk_idx must be a CUDA tensor", buffer.get_dispatch_layout, idx, 4)
    x = torch.zeros(4, 256, dtype=torch.bfloat16)
    w = torch.zeros(4, 2, dtype=torch.float32)
    in_rank = torch.zeros(4, 1, dtype=torch.bool)
    per_expert = torch.zeros(4, dtype=torch.int32)
    expect(r"x must be torch.bfloat16", buffer.dispatch, x.float())
    expect(r"topk_idx, topk_weights, is_token_in_rank and num_tokens_per_expert are required", buffer.dispatch, x)
    expect(r"an FP8 x is the tuple", buffer.dispatch, (x, x, x))
    expect(r"topk_weights must be shaped \[4, 2\]", buffer.dispatch, x, topk_idx=idx, topk_weights=w[:, :1],
           is_token_in_rank=in_rank, num_tokens_per_expert=per_expert)
    expect(r"is_token_in_rank must be torch.bool", buffer.dispatch, x, topk_idx=idx, topk_weights=w,
           is_token_in_rank=in_rank.int(), num_tokens_per_expert=per_expert)
    expect(r"expert_alignment must be a positive int", buffer.dispatch, x, topk_idx=idx, topk_weights=w,
           is_token_in_rank=in_rank, num_tokens_per_expert=per_expert, expert_alignment=0)
    expect(r"handle must be the 6-tuple", buffer.dispatch, x, handle=(1, 2))
    expect(r"handle must be the 6-tuple", buffer.combine, x, (1, 2))
    assert buffer._normal is None, "a check let a call reach the native buffer"


def test_get_local_buffer_tensor_says_why_it_is_not_there(buffer):
    with pytest.raises(NotImplementedError, match="holds other ranks' rows"):
        buffer.get_local_buffer_tensor(torch.bfloat16)


def test_one_node_group_has_one_node(buffer):
    assert buffer.node_of_rank == [0] and buffer.num_nodes == 1
    assert buffer.job.node_of_rank() == [0]


def normal_args(tokens=4, hidden=256, topk=2, ranks=1):
    return dict(topk_idx=torch.zeros(tokens, topk, dtype=torch.int64),
                topk_weights=torch.zeros(tokens, topk, dtype=torch.float32),
                is_token_in_rank=torch.zeros(tokens, ranks, dtype=torch.bool),
                num_tokens_per_expert=torch.zeros(4, dtype=torch.int32))


def test_dispatch_checks_the_layout_counts_it_is_given(buffer):
    x = torch.zeros(4, 256, dtype=torch.bfloat16)
    args = normal_args()
    # DeepEP returns None for num_tokens_per_rdma_rank inside one node; a
    # tensor given anyway must be what get_dispatch_layout would give: [nodes] int32.
    expect(r"num_tokens_per_rdma_rank must be torch.int32, got torch.int64", buffer.dispatch, x,
           num_tokens_per_rdma_rank=torch.zeros(1, dtype=torch.int64), **args)
    expect(r"num_tokens_per_rdma_rank must be shaped \[1\], got \(2,\)", buffer.dispatch, x,
           num_tokens_per_rdma_rank=torch.zeros(2, dtype=torch.int32), **args)
    expect(r"num_tokens_per_rdma_rank must have 1 dimensions", buffer.dispatch, x,
           num_tokens_per_rdma_rank=torch.zeros(1, 1, dtype=torch.int32), **args)
    expect(r"num_tokens_per_rdma_rank must be a torch.Tensor, got list", buffer.dispatch, x,
           num_tokens_per_rdma_rank=[4], **args)
    expect(r"num_tokens_per_rank must be shaped \[1\]", buffer.dispatch, x,
           num_tokens_per_rank=torch.zeros(3, dtype=torch.int32), **args)
    expect(r"num_tokens_per_rank must be torch.int32", buffer.dispatch, x,
           num_tokens_per_rank=torch.zeros(1, dtype=torch.float32), **args)
    # Well-formed counts pass; the call then stops at the device check, which
    # names them too.
    expect(r"x must be a CUDA tensor", buffer.dispatch, x, num_tokens_per_rank=torch.zeros(1, dtype=torch.int32),
           num_tokens_per_rdma_rank=torch.zeros(1, dtype=torch.int32), **args)
    assert buffer._normal is None, "a check let a call reach the native buffer"


def error_of(fn, *args, **kwargs):
    with pytest.raises(epx.EpxInvalidArgumentError) as info:
        fn(*args, **kwargs)
    return str(info.value)


BAD_DISPATCHES = [
    lambda x, a: dict(x=x.float()),
    lambda x, a: dict(x=x),
    lambda x, a: dict(x=(x, x, x)),
    lambda x, a: dict(x=x, handle=(1, 2)),
    lambda x, a: dict(x=x, num_tokens_per_rdma_rank=torch.zeros(3, dtype=torch.int32), **a),
    lambda x, a: dict(x=x, num_tokens_per_rank=torch.zeros(1, dtype=torch.int64), **a),
    lambda x, a: dict(x=x, expert_alignment=0, **a),
    lambda x, a: dict(x=x, num_worst_tokens=-1, **a),
    lambda x, a: dict(x=x, **dict(a, topk_weights=a["topk_weights"][:, :1])),
    lambda x, a: dict(x=x, **a),  # the device check
]


@pytest.mark.parametrize("case", range(len(BAD_DISPATCHES)))
def test_internode_dispatch_is_dispatch(buffer, case):
    kwargs = BAD_DISPATCHES[case](torch.zeros(4, 256, dtype=torch.bfloat16), normal_args())
    plain = error_of(buffer.dispatch, **kwargs)
    internode = error_of(buffer.internode_dispatch, **kwargs)
    assert plain.startswith("deep_ep.Buffer.dispatch: "), plain
    assert internode == plain.replace("deep_ep.Buffer.dispatch", "deep_ep.Buffer.internode_dispatch")
    assert buffer._normal is None, "a check let a call reach the native buffer"


def test_internode_dispatch_takes_dispatchs_arguments_in_order(buffer):
    # Positional, as DeepEP's dispatch passes them: x, handle,
    # num_tokens_per_rank, num_tokens_per_rdma_rank, is_token_in_rank, ...
    x = torch.zeros(4, 256, dtype=torch.bfloat16)
    a = normal_args()
    positional = (x, None, torch.zeros(1, dtype=torch.int32), torch.zeros(5, dtype=torch.int32),
                  a["is_token_in_rank"], a["num_tokens_per_expert"], a["topk_idx"], a["topk_weights"])
    expect(r"internode_dispatch: num_tokens_per_rdma_rank must be shaped \[1\], got \(5,\)",
           buffer.internode_dispatch, *positional)
    expect(r"^deep_ep.Buffer.dispatch: num_tokens_per_rdma_rank must be shaped",
           buffer.dispatch, *positional)


def test_internode_combine_is_combine(buffer):
    y = torch.zeros(4, 256, dtype=torch.bfloat16)
    for args in [(y, (1, 2)), (y, None), (y, ("a", "b", "c", "d", "e", "f"))]:
        plain = error_of(buffer.combine, *args)
        internode = error_of(buffer.internode_combine, *args)
        assert "handle must be the 6-tuple" in plain
        assert internode == plain.replace("deep_ep.Buffer.combine", "deep_ep.Buffer.internode_combine")


def test_the_torch_layout_counts_each_node_once_per_token():
    # Four ranks on two nodes of two, two experts per rank (eight experts).
    topk_idx = torch.tensor([[0, 1], [0, 2], [4, 7], [2, 6], [-1, -1], [-1, 5], [8, 3]], dtype=torch.int64)
    per_rank, per_node, per_expert, in_rank = normal_mode.layout_with_torch(topk_idx, 8, [0, 0, 1, 1])
    assert in_rank.tolist() == [[True, False, False, False], [True, True, False, False],
                                [False, False, True, True], [False, True, False, True],
                                [False, False, False, False], [False, False, True, False],
                                [False, True, False, False]]  # 8 is no expert: counts nowhere
    assert per_rank.tolist() == [2, 3, 2, 2] and per_rank.dtype == torch.int32
    # Token 1 names ranks 0 and 1, both on node 0: node 0 counts it once.
    assert per_node.tolist() == [4, 3] and per_node.dtype == torch.int32
    assert per_expert.tolist() == [2, 1, 2, 1, 1, 1, 1, 1] and per_expert.dtype == torch.int32
    # Inside one node DeepEP returns None for num_tokens_per_rdma_rank.
    _, none, _, _ = normal_mode.layout_with_torch(topk_idx, 8, [0, 0, 0, 0])
    assert none is None
    # Nodes need not be consecutive for the counts (normal mode itself refuses such jobs).
    _, scattered, _, _ = normal_mode.layout_with_torch(topk_idx, 8, [0, 1, 0, 1])
    assert scattered.tolist() == [4, 4]


def test_unhonourable_constructor_arguments_are_refused(single_rank_group):
    with pytest.raises(epx.EpxInvalidArgumentError, match="allow_nvlink_for_low_latency_mode=False"):
        deep_ep.Buffer(single_rank_group, low_latency_mode=True, allow_nvlink_for_low_latency_mode=False)
    with pytest.raises(epx.EpxInvalidArgumentError, match="comm"):
        deep_ep.Buffer(None, comm=object())


def test_ignored_arguments_are_accepted(single_rank_group):
    b = deep_ep.Buffer(single_rank_group, num_nvl_bytes=1 << 20, num_rdma_bytes=1 << 30, low_latency_mode=True,
                       num_qps_per_rank=3, allow_mnnvl=True, use_fabric=True, enable_shrink=True)
    assert (b.rank, b.group_size, b.num_rdma_bytes) == (0, 1, 1 << 30)


def test_destroy_needs_explicitly_destroy_and_leaves_the_job(single_rank_group, daemon):
    b = deep_ep.Buffer(single_rank_group, low_latency_mode=True)
    with pytest.raises(epx.EpxFailedPreconditionError, match="explicitly_destroy=True"):
        b.destroy()
    b = deep_ep.Buffer(single_rank_group, low_latency_mode=True, explicitly_destroy=True)
    job_id = b.job.job_id
    assert any(j["jobId"] == job_id for j in daemon.status().get("jobs", []))
    b.destroy()
    assert b.job is None


def test_masks_before_the_first_dispatch(buffer):
    status = torch.zeros(1, dtype=torch.int32)
    buffer.low_latency_query_mask_buffer(status)
    assert status.tolist() == [0]
    buffer.low_latency_clean_mask_buffer()  # nothing masked: nothing to do
    expect(r"rank_to_mask=3 is not a rank", buffer.low_latency_update_mask_buffer, 3, True)
    expect(r"mask_status must be torch.int32", buffer.low_latency_query_mask_buffer, torch.zeros(1))


def test_module_surface():
    assert deep_ep.topk_idx_t is torch.int64
    assert deep_ep.Buffer.get_dispatch_config(8).num_sms == deep_ep.Buffer.num_sms
    deep_ep.Buffer.set_num_sms(24)
    assert deep_ep.Buffer.num_sms == 24
    deep_ep.Buffer.set_num_sms(20)
    with pytest.raises(RuntimeError, match="async_finish=False"):
        deep_ep.EventOverlap().current_stream_wait()
    with deep_ep.EventOverlap():
        pass
    assert deep_ep.Buffer.get_low_latency_rdma_size_hint(128, 7168, 16, 256) > 0
