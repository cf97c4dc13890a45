"""Torch tensors over EPX's device memory, built without torch's C API:
an object exposing __cuda_array_interface__ (which the tensor keeps alive,
and with it the buffer that owns the memory), viewed as the wanted dtype."""

from typing import Any, Optional, Sequence

# typestr of a same-size integer type, per torch dtype name.
_CARRIER = {
    "bfloat16": ("<i2", 2),
    "float8_e4m3fn": ("|u1", 1),
    "float32": ("<f4", 4),
    "int32": ("<i4", 4),
    "int64": ("<i8", 8),
}


class _DeviceMemory:
    def __init__(self, pointer: int, shape: Sequence[int], typestr: str, strides: Optional[Sequence[int]],
                 owner: Any) -> None:
        self.owner = owner  # keeps the memory's owner alive as long as the tensor
        self.__cuda_array_interface__ = {
            "data": (int(pointer), False),
            "shape": tuple(int(s) for s in shape),
            "typestr": typestr,
            "strides": None if strides is None else tuple(int(s) for s in strides),
            "version": 2,
        }


def device_tensor(pointer: int, shape: Sequence[int], dtype: Any, device: int, owner: Any,
                  strides: Optional[Sequence[int]] = None) -> Any:
    """A tensor of `dtype` over `pointer` (strides in elements; None: row-major).

    An owner with a `tensor_cache` dict (cleared when it frees its memory)
    keeps the tensors it has handed out: building one through
    __cuda_array_interface__ costs tens of microseconds, a low-latency call's
    whole budget, while the buffers' addresses never change. The caller gets
    a fresh tensor object over the same memory each time."""
    cache = getattr(owner, "tensor_cache", None)
    if cache is None:
        return _build(pointer, shape, dtype, device, owner, strides)
    key = (int(pointer), tuple(shape), str(dtype), int(device), None if strides is None else tuple(strides))
    base = cache.get(key)
    if base is None:
        base = cache[key] = _build(pointer, shape, dtype, device, owner, strides)
    return base.detach()


def _build(pointer: int, shape: Sequence[int], dtype: Any, device: int, owner: Any,
           strides: Optional[Sequence[int]]) -> Any:
    import torch
    name = str(dtype).replace("torch.", "")
    typestr, itemsize = _CARRIER[name]
    byte_strides = None if strides is None else [s * itemsize for s in strides]
    carrier = torch.as_tensor(_DeviceMemory(pointer, shape, typestr, byte_strides, owner), device=f"cuda:{device}")
    return carrier if carrier.dtype == dtype else carrier.view(dtype)
