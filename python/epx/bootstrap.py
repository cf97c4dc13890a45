"""Joining a job from a torch.distributed group: one all_gather_object to
agree on the job id and the coordinator (rank 0's daemon), then join through
the local epxd. No torch.distributed traffic after this."""

import os
import uuid
from typing import Any, Optional

from .client import Client, Job, gpu_pci_address
from .errors import EpxError


def join_group(group: Any, socket_path: Optional[str] = None, timeout_ms: int = 60000) -> Job:
    """Connects to the local epxd and joins the job of `group`'s ranks.

    The job id is EPX_JOB_ID when rank 0 has it set, else a fresh one from
    rank 0; the coordinator is rank 0's daemon; a rank's local rank is its
    index among the ranks whose daemon is on its node."""
    import torch.distributed as dist

    rank = dist.get_rank(group)
    world_size = dist.get_world_size(group)
    client = Client(socket_path, name=f"deep_ep rank {rank}")
    info = client.daemon_info()
    proposal = {
        "job_id": os.environ.get("EPX_JOB_ID") or f"deep_ep-{uuid.uuid4().hex[:16]}",
        "node": info.node,
        "peer_address": info.peer_address,
    }
    gathered = [None] * world_size
    dist.all_gather_object(gathered, proposal, group=group)
    job_id = gathered[0]["job_id"]
    coordinator = gathered[0]["peer_address"]
    local_rank = sum(1 for g in gathered[:rank] if g["node"] == info.node)
    return client.join(job_id, world_size, rank, local_rank, coordinator, timeout_ms, _current_gpu())


def _current_gpu() -> str:
    """The PCI address of torch's current CUDA device (the daemon serves the
    rank from the NICs nearest it); "" without CUDA."""
    try:
        import torch
        if not torch.cuda.is_available():
            return ""
        return gpu_pci_address(torch.cuda.current_device())
    except (ImportError, EpxError):
        return ""
