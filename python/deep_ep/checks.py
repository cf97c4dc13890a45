"""Checks of deep_ep.Buffer's tensor arguments, run before any native call.
Each failure is an EpxInvalidArgumentError naming the argument and why.
Dtype and shape come first, the device last, so the checks run (and are
tested) with CPU tensors."""

from typing import Any, Optional, Sequence

from epx.errors import EpxInvalidArgumentError


def fail(call: str, message: str) -> EpxInvalidArgumentError:
    return EpxInvalidArgumentError(f"{call}: {message}", "INVALID_ARGUMENT")


def check_tensor(call: str, name: str, tensor: Any, dtype: Any, shape: Sequence[Optional[int]]) -> None:
    """`tensor` is a contiguous torch tensor of `dtype` and `shape` (None: any
    size on that dimension)."""
    import torch
    if not isinstance(tensor, torch.Tensor):
        raise fail(call, f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype != dtype:
        raise fail(call, f"{name} must be {dtype}, got {tensor.dtype}")
    if tensor.dim() != len(shape):
        raise fail(call, f"{name} must have {len(shape)} dimensions {_shape_text(shape)}, got {tuple(tensor.shape)}")
    for axis, (want, got) in enumerate(zip(shape, tensor.shape)):
        if want is not None and want != got:
            raise fail(call, f"{name} must be shaped {_shape_text(shape)}, got {tuple(tensor.shape)} "
                             f"(dimension {axis} is {got}, not {want})")
    if not tensor.is_contiguous():
        raise fail(call, f"{name} must be contiguous (row-major)")


def check_cuda(call: str, names_and_tensors: Sequence) -> None:
    """Every given tensor (None skipped) is on the same CUDA device."""
    device = None
    for name, tensor in names_and_tensors:
        if tensor is None:
            continue
        if not tensor.is_cuda:
            raise fail(call, f"{name} must be a CUDA tensor, got one on {tensor.device}")
        if device is None:
            device = tensor.device
        elif tensor.device != device:
            raise fail(call, f"{name} is on {tensor.device}, the other tensors on {device}")


def check_positive(call: str, name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise fail(call, f"{name} must be a positive int, got {value!r}")


def unsupported(call: str, name: str, why: str) -> EpxInvalidArgumentError:
    return fail(call, f"{name} is not supported by EPX: {why}")


def _shape_text(shape: Sequence[Optional[int]]) -> str:
    return "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
