"""One rank of test_normal_gpu: normal-mode get_dispatch_layout, dispatch
and combine through `import deep_ep`, checked against torch on the CPU, on a
Buffer that also carries low-latency batches (SGLang's AUTO mode).
Every rank builds the whole job's inputs from one seed, so it knows what it
must receive without gathering anything. Rounds alternate BF16 and FP8
(e4m3 with per-128-channel float scales, made on the CPU). Ranks share the
GPUs round-robin (one GPU: run under MPS, as tools/device/run.sh does).

Across nodes (ranks_per_node below the world size; EPX_SOCKET names each
rank's daemon, one daemon per emulated node) the same checks hold, plus
num_tokens_per_rdma_rank, and the last two rounds call internode_dispatch /
internode_combine as DeepEP's dispatch would.

get_local_buffer_tensor (local_buffer_check.py): refused before the first
dispatch; after round 0's dispatch its NVLink buffer holds the received
rows; at the end its views alias the memory the C ABI reports (the RDMA
buffer too, across nodes with the low-latency batches).

argv: rendezvous file, rank, world size[, ranks per node (default: world)]."""

import os
import sys

if not os.environ.get("EPX_TEST_INSTALLED"):  # else: the installed wheel's packages
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import deep_ep  # noqa: E402
from local_buffer_check import check_aliases, expect_absent, find_rows  # noqa: E402


def job_inputs(world, num_tokens, hidden, num_experts, num_topk, seed):
    """Every rank's x (bf16), topk_idx (distinct experts, some -1) and weights."""
    gen = torch.Generator().manual_seed(seed)
    xs, idxs, ws = [], [], []
    for _ in range(world):
        xs.append(torch.randn(num_tokens, hidden, generator=gen).bfloat16())
        scores = torch.rand(num_tokens, num_experts, generator=gen)
        idx = scores.topk(num_topk, dim=1).indices.to(torch.int64)
        idx[torch.rand(num_tokens, num_topk, generator=gen) < 0.2] = -1
        idxs.append(idx)
        ws.append(torch.rand(num_tokens, num_topk, generator=gen))
    return xs, idxs, ws


def cast_fp8(x):
    """e4m3 rows and one float scale per 128 channels (DeepEP's dispatch input)."""
    tokens, hidden = x.shape
    groups = x.float().view(tokens, hidden // 128, 128)
    scales = groups.abs().amax(dim=2).clamp(min=1e-4) / 448.0
    return (groups / scales.unsqueeze(2)).to(torch.float8_e4m3fn).view(tokens, hidden), scales.contiguous()


def dequantize(q, scales):
    """bf16 rows from e4m3 and their scales (one fp32 product per element: the
    same bits on the CPU and the GPU)."""
    tokens, hidden = q.shape
    return (q.float().view(tokens, hidden // 128, 128) * scales.unsqueeze(2)).view(tokens, hidden).bfloat16()


def same_bytes(a, b):
    """a: e4m3 rows; b: their expected bytes (uint8)."""
    return torch.equal(a.view(torch.uint8), b)


def main() -> int:
    rendezvous, rank, world = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ranks_per_node = int(sys.argv[4]) if len(sys.argv) > 4 else world
    with_low_latency = (sys.argv[5] if len(sys.argv) > 5 else "with-ll") == "with-ll"
    nodes = world // ranks_per_node
    torch.cuda.set_device(rank % torch.cuda.device_count())
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    num_tokens, hidden, num_experts, num_topk = 96, 1024, 8 * world, 4
    local = num_experts // world
    config = deep_ep.Config(24)
    # As SGLang's AUTO mode makes it: low_latency_mode=True, and normal-mode
    # batches through the same Buffer, with low-latency ones in between.
    buffer = deep_ep.Buffer(dist.group.WORLD, num_nvl_bytes=config.get_nvl_buffer_size_hint(hidden * 2, world),
                            low_latency_mode=True, explicitly_destroy=True)
    assert buffer.num_nodes == nodes, (buffer.node_of_rank, nodes)
    # get_local_buffer_tensor before any dispatch: nothing to alias yet.
    expect_absent(buffer, False, "the NVLink buffer does not exist yet")
    expect_absent(buffer, True, "group is on one node" if nodes == 1 else "first low_latency_dispatch")
    for round_ in range(4):
        fp8 = round_ % 2 == 1
        internode = nodes > 1 and round_ >= 2
        dispatch = buffer.internode_dispatch if internode else buffer.dispatch
        combine = buffer.internode_combine if internode else buffer.combine
        xs, idxs, ws = job_inputs(world, num_tokens, hidden, num_experts, num_topk, 100 + round_)
        casts = [cast_fp8(x) for x in xs] if fp8 else None
        x, topk_idx, topk_weights = xs[rank].cuda(), idxs[rank].cuda(), ws[rank].cuda()
        x_in = (casts[rank][0].cuda(), casts[rank][1].cuda()) if fp8 else x
        # Round 0 computes the layout with torch operations (no buffer yet),
        # later rounds with EPX's kernel: both must give this.
        per_rank, per_rdma, per_expert, in_rank, _ = buffer.get_dispatch_layout(topk_idx, num_experts)
        ranks_of = [(torch.where(i >= 0, i, torch.full_like(i, -local)) // local) for i in idxs]
        want_in_rank = torch.stack([(ranks_of[rank] == r).any(dim=1) for r in range(world)], dim=1)
        assert torch.equal(in_rank.cpu(), want_in_rank)
        assert per_rank.cpu().tolist() == want_in_rank.sum(dim=0).tolist()
        want_per_expert = torch.bincount(idxs[rank][idxs[rank] >= 0], minlength=num_experts)
        assert per_expert.cpu().tolist() == want_per_expert.tolist()
        if nodes == 1:
            assert per_rdma is None
        else:
            # Tokens that any rank of the node receives, once per node.
            want_per_node = want_in_rank.view(num_tokens, nodes, ranks_per_node).any(dim=2).sum(dim=0)
            assert per_rdma.dtype == torch.int32 and per_rdma.cpu().tolist() == want_per_node.tolist(), \
                (per_rdma.cpu().tolist(), want_per_node.tolist())

        recv_x, recv_idx, recv_w, counts, handle, event = dispatch(
            x_in, num_tokens_per_rank=per_rank, num_tokens_per_rdma_rank=per_rdma, is_token_in_rank=in_rank,
            num_tokens_per_expert=per_expert, topk_idx=topk_idx, topk_weights=topk_weights, expert_alignment=4,
            config=config, async_finish=True)
        event.current_stream_wait()
        # What this rank must receive: every source's tokens that name one of
        # its experts, sources in order, tokens in order.
        rows, row_q, row_s, row_idx, row_w = [], [], [], [], []
        for src in range(world):
            mine = (ranks_of[src] == rank).any(dim=1)
            rows.append(xs[src][mine])
            if fp8:
                row_q.append(casts[src][0].view(torch.uint8)[mine])
                row_s.append(casts[src][1][mine])
            sel = idxs[src][mine]
            is_local = (sel >= rank * local) & (sel < (rank + 1) * local)
            row_idx.append(torch.where(is_local, sel - rank * local, torch.full_like(sel, -1)))
            row_w.append(torch.where(is_local, ws[src][mine], torch.zeros_like(ws[src][mine])))
        want_idx, want_w = torch.cat(row_idx), torch.cat(row_w)
        if round_ == 0 and sum(r.shape[0] for r in rows) > 0:
            # The NVLink buffer is the memory the dispatch received into: its
            # rows lie there, one after another (read only, before the
            # combine; other ranks write this space again only in this
            # rank's next dispatch).
            torch.cuda.synchronize()
            nvl = buffer.get_local_buffer_tensor(torch.uint8)
            assert nvl.data_ptr() == buffer._normal.region().pointer
            at = find_rows(buffer, torch.cat(rows))
            assert at is not None, "the received rows are not in get_local_buffer_tensor's memory"
            print("rank", rank, "received rows at byte", at, "of the NVLink buffer", flush=True)
        if fp8:
            want_q, want_s = torch.cat(row_q), torch.cat(row_s)
            assert same_bytes(recv_x[0].cpu(), want_q), "recv_x (e4m3)"
            assert torch.equal(recv_x[1].cpu(), want_s), "recv_x scales"
            expert_out = dequantize(*recv_x)
            own = dequantize(*casts[rank])
        else:
            assert torch.equal(recv_x.cpu(), torch.cat(rows)), "recv_x"
            expert_out = recv_x
            own = xs[rank]
        assert torch.equal(recv_idx.cpu(), want_idx), "recv_topk_idx"
        assert torch.equal(recv_w.cpu(), want_w), "recv_topk_weights"
        raw = [int((want_idx == e).any(dim=1).sum()) for e in range(local)]
        assert counts == [(c + 3) // 4 * 4 for c in raw], (counts, raw)

        # Experts that return their input: the combine is the row times the
        # number of ranks that held the token, rounded once to bf16 (the fp32
        # sums of up to four equal bf16 values, and a node's bf16 partial of
        # one or two of them, are exact).
        combined, combined_w, _ = combine(expert_out, handle, topk_weights=recv_w, config=config)
        holders = want_in_rank.sum(dim=1, keepdim=True).float()
        assert torch.equal(combined.cpu(), (own.float() * holders).bfloat16()), "combined_x"
        want_cw = torch.where(idxs[rank] >= 0, ws[rank], torch.zeros_like(ws[rank]))
        assert torch.equal(combined_w.cpu(), want_cw), "combined_topk_weights"

        # The handle again, cached: the same rows.
        again, *_ = dispatch(x_in, handle=handle, config=config)
        if fp8:
            assert same_bytes(again[0].cpu(), want_q) and torch.equal(again[1].cpu(), want_s), "cached recv_x"
        else:
            assert torch.equal(again.cpu(), torch.cat(rows)), "cached recv_x"

        buffer._normal.check()
        print("rank", rank, "round", round_, "normal ok", flush=True)
        if not with_low_latency:
            continue
        # A low-latency batch between normal ones, then the clean SGLang
        # calls when it switches back. Across nodes its buffer and the
        # normal one share the job's signal array.
        ll_x = x[:32].contiguous()
        ll_recv, ll_count, ll_handle, _, _ = buffer.low_latency_dispatch(ll_x, topk_idx[:32].contiguous(), 32,
                                                                         num_experts, use_fp8=False)
        ll_out, _, _ = buffer.low_latency_combine(ll_recv, topk_idx[:32].contiguous(), topk_weights[:32].contiguous(),
                                                  ll_handle)
        torch.cuda.synchronize()
        # A device error (a rank given up on, its terms zero) is raised here,
        # naming what was waited for, before the values are compared.
        buffer._ll.check()
        ll_weights = torch.where(idxs[rank][:32] >= 0, ws[rank][:32], torch.zeros_like(ws[rank][:32])).sum(dim=1,
                                                                                                            keepdim=True)
        torch.testing.assert_close(ll_out.cpu().float(), (xs[rank][:32].float() * ll_weights).bfloat16().float(),
                                   rtol=2e-2, atol=2e-2, msg=lambda m: f"round {round_} low-latency combine: {m}")
        buffer.clean_low_latency_buffer(32, hidden, num_experts)
    buffer._normal.check()
    if with_low_latency:
        buffer._ll.check()
    # The tensors get_local_buffer_tensor gives, with no rank in a call.
    torch.cuda.synchronize()
    dist.barrier()
    check_aliases(buffer, buffer._normal.region(), False, rank)
    if nodes == 1:
        expect_absent(buffer, True, "group is on one node")
    elif with_low_latency:  # low_latency_mode=True: the RDMA buffer is the low-latency buffer's window
        region = buffer._ll.region(rdma=True)
        check_aliases(buffer, region, True, rank)
        print("rank", rank, "RDMA buffer is", "GPU" if region.is_device else "host (mapped)", "memory", flush=True)
    else:
        expect_absent(buffer, True, "first low_latency_dispatch")
    torch.cuda.synchronize()
    dist.barrier()
    print("rank", rank, "ok", flush=True)
    buffer.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
