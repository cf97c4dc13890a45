"""EPX from Python: a connection to the node's epxd (Client), a rank of a
job (Job), the error types. `deep_ep` (the sibling package) builds DeepEP's
Buffer on these."""

from .bootstrap import join_group
from .client import DEFAULT_SOCKET, Client, DaemonInfo, Job, default_socket, gpu_pci_address
from .errors import (EpxError, EpxFailedPreconditionError, EpxInternalError, EpxInvalidArgumentError,
                     EpxPermissionError, EpxRankLostError, EpxResourceExhaustedError, EpxTimeoutError,
                     EpxUnavailableError)
from .low_latency import LowLatencyBuffer

__all__ = [
    "Client", "DaemonInfo", "Job", "LowLatencyBuffer", "DEFAULT_SOCKET", "default_socket", "gpu_pci_address",
    "join_group",
    "EpxError", "EpxFailedPreconditionError", "EpxInternalError", "EpxInvalidArgumentError", "EpxPermissionError",
    "EpxRankLostError", "EpxResourceExhaustedError", "EpxTimeoutError", "EpxUnavailableError",
]
