"""The current CUDA stream as the cudaStream_t integer EPX's C ABI takes.

torch.cuda.current_stream() builds a torch.cuda.Stream object on every
call, a cost every deep_ep call paid on the host. torch's own raw getter
(torch._C._cuda_getCurrentRawStream, what torch's extensions use through
at::cuda::getCurrentCUDAStream) returns the same pointer directly; where a
torch build lacks it, the public path is taken. Inside a CUDA graph
capture both give the capturing stream."""

from typing import Callable, Optional

_raw: Optional[Callable[[int], int]] = None
_resolved = False


def current_stream_pointer() -> int:
    global _raw, _resolved
    import torch
    if not _resolved:
        _raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
        _resolved = True
    if _raw is not None:
        return int(_raw(torch.cuda.current_device()))
    return int(torch.cuda.current_stream().cuda_stream)
