"""deep_ep.Buffer checks its arguments before any native call and names
the argument and why; internode_dispatch / internode_combine are dispatch /
combine under DeepEP's other names; get_local_buffer_tensor checks its
arguments, says why when the memory it would alias does not exist yet, and
computes its view as DeepEP does (without running past the end). A real
epxd and a one-rank gloo group; CPU tensors (no GPU here)."""

import pytest
import torch

import deep_ep
import epx
from deep_ep import buffer as buffer_module
from deep_ep import normal_mode, tensors
from epx import _native


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


def test_get_local_buffer_tensor_checks_its_arguments_first(buffer):
    # Each is refused before the buffer's memory is looked for (there is
    # none yet: that would be an EpxFailedPreconditionError).
    call = buffer.get_local_buffer_tensor
    expect(r"get_local_buffer_tensor: dtype must be a torch.dtype, got 'float32'", call, "float32")
    expect(r"dtype must be a torch.dtype, got <class 'float'>", call, float)
    expect(r"offset must be an int >= 0 \(bytes\), got -4", call, torch.uint8, offset=-4)
    expect(r"offset must be an int >= 0 \(bytes\), got 1.0", call, torch.uint8, offset=1.0)
    expect(r"offset must be an int >= 0 \(bytes\), got True", call, torch.uint8, offset=True)
    expect(r"size must be None or a torch.Size of dimensions >= 0, got 8", call, torch.uint8, 8)
    expect(r"size must be None or a torch.Size", call, torch.uint8, (2, -1))
    expect(r"size must be None or a torch.Size", call, torch.uint8, [2.0])
    expect(r"offset=6 is not a multiple of torch.float32's 4 bytes", call, torch.float32, offset=6)
    expect(r"offset=2 is not a multiple of torch.int64's 8 bytes", call, torch.int64, torch.Size([1]), 2)
    assert buffer._normal is None and buffer._ll is None, "a check made a buffer"


def expect_precondition(match, fn, *args, **kwargs):
    with pytest.raises(epx.EpxFailedPreconditionError, match=match) as info:
        fn(*args, **kwargs)
    assert info.value.code == "FAILED_PRECONDITION"
    return str(info.value)


def test_get_local_buffer_tensor_says_why_the_memory_is_not_there(buffer, single_rank_group):
    call = buffer.get_local_buffer_tensor
    # The NVLink buffer is the normal-mode buffer's, made on the first dispatch.
    message = expect_precondition(r"get_local_buffer_tensor: the NVLink buffer does not exist yet: EPX makes it on "
                                  r"the first dispatch \(or internode_dispatch\)", call, torch.bfloat16)
    assert "num_nvl_bytes=0 holds no normal-mode buffer" in message  # this Buffer could never make one
    # Valid arguments of every kind reach the same answer.
    expect_precondition(r"NVLink buffer does not exist yet", call, torch.int32, torch.Size([2, 3]), 16)
    # One node: no RDMA memory at all, whatever was dispatched.
    expect_precondition(r"use_rdma_buffer=True, but this Buffer's group is on one node: EPX reaches every rank "
                        r"over NVLink there and holds no RDMA memory", call, torch.uint8, use_rdma_buffer=True)
    sized = deep_ep.Buffer(single_rank_group, num_nvl_bytes=1 << 20, explicitly_destroy=True)
    message = expect_precondition(r"the NVLink buffer does not exist yet", sized.get_local_buffer_tensor, torch.uint8)
    assert "num_nvl_bytes=0" not in message
    sized.destroy()
    expect_precondition(r"get_local_buffer_tensor: the Buffer was destroyed", sized.get_local_buffer_tensor,
                        torch.uint8)
    expect_precondition(r"the Buffer was destroyed", sized.get_local_buffer_tensor, torch.uint8,
                        use_rdma_buffer=True)
    assert buffer._normal is None and buffer._ll is None, "asking made a buffer"


def test_get_local_buffer_tensor_across_nodes_names_the_buffer_to_make_first(buffer, single_rank_group):
    # The group's node count is the job's (two daemons: test_bootstrap's
    # "nodes" ranks); here one rank stands for a rank of a job on two nodes.
    buffer.num_nodes = 2
    expect_precondition(r"the RDMA buffer does not exist yet: with low_latency_mode=True it is the low-latency "
                        r"buffer's window, which EPX makes on the first low_latency_dispatch",
                        buffer.get_local_buffer_tensor, torch.uint8, use_rdma_buffer=True)
    normal = deep_ep.Buffer(single_rank_group, num_nvl_bytes=1 << 20, explicitly_destroy=True)
    normal.num_nodes = 2
    expect_precondition(r"the RDMA buffer does not exist yet: it is the normal-mode buffer's window for the network "
                        r"hop, which EPX makes on the first dispatch", normal.get_local_buffer_tensor, torch.uint8,
                        use_rdma_buffer=True)
    normal.destroy()


def test_local_view_counts_whole_elements_from_the_offset():
    view = tensors.local_view
    # DeepEP would give 4096 // 4 = 1024 elements from offset 64, running 64
    # bytes past the end; EPX gives those that fit.
    assert view("c", 4096, 64, 4, None) == (1008, [1008])
    assert view("c", 4096, 0, 4, None) == (1024, [1024])
    assert view("c", 4100, 0, 8, None) == (512, [512])  # a partial last element is left out
    assert view("c", 4096, 4096, 2, None) == (0, [0])
    assert view("c", 4096, 64, 4, torch.Size([8, 126])) == (1008, [8, 126])
    assert view("c", 4096, 64, 4, torch.Size([3, 0, 5])) == (0, [3, 0, 5])
    assert view("c", 4096, 0, 2, (4, 4)) == (16, [4, 4])
    with pytest.raises(epx.EpxInvalidArgumentError,
                       match=r"c: size=\(8, 127\) needs 1016 elements of 4 bytes; the buffer holds 1008 from "
                             r"offset=64 \(4096 bytes in all\)"):
        view("c", 4096, 64, 4, torch.Size([8, 127]))
    with pytest.raises(epx.EpxInvalidArgumentError, match=r"c: offset=4112 is beyond the buffer's 4096 bytes"):
        view("c", 4096, 4112, 4, None)
    assert tensors.element_size(torch.bfloat16) == 2 and tensors.element_size(torch.float64) == 8
    assert tensors.element_size(torch.bool) == 1


class FakeNativeBuffer:
    """Stands for an epx NormalBuffer / LowLatencyBuffer: its memory's
    address and size (no GPU here)."""

    def __init__(self, pointer, num_bytes):
        self.pointer, self.num_bytes, self.asked = pointer, num_bytes, []

    def region(self, rdma=False):
        self.asked.append(rdma)
        return _native.LocalRegion(self.pointer + (1 << 30 if rdma else 0), self.num_bytes, True)

    def close(self):
        pass


def test_get_local_buffer_tensor_aliases_the_region_the_buffer_reports(buffer, monkeypatch):
    made = []
    monkeypatch.setattr(buffer_module, "alias", lambda *args: made.append(args) or "tensor")
    normal = FakeNativeBuffer(0x7f0000000000, 8192)
    buffer._normal, buffer._device = normal, 3
    try:
        assert buffer.get_local_buffer_tensor(torch.float32, torch.Size([4, 8]), offset=64) == "tensor"
        pointer, count, shape, dtype, device, owner = made[-1]
        assert (pointer, count, shape, dtype, device) == (0x7f0000000000 + 64, 32, [4, 8], torch.float32, 3)
        assert owner[0] is buffer and owner[1] is normal, "the tensor must hold the Buffer and its native buffer"
        buffer.get_local_buffer_tensor(torch.bfloat16, offset=8190)
        assert made[-1][1:3] == (1, [1])
        buffer.get_local_buffer_tensor(torch.uint8)
        assert made[-1][:3] == (0x7f0000000000, 8192, [8192])
        expect(r"size=\(2049,\) needs 2049 elements of 4 bytes; the buffer holds 2048", buffer.get_local_buffer_tensor,
               torch.int32, torch.Size([2049]))
        expect(r"offset=8200 is beyond the buffer's 8192 bytes", buffer.get_local_buffer_tensor, torch.uint8,
               offset=8200)
        assert normal.asked == [False] * 5
        # Across nodes, with low_latency_mode=True, the RDMA buffer is the low-latency buffer's window.
        buffer.num_nodes = 2
        ll = FakeNativeBuffer(0x7e0000000000, 4096)
        buffer._ll = ll
        buffer.get_local_buffer_tensor(torch.int64, offset=16, use_rdma_buffer=True)
        assert made[-1][:3] == (0x7e0000000000 + (1 << 30) + 16, 510, [510]) and made[-1][5][1] is ll
        assert ll.asked == [True] and normal.asked == [False] * 5
        # Without low_latency_mode, the normal-mode buffer's.
        buffer.low_latency_mode = False
        buffer.get_local_buffer_tensor(torch.uint8, use_rdma_buffer=True)
        assert made[-1][0] == 0x7f0000000000 + (1 << 30) and normal.asked[-1] is True
    finally:
        buffer._normal = buffer._ll = None


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
