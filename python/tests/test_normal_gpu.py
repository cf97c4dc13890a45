"""Normal-mode dispatch and combine through `import deep_ep`, checked against
torch (normal_gpu_rank_main.py), BF16 and FP8 rounds with low-latency
batches in between: two ranks (one process each, one epxd) inside one node,
and four ranks as two emulated nodes of two (one epxd each, so tokens cross
between the daemons, and the low-latency and normal buffers share each
rank's signal array). Needs a CUDA GPU (ranks share one under MPS:
tools/device/run.sh python_gpu); skipped without one."""

import os
import subprocess
import sys

import pytest
import torch
from gpu_share import gpu_share

HERE = os.path.dirname(os.path.abspath(__file__))

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def run_ranks(tmp_path, sockets, ranks_per_node, logs, low_latency="with-ll"):
    world = len(sockets)
    share = gpu_share(world)
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "normal_gpu_rank_main.py"), str(tmp_path / "rdv"),
                               str(rank), str(world), str(ranks_per_node), low_latency], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env=dict(os.environ, EPX_SOCKET=sockets[rank], CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=share))
             for rank in range(world)]
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            outputs.append(p.communicate()[0] + "\n(killed after 300 s)")
    # Every failed rank's output: the job's first failure is in one of them,
    # not always the lowest rank's.
    failed = [f"rank {rank} (exit {p.returncode}):\n{out[-3000:]}" for rank, (p, out) in enumerate(zip(procs, outputs))
              if p.returncode != 0 or f"rank {rank} ok" not in out]
    assert not failed, "\n".join(failed) + "\n" + logs()[-4000:]


@needs_gpu
def test_normal_dispatch_combine_two_ranks(tmp_path, daemon):
    run_ranks(tmp_path, [daemon.socket] * 2, 2, daemon.log)


@needs_gpu
def test_normal_dispatch_combine_two_nodes_of_two(tmp_path, two_daemons):
    a, b = two_daemons
    run_ranks(tmp_path, [a.socket, a.socket, b.socket, b.socket], 2, lambda: a.log() + b.log())


@needs_gpu
def test_normal_only_two_nodes_of_two(tmp_path, two_daemons):
    """The same rounds without the low-latency batches: the normal-mode path
    across nodes on its own."""
    a, b = two_daemons
    run_ranks(tmp_path, [a.socket, a.socket, b.socket, b.socket], 2, lambda: a.log() + b.log(), "no-ll")
