"""Normal-mode dispatch and combine through `import deep_ep`: two ranks
(one process each, one epxd) inside one node, checked against torch.
Needs a CUDA GPU (two ranks share one under MPS: tools/device/run.sh
python_gpu); skipped without one."""

import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_gpu
def test_normal_dispatch_combine_two_ranks(tmp_path, daemon):
    env = dict(os.environ, EPX_SOCKET=daemon.socket)
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "normal_gpu_rank_main.py"), str(tmp_path / "rdv"),
                               str(rank), "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for rank in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0 and f"rank {rank} ok" in out, f"rank {rank}:\n{out}\n{daemon.log()[-4000:]}"
