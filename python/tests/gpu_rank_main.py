"""One rank of test_low_latency_gpu: low-latency dispatch and combine
through `import deep_ep` on GPU `rank` (ranks share the GPUs round-robin;
one GPU: run under MPS), checked against torch.

argv: rendezvous file, rank, world size, return_recv_hook (0/1)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import deep_ep  # noqa: E402


def main() -> int:
    rendezvous, rank, world, use_hook = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
    torch.cuda.set_device(rank % torch.cuda.device_count())
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    num_max, hidden, num_experts, num_topk, num_tokens = 32, 1024, 4 * world, 3, 24
    buffer = deep_ep.Buffer(dist.group.WORLD, low_latency_mode=True, explicitly_destroy=True)
    gen = torch.Generator(device="cuda").manual_seed(rank + 1)
    x = torch.randn(num_tokens, hidden, dtype=torch.bfloat16, device="cuda", generator=gen)
    topk_idx = torch.stack([torch.randperm(num_experts, device="cuda", generator=gen)[:num_topk]
                            for _ in range(num_tokens)]).to(deep_ep.topk_idx_t)
    topk_idx[0, 1] = -1  # DeepEP's "no expert"
    topk_weights = torch.rand(num_tokens, num_topk, dtype=torch.float32, device="cuda", generator=gen)

    for _ in range(3):  # both halves, then the first again
        recv_x, recv_count, handle, _, hook = buffer.low_latency_dispatch(
            x, topk_idx, num_max, num_experts, use_fp8=False, return_recv_hook=use_hook)
        if use_hook:
            hook()
        # Every expert returns its input: the combine is x[t] * (sum of the weights of its real experts).
        combined, _, hook = buffer.low_latency_combine(recv_x.clone(), topk_idx, topk_weights, handle,
                                                       return_recv_hook=use_hook)
        if use_hook:
            hook()
        torch.cuda.synchronize()
        buffer._ll.check()
        weights = torch.where(topk_idx >= 0, topk_weights, torch.zeros_like(topk_weights)).sum(dim=1, keepdim=True)
        expected = (x.float() * weights).bfloat16()
        torch.testing.assert_close(combined.float(), expected.float(), rtol=2e-2, atol=2e-2)
        # recv_count: tokens of every rank for each local expert.
        counts = [torch.zeros(num_experts, dtype=torch.int64) for _ in range(world)]
        dist.all_gather(counts, torch.bincount(topk_idx[topk_idx >= 0].cpu(), minlength=num_experts))
        local = num_experts // world
        want = torch.stack(counts).sum(dim=0)[rank * local:(rank + 1) * local]
        assert recv_count.cpu().tolist() == want.tolist(), (recv_count.cpu().tolist(), want.tolist())
    print("rank", rank, "ok", flush=True)
    buffer.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
