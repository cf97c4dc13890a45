"""Low-latency dispatch and combine through `import deep_ep`, two ranks (one
process each): BF16 and FP8, -1 entries, with and without the receive hook,
three rounds (both halves), a CUDA graph of dispatch + combine replayed with
new tokens, over NVLink (one epxd) and through two daemons (emulated
nodes). Needs a CUDA GPU (two ranks share one under MPS:
tools/device/run.sh python_gpu); skipped without one."""

import os
import subprocess
import sys

import pytest
import torch
from gpu_share import gpu_share

HERE = os.path.dirname(os.path.abspath(__file__))

needs_gpus = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def run_ranks(tmp_path, sockets, hook, fp8, graph, logs):
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "gpu_rank_main.py"), str(tmp_path / "rdv"),
                               str(rank), "2", hook, fp8, graph], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=dict(os.environ, EPX_SOCKET=sockets[rank],
                                                  CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=gpu_share(2)))
             for rank in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0 and f"rank {rank} ok" in out, f"rank {rank}:\n{out}\n{logs()[-4000:]}"


@needs_gpus
@pytest.mark.parametrize("hook,fp8,graph", [("0", "0", "0"), ("1", "0", "0"), ("0", "1", "1"), ("1", "1", "0")])
def test_dispatch_combine_one_node(tmp_path, daemon, hook, fp8, graph):
    run_ranks(tmp_path, [daemon.socket] * 2, hook, fp8, graph, daemon.log)


@needs_gpus
def test_dispatch_combine_through_two_daemons(tmp_path, two_daemons):
    run_ranks(tmp_path, [d.socket for d in two_daemons], "1", "1", "1", lambda: two_daemons[0].log() + two_daemons[1].log())
