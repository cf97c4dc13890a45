"""Low-latency dispatch and combine through `import deep_ep` on two GPUs
(one process each, one epxd): BF16, -1 entries, with and without the
receive hook, three rounds (both halves). Needs a CUDA GPU (two ranks
share one under MPS: tools/device/run.sh python_gpu); skipped without one."""

import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))

needs_gpus = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_gpus
@pytest.mark.parametrize("hook", ["0", "1"])
def test_dispatch_combine_two_gpus(tmp_path, daemon, hook):
    env = dict(os.environ, EPX_SOCKET=daemon.socket)
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "gpu_rank_main.py"), str(tmp_path / "rdv"),
                               str(rank), "2", hook], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env) for rank in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0 and f"rank {rank} ok" in out, f"rank {rank}:\n{out}\n{daemon.log()[-4000:]}"
