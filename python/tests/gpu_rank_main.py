"""One rank of test_low_latency_gpu: low-latency dispatch and combine
through `import deep_ep` on GPU `rank` (ranks share the GPUs round-robin;
one GPU: run under MPS), checked against torch: three rounds (both halves,
then the first again), then, with `graph`, dispatch + combine captured in a
CUDA graph and replayed with new tokens; get_local_buffer_tensor before the
first dispatch and at the end (local_buffer_check.py: across nodes, the
RDMA buffer's views alias the low-latency buffer's window).

argv: rendezvous file, rank, world size, return_recv_hook (0/1), use_fp8
(0/1), graph (0/1). EPX_SOCKET names this rank's epxd (ranks of one job may
talk to different daemons: emulated nodes)."""

import os
import sys

if not os.environ.get("EPX_TEST_INSTALLED"):  # else: the installed wheel's packages
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import deep_ep  # noqa: E402
from local_buffer_check import check_aliases, expect_absent  # noqa: E402


def dequantize(recv_x, use_fp8):
    """bf16 expert inputs: FP8 rows times their per-128-channel scales."""
    if not use_fp8:
        return recv_x.clone()
    fp8, scales = recv_x
    return (fp8.float() * scales.repeat_interleave(128, dim=-1)).bfloat16()


def check_combined(combined, x, topk_idx, topk_weights, use_fp8):
    """Every expert returned its input: x[t] times the sum of its real experts' weights."""
    weights = torch.where(topk_idx >= 0, topk_weights, torch.zeros_like(topk_weights)).sum(dim=1, keepdim=True)
    expected = x.float() * weights
    if use_fp8:
        # e4m3 keeps 3 mantissa bits: each term is within 2^-4 of x, plus bf16 rounding.
        bound = 0.07 * weights * x.float().abs() + 0.01 * expected.abs() + 1e-2
        worst = ((combined.float() - expected).abs() - bound).max().item()
        assert worst <= 0, f"FP8 combine off by {worst} beyond its bound"
    else:
        torch.testing.assert_close(combined.float(), expected.bfloat16().float(), rtol=2e-2, atol=2e-2)


def main() -> int:
    rendezvous, rank, world = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    use_hook, use_fp8, graph = sys.argv[4] == "1", sys.argv[5] == "1", sys.argv[6] == "1"
    torch.cuda.set_device(rank % torch.cuda.device_count())
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    num_max, hidden, num_experts, num_topk, num_tokens = 32, 1024, 4 * world, 3, 24
    buffer = deep_ep.Buffer(dist.group.WORLD, low_latency_mode=True, explicitly_destroy=True)
    # get_local_buffer_tensor: no normal-mode buffer (num_nvl_bytes=0), and
    # the RDMA buffer (the low-latency one's window) only across nodes,
    # from the first low_latency_dispatch on.
    nodes = buffer.num_nodes
    expect_absent(buffer, False, "num_nvl_bytes=0 holds no normal-mode buffer")
    expect_absent(buffer, True, "group is on one node" if nodes == 1 else "first low_latency_dispatch")
    gen = torch.Generator(device="cuda").manual_seed(rank + 1)
    x = torch.randn(num_tokens, hidden, dtype=torch.bfloat16, device="cuda", generator=gen)
    topk_idx = torch.stack([torch.randperm(num_experts, device="cuda", generator=gen)[:num_topk]
                            for _ in range(num_tokens)]).to(deep_ep.topk_idx_t)
    topk_idx[0, 1] = -1  # DeepEP's "no expert"
    topk_weights = torch.rand(num_tokens, num_topk, dtype=torch.float32, device="cuda", generator=gen)

    for _ in range(3):  # both halves, then the first again
        recv_x, recv_count, handle, _, hook = buffer.low_latency_dispatch(
            x, topk_idx, num_max, num_experts, use_fp8=use_fp8, return_recv_hook=use_hook)
        if use_hook:
            hook()
        combined, _, hook = buffer.low_latency_combine(dequantize(recv_x, use_fp8), topk_idx, topk_weights, handle,
                                                       return_recv_hook=use_hook)
        if use_hook:
            hook()
        torch.cuda.synchronize()
        buffer._ll.check()
        check_combined(combined, x, topk_idx, topk_weights, use_fp8)
        # recv_count: tokens of every rank for each local expert.
        counts = [torch.zeros(num_experts, dtype=torch.int64) for _ in range(world)]
        dist.all_gather(counts, torch.bincount(topk_idx[topk_idx >= 0].cpu(), minlength=num_experts))
        local = num_experts // world
        want = torch.stack(counts).sum(dim=0)[rank * local:(rank + 1) * local]
        assert recv_count.cpu().tolist() == want.tolist(), (recv_count.cpu().tolist(), want.tolist())

    if graph:
        # Decode as vLLM runs it: dispatch, experts, combine captured once and
        # replayed with new tokens written into the captured input.
        out = torch.empty(num_tokens, hidden, dtype=torch.bfloat16, device="cuda")
        torch.cuda.synchronize()
        dist.barrier()
        captured = torch.cuda.CUDAGraph()
        with torch.cuda.graph(captured):
            recv_x, _, handle, _, _ = buffer.low_latency_dispatch(x, topk_idx, num_max, num_experts, use_fp8=use_fp8)
            buffer.low_latency_combine(dequantize(recv_x, use_fp8), topk_idx, topk_weights, handle, out=out)
        for replay in range(3):
            x.copy_(torch.randn(num_tokens, hidden, dtype=torch.bfloat16, device="cuda", generator=gen))
            torch.cuda.synchronize()
            dist.barrier()
            captured.replay()
            torch.cuda.synchronize()
            buffer._ll.check()
            check_combined(out, x, topk_idx, topk_weights, use_fp8)
    torch.cuda.synchronize()
    dist.barrier()  # no rank in a call
    expect_absent(buffer, False, "the NVLink buffer does not exist yet")
    if nodes == 1:
        expect_absent(buffer, True, "group is on one node")
    else:
        region = buffer._ll.region(rdma=True)
        check_aliases(buffer, region, True, rank)
        print("rank", rank, "RDMA buffer is", "GPU" if region.is_device else "host (mapped)", "memory", flush=True)
    torch.cuda.synchronize()
    dist.barrier()
    print("rank", rank, "ok", flush=True)
    buffer.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
