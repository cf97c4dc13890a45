"""Client (a connection to the node's epxd) and Job (a rank held in a job):
thin owners of the native handles, freed in order (a job before its client)."""

import ctypes
import os
from typing import List, NamedTuple, Optional

from . import _native

# epxd's default control socket (daemon/config/config.cc).
DEFAULT_SOCKET = "/run/epx/epxd.sock"


def default_socket() -> str:
    """EPX_SOCKET when set, else the daemon's default socket path."""
    return os.environ.get("EPX_SOCKET") or DEFAULT_SOCKET


def gpu_pci_address(device: int) -> str:
    """CUDA device `device`'s PCI address ("0000:19:00.0"); raises an
    EpxError when CUDA has no such device."""
    out = ctypes.create_string_buffer(64)
    _native.call("epx_gpu_pci_address", int(device), out, len(out))
    return out.value.decode()


class DaemonInfo(NamedTuple):
    node: str
    peer_address: str


class Client:
    """A session with the local epxd. Raises EpxUnavailableError naming the
    socket when no daemon answers there."""

    def __init__(self, socket_path: Optional[str] = None, name: str = "", rpc_timeout_ms: int = 0) -> None:
        self.socket_path = socket_path or default_socket()
        handle = ctypes.c_void_p()
        _native.call("epx_client_connect", self.socket_path.encode(), name.encode(), int(rpc_timeout_ms),
                     ctypes.byref(handle))
        self._handle: Optional[int] = handle.value

    @property
    def handle(self) -> int:
        if not self._handle:
            from .errors import EpxFailedPreconditionError
            raise EpxFailedPreconditionError(f"client of {self.socket_path} is closed", "FAILED_PRECONDITION")
        return self._handle

    def daemon_info(self) -> DaemonInfo:
        node = ctypes.create_string_buffer(1024)
        peer = ctypes.create_string_buffer(1024)
        _native.call("epx_client_daemon_info", self.handle, node, len(node), peer, len(peer))
        return DaemonInfo(node.value.decode(), peer.value.decode())

    def join(self, job_id: str, world_size: int, rank: int, local_rank: int = 0, coordinator: str = "",
             timeout_ms: int = 60000, gpu_pci_address: str = "") -> "Job":
        """gpu_pci_address: the rank's GPU (gpu_pci_address(device)), so the
        daemon serves it from the NICs nearest that GPU; "": every NIC."""
        handle = ctypes.c_void_p()
        _native.call("epx_client_join", self.handle, job_id.encode(), int(world_size), int(rank), int(local_rank),
                     coordinator.encode(), int(timeout_ms), gpu_pci_address.encode(), ctypes.byref(handle))
        return Job(self, handle.value, job_id, int(world_size), int(rank), int(local_rank))

    def close(self) -> None:
        handle, self._handle = self._handle, None
        _native.destroy("epx_client_destroy", handle)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone
            pass


class Job:
    """A rank held in a job; leaves it when closed. Keeps its Client alive."""

    def __init__(self, client: Client, handle: int, job_id: str, world_size: int, rank: int, local_rank: int):
        self.client = client
        self._handle: Optional[int] = handle
        self.job_id = job_id
        self.world_size = world_size
        self.rank = rank
        self.local_rank = local_rank
        self._nodes: Optional[List[int]] = None

    @property
    def handle(self) -> int:
        if not self._handle:
            from .errors import EpxFailedPreconditionError
            raise EpxFailedPreconditionError(f"rank {self.rank} of job {self.job_id} has left", "FAILED_PRECONDITION")
        return self._handle

    def barrier(self, timeout_ms: int = 60000) -> None:
        _native.call("epx_job_barrier", self.handle, int(timeout_ms))

    def lost_ranks(self) -> List[int]:
        ranks = (ctypes.c_uint32 * self.world_size)()
        count = ctypes.c_size_t()
        _native.call("epx_job_lost_ranks", self.handle, ranks, self.world_size, ctypes.byref(count))
        return [ranks[i] for i in range(min(count.value, self.world_size))]

    def node_of_rank(self) -> List[int]:
        """Each rank's node index (its daemon), nodes numbered in the order of
        their first rank: rank 0's node is 0. From the job's rank table."""
        if self._nodes is None:
            nodes = (ctypes.c_uint32 * self.world_size)()
            count = ctypes.c_size_t()
            _native.call("epx_job_nodes", self.handle, nodes, self.world_size, ctypes.byref(count))
            self._nodes = [nodes[i] for i in range(min(count.value, self.world_size))]
        return list(self._nodes)

    def leave(self) -> None:
        handle, self._handle = self._handle, None
        _native.destroy("epx_job_destroy", handle)

    def __del__(self) -> None:
        try:
            self.leave()
        except Exception:
            pass
