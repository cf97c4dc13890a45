"""Torch tensors over EPX's device memory, built without torch's C API:
an object exposing __cuda_array_interface__ (which the tensor keeps alive,
and with it the buffer that owns the memory), viewed as the wanted dtype."""

from typing import Any, List, Optional, Sequence, Tuple

from . import checks

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


def element_size(dtype: Any) -> int:
    """Bytes of one element of torch dtype `dtype`."""
    import torch
    return torch.empty(0, dtype=dtype).element_size()


def local_view(call: str, num_bytes: int, offset: int, itemsize: int, size: Optional[Any]) -> Tuple[int, List[int]]:
    """get_local_buffer_tensor's arithmetic: (elements, shape) of a view of
    a region of num_bytes, starting `offset` bytes in, elements of itemsize
    bytes. size=None: every whole element from offset to the end, 1-D (not
    DeepEP's num_bytes // itemsize, which runs past the end when offset > 0);
    else size's elements, viewed as size. EpxInvalidArgumentError when the
    offset is beyond the region or fewer elements fit than size needs."""
    if offset > num_bytes:
        raise checks.fail(call, f"offset={offset} is beyond the buffer's {num_bytes} bytes")
    available = (num_bytes - offset) // itemsize
    if size is None:
        return available, [available]
    shape = [int(d) for d in size]
    count = 1
    for d in shape:
        count *= d
    if count > available:
        raise checks.fail(call, f"size={tuple(shape)} needs {count} elements of {itemsize} bytes; the buffer holds "
                                f"{available} from offset={offset} ({num_bytes} bytes in all)")
    return count, shape


def alias(pointer: int, count: int, shape: Sequence[int], dtype: Any, device: int, owner: Any) -> Any:
    """A tensor of `dtype` and `shape` over the `count` elements at `pointer`
    (no copy), holding `owner`: a 1-D byte tensor viewed as dtype, so any
    torch dtype works."""
    import torch
    num_bytes = count * element_size(dtype)
    carrier = torch.as_tensor(_DeviceMemory(pointer, [num_bytes], "|u1", None, owner), device=f"cuda:{device}")
    flat = carrier if dtype == torch.uint8 else carrier.view(dtype)
    return flat.view(list(shape))
