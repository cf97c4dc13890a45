"""One rank of the deep_ep benchmark: what EPX's Python layer costs on top
of the C++ calls. Times, with CUDA events over back-to-back calls, DeepEP's
two test shapes through `import deep_ep`: low-latency dispatch + combine
(128 tokens, hidden 7168, top-8, 288 experts, FP8) and normal-mode
dispatch (cached handle, as DeepEP's benchmark) and combine (4096 tokens,
hidden 7168, top-8, 256 experts, BF16 and FP8). Rank 0 prints one
"DEEP_EP_BENCH {json}" line; tools/device/run.sh runs the C++ benchmarks
(ll_bench, normal_bench) in the same call, to set beside it.

The script uses only deep_ep's public API, so it also times DeepEP itself:
with DEEP_EP_BENCH_IMPL=deepep it imports the `deep_ep` found on PYTHONPATH
(a DeepEP build; tools/device/deepep_same_gpu.sh) instead of EPX's. Both
use DeepEP's recommended configs for the rank count
(Buffer.get_dispatch_config / get_combine_config).

argv: rendezvous file, rank, world size[, modes: "ll,normal" (default)]."""

import json
import os
import sys

IMPL = os.environ.get("DEEP_EP_BENCH_IMPL", "epx")
if IMPL not in ("epx", "deepep"):
    sys.exit(f"DEEP_EP_BENCH_IMPL={IMPL}: expected epx or deepep")
if IMPL == "epx":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                    "python"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import deep_ep  # noqa: E402


def timed(fn, iters):
    """Mean microseconds per call on the current stream, after a warm-up
    and a barrier."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    dist.barrier()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    dist.barrier()
    return 1000.0 * start.elapsed_time(end) / iters


def per_token_fp8(x):
    """x [tokens, hidden] BF16 as deep_ep's FP8 dispatch input: e4m3 values
    and one float scale per 128 columns (amax / 448)."""
    tokens, hidden = x.shape
    blocks = x.float().view(tokens, hidden // 128, 128)
    scales = blocks.abs().amax(dim=2).clamp(min=1e-4) / 448.0
    values = (blocks / scales.unsqueeze(2)).view(tokens, hidden).to(torch.float8_e4m3fn)
    return values, scales


def main() -> int:
    rendezvous, rank, world = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    modes = (sys.argv[4] if len(sys.argv) > 4 else "ll,normal").split(",")
    torch.cuda.set_device(rank % torch.cuda.device_count())
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    gen = torch.Generator(device="cuda").manual_seed(rank + 7)
    result = {"impl": IMPL, "ranks": world}
    hidden, topk = 7168, 8
    if "ll" in modes:
        low_latency(result, world, hidden, topk, gen)
    if "normal" in modes:
        normal(result, world, hidden, topk, gen)
    if rank == 0:
        print("DEEP_EP_BENCH " + json.dumps(result), flush=True)
    return 0


def low_latency(result, world, hidden, topk, gen):
    """DeepEP's test_low_latency shape: FP8 dispatch, then dispatch + combine."""
    num_max, experts = 128, 288
    ll = deep_ep.Buffer(dist.group.WORLD, low_latency_mode=True, explicitly_destroy=True,
                        num_rdma_bytes=deep_ep.Buffer.get_low_latency_rdma_size_hint(num_max, hidden, world, experts))
    x = torch.randn(num_max, hidden, dtype=torch.bfloat16, device="cuda", generator=gen)
    scores = torch.rand(num_max, experts, device="cuda", generator=gen)
    idx = scores.topk(topk, dim=1).indices.to(deep_ep.topk_idx_t)
    w = torch.rand(num_max, topk, dtype=torch.float32, device="cuda", generator=gen)
    recv, _, handle, _, _ = ll.low_latency_dispatch(x, idx, num_max, experts, use_fp8=True)
    y = torch.zeros(recv[0].shape, dtype=torch.bfloat16, device="cuda")

    def ll_both():
        _, _, h, _, _ = ll.low_latency_dispatch(x, idx, num_max, experts, use_fp8=True)
        ll.low_latency_combine(y, idx, w, h)

    result["ll_dispatch_us"] = timed(lambda: ll.low_latency_dispatch(x, idx, num_max, experts, use_fp8=True), 200)
    result["ll_both_us"] = timed(ll_both, 200)
    ll.destroy()


def normal(result, world, hidden, topk, gen):
    """DeepEP's test_intranode shape: layout, BF16 and FP8 dispatch, combine."""
    tokens, experts = 4096, 256
    config = deep_ep.Buffer.get_dispatch_config(world)
    combine_config = deep_ep.Buffer.get_combine_config(world)
    result["normal_num_sms"] = deep_ep.Buffer.num_sms  # what both configs above use
    nvl_bytes = max(config.get_nvl_buffer_size_hint(hidden * 2, world),
                    combine_config.get_nvl_buffer_size_hint(hidden * 2, world))
    nb = deep_ep.Buffer(dist.group.WORLD, num_nvl_bytes=nvl_bytes, explicitly_destroy=True)
    x = torch.randn(tokens, hidden, dtype=torch.bfloat16, device="cuda", generator=gen)
    scores = torch.rand(tokens, experts, device="cuda", generator=gen)
    idx = scores.topk(topk, dim=1).indices.to(deep_ep.topk_idx_t)
    w = torch.rand(tokens, topk, dtype=torch.float32, device="cuda", generator=gen)
    per_rank, _, per_expert, in_rank, _ = nb.get_dispatch_layout(idx, experts)
    recv_x, _, recv_w, _, handle, _ = nb.dispatch(x, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank,
                                                  num_tokens_per_expert=per_expert, topk_idx=idx, topk_weights=w,
                                                  config=config)
    result["recv_tokens"] = recv_x.shape[0]
    result["normal_layout_us"] = timed(lambda: nb.get_dispatch_layout(idx, experts), 20)
    result["normal_dispatch_bf16_cached_us"] = timed(lambda: nb.dispatch(x, handle=handle, config=config), 20)
    result["normal_dispatch_bf16_us"] = timed(
        lambda: nb.dispatch(x, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank,
                            num_tokens_per_expert=per_expert, topk_idx=idx, topk_weights=w, config=config), 20)
    x_fp8 = per_token_fp8(x)
    result["normal_dispatch_fp8_cached_us"] = timed(lambda: nb.dispatch(x_fp8, handle=handle, config=config), 20)
    result["normal_combine_us"] = timed(lambda: nb.combine(recv_x, handle, config=combine_config), 20)
    nb.destroy()


if __name__ == "__main__":
    sys.exit(main())
