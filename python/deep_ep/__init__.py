"""DeepEP's Python API (deep_ep v1) backed by EPX: `import deep_ep` and
`deep_ep.Buffer(group, low_latency_mode=True)` as with DeepEP, with the
node's epxd (EPX_SOCKET, else /run/epx/epxd.sock) doing the transport."""

import torch

from .buffer import Buffer
from .config import Config
from .event_overlap import EventOverlap

# The dtype of topk_idx tensors.
topk_idx_t = torch.int64

__all__ = ["Buffer", "Config", "EventOverlap", "topk_idx_t"]
