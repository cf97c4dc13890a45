"""Loads libepx_c.so (python/native/epx_c.h) with ctypes and declares its
functions. The library is EPX_LIBRARY when set, else the one bundled in this
package (epx/lib/libepx_c.so, the libraries it needs beside it). Loaded on
first use, so the pure-Python parts (argument checks, errors) work without
it."""

import ctypes
import os
import threading
from typing import NamedTuple, Optional

from .errors import EpxError, EpxUnavailableError, error_from_status

ABI_VERSION = 3

c_int_p = ctypes.POINTER(ctypes.c_int)
c_u32_p = ctypes.POINTER(ctypes.c_uint32)
c_size_p = ctypes.POINTER(ctypes.c_size_t)
c_void_pp = ctypes.POINTER(ctypes.c_void_p)


class LLOptions(ctypes.Structure):
    _fields_ = [
        ("num_max_dispatch_tokens_per_rank", ctypes.c_int),
        ("hidden", ctypes.c_int),
        ("num_experts", ctypes.c_int),
        ("num_topk", ctypes.c_int),
        ("device", ctypes.c_int),
        ("timeout_ms", ctypes.c_int),
    ]


class LLHandle(ctypes.Structure):
    _fields_ = [
        ("half", ctypes.c_int),
        ("num_tokens", ctypes.c_int),
        ("src_info", ctypes.c_void_p),
        ("layout_range", ctypes.c_void_p),
        ("recv_count", ctypes.c_void_p),
    ]


class LLDispatchOut(ctypes.Structure):
    _fields_ = [
        ("recv_x", ctypes.c_void_p),
        ("recv_scales", ctypes.c_void_p),
        ("recv_count", ctypes.c_void_p),
        ("handle", LLHandle),
    ]


class NormalOptions(ctypes.Structure):
    _fields_ = [
        ("num_max_tokens_per_rank", ctypes.c_int),
        ("hidden", ctypes.c_int),
        ("num_experts", ctypes.c_int),
        ("num_topk", ctypes.c_int),
        ("device", ctypes.c_int),
        ("timeout_ms", ctypes.c_int),
    ]


class NormalHandleInfo(ctypes.Structure):
    _fields_ = [
        ("num_tokens", ctypes.c_int),
        ("num_recv_tokens", ctypes.c_int),
        ("rank_prefix_matrix", ctypes.c_void_p),
        ("send_index", ctypes.c_void_p),
        ("is_token_in_rank", ctypes.c_void_p),
        ("device_num_recv_tokens", ctypes.c_void_p),
    ]


class NormalDispatchIn(ctypes.Structure):
    _fields_ = [
        ("x", ctypes.c_void_p),
        ("num_tokens", ctypes.c_int),
        ("x_scales", ctypes.c_void_p),
        ("num_scales", ctypes.c_int),
        ("scale_token_stride", ctypes.c_int),
        ("scale_hidden_stride", ctypes.c_int),
        ("topk_idx", ctypes.c_void_p),
        ("topk_weights", ctypes.c_void_p),
        ("is_token_in_rank", ctypes.c_void_p),
        ("num_tokens_per_expert", ctypes.c_void_p),
        ("cached", ctypes.c_int),
        ("expert_alignment", ctypes.c_int),
        ("num_worst_tokens", ctypes.c_int),
        ("num_sms", ctypes.c_int),
    ]


class NormalDispatchOut(ctypes.Structure):
    _fields_ = [
        ("recv_x", ctypes.c_void_p),
        ("recv_x_scales", ctypes.c_void_p),
        ("recv_topk_idx", ctypes.c_void_p),
        ("recv_topk_weights", ctypes.c_void_p),
        ("recv_src_idx", ctypes.c_void_p),
        ("num_recv_tokens", ctypes.c_int),
    ]


class Region(ctypes.Structure):
    """epx_region: a buffer's own memory (epx_ll_region, epx_normal_region)."""
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("bytes", ctypes.c_uint64),
        ("is_device", ctypes.c_int),
    ]


REGION_NVL = 0   # EPX_REGION_NVL
REGION_RDMA = 1  # EPX_REGION_RDMA


class LocalRegion(NamedTuple):
    """A buffer's own memory, as Python ints: where it starts (a device
    pointer; for a host window, its mapping for the GPU), the bytes the
    buffer lays out in it, and whether it is GPU memory."""
    pointer: int
    bytes: int
    is_device: bool


def region(function: str, handle: Optional[int], rdma: bool) -> LocalRegion:
    """epx_ll_region / epx_normal_region (`function`) of a buffer handle."""
    out = Region()
    call(function, handle, REGION_RDMA if rdma else REGION_NVL, ctypes.byref(out))
    return LocalRegion(out.data or 0, int(out.bytes), bool(out.is_device))

_P = ctypes.c_void_p
_I = ctypes.c_int
_U32 = ctypes.c_uint32
_S = ctypes.c_char_p

# name: (argument types); every one of these returns an int status code.
_STATUS_FUNCTIONS = {
    "epx_client_connect": [_S, _S, _I, c_void_pp],
    "epx_client_daemon_info": [_P, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t],
    "epx_client_join": [_P, _S, _U32, _U32, _U32, _S, _I, _S, c_void_pp],
    "epx_gpu_pci_address": [_I, ctypes.c_char_p, ctypes.c_size_t],
    "epx_job_barrier": [_P, _I],
    "epx_job_lost_ranks": [_P, c_u32_p, ctypes.c_size_t, c_size_p],
    "epx_job_nodes": [_P, c_u32_p, ctypes.c_size_t, c_size_p],
    "epx_ll_size_hint": [_I, _I, _I, _I, ctypes.POINTER(ctypes.c_uint64)],
    "epx_ll_create": [_P, ctypes.POINTER(LLOptions), c_void_pp],
    "epx_ll_local_experts": [_P, c_int_p],
    "epx_ll_dispatch": [_P, _P, _P, _I, _I, _I, _I, _I, _P, _P, ctypes.POINTER(LLDispatchOut), c_void_pp],
    "epx_ll_combine": [_P, _P, _P, _P, ctypes.POINTER(LLHandle), _I, _I, _P, _P, c_void_pp, c_void_pp],
    "epx_ll_next_combine_buffer": [_P, ctypes.POINTER(LLHandle), c_void_pp],
    "epx_ll_clean": [_P],
    "epx_ll_check": [_P],
    "epx_ll_mask_rank": [_P, _U32],
    "epx_ll_region": [_P, _I, ctypes.POINTER(Region)],
    "epx_ll_masked_ranks": [_P, c_u32_p, ctypes.c_size_t, c_size_p],
    "epx_ll_hook_run": [_P],
    "epx_normal_size": [_I, _I, _I, _I, _I, ctypes.POINTER(ctypes.c_uint64)],
    "epx_normal_create": [_P, ctypes.POINTER(NormalOptions), c_void_pp],
    "epx_normal_ranks_per_node": [_P, c_int_p],
    "epx_normal_new_handle": [_P, c_void_pp],
    "epx_normal_handle_get": [_P, ctypes.POINTER(NormalHandleInfo)],
    "epx_normal_layout": [_P, _P, _I, _P, _P, _P, _P, _P],
    "epx_normal_dispatch": [_P, _P, ctypes.POINTER(NormalDispatchIn), _P, ctypes.POINTER(NormalDispatchOut), c_int_p,
                            c_int_p],
    "epx_normal_combine": [_P, _P, _P, _P, _P, _P, _P, _P, _I, _P, c_void_pp, c_void_pp],
    "epx_normal_check": [_P],
    "epx_normal_mask_rank": [_P, _U32],
    "epx_normal_region": [_P, _I, ctypes.POINTER(Region)],
}
_VOID_FUNCTIONS = ["epx_client_destroy", "epx_job_destroy", "epx_ll_destroy", "epx_ll_hook_destroy",
                   "epx_normal_destroy", "epx_normal_handle_destroy"]

_lock = threading.Lock()
_library: Optional[ctypes.CDLL] = None


def library_path() -> str:
    """Where the native library is taken from."""
    override = os.environ.get("EPX_LIBRARY")
    if override:
        return override
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib", "libepx_c.so")


def _preload_bundled(directory: str) -> None:
    """Loads the libraries tools/build-wheel.sh put beside libepx_c.so, in
    its load-order.txt (dependencies first), so that each finds the ones it
    needs already loaded from the wheel (by soname) rather than the system's."""
    order = os.path.join(directory, "load-order.txt")
    if not os.path.exists(order):
        return  # a library built in place: its dependencies are the system's
    with open(order) as f:
        names = [line.strip() for line in f if line.strip()]
    for name in names:
        try:
            ctypes.CDLL(os.path.join(directory, name), mode=ctypes.RTLD_GLOBAL)
        except OSError as e:
            raise EpxUnavailableError(f"cannot load {name}, bundled with libepx_c.so: {e}", "UNAVAILABLE") from e


def _load() -> ctypes.CDLL:
    path = library_path()
    if not os.environ.get("EPX_LIBRARY") and os.path.isdir(os.path.dirname(path)):
        _preload_bundled(os.path.dirname(path))
    if not os.path.exists(path):
        raise EpxUnavailableError(
            f"libepx_c.so not found at {path}: install the epx wheel (tools/build-wheel.sh) "
            "or set EPX_LIBRARY to a built bazel-bin/python/native/libepx_c.so", "NOT_FOUND")
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise EpxUnavailableError(f"cannot load {path}: {e}", "UNAVAILABLE") from e
    lib.epx_abi_version.restype = ctypes.c_int
    lib.epx_abi_version.argtypes = []
    version = lib.epx_abi_version()
    if version != ABI_VERSION:
        raise EpxError(f"{path} speaks C ABI version {version}; this package needs {ABI_VERSION}",
                       "FAILED_PRECONDITION")
    lib.epx_last_error.restype = ctypes.c_char_p
    lib.epx_last_error.argtypes = []
    for name, argtypes in _STATUS_FUNCTIONS.items():
        fn = getattr(lib, name)
        fn.restype = ctypes.c_int
        fn.argtypes = argtypes
    for name in _VOID_FUNCTIONS:
        fn = getattr(lib, name)
        fn.restype = None
        fn.argtypes = [_P]
    return lib


def lib() -> ctypes.CDLL:
    """The loaded library (loads it on the first call)."""
    global _library
    with _lock:
        if _library is None:
            _library = _load()
        return _library


def call(name: str, *args) -> None:
    """Calls a status-returning function; raises its EpxError when not OK."""
    library = lib()
    code = getattr(library, name)(*args)
    if code != 0:
        message = library.epx_last_error().decode("utf-8", "replace")
        raise error_from_status(code, message)


def destroy(name: str, handle: Optional[int]) -> None:
    """Calls one of the *_destroy functions when `handle` is set."""
    if handle:
        getattr(lib(), name)(handle)
