"""Each rank's share of a GPU's SMs when ranks share one (the emulation of
nodes on the lent single-GPU machine), as the C++ harness gives them
(tests/gpu/rank_job.h; effective under MPS): a rank's kernels spinning on
another rank's data must not take every SM from the kernel that sends it,
which on a GPU of its own it never could."""

import torch


def gpu_share(world: int) -> str:
    """CUDA_MPS_ACTIVE_THREAD_PERCENTAGE for each of `world` rank processes."""
    sharing = -(-world // max(torch.cuda.device_count(), 1))
    return str(max(1, 100 // sharing))
