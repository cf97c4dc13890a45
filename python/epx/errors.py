"""EpxError and its subclasses: one per kind of failure a caller handles.

Every error carries the status code name (``code``) and the SDK's or the
daemon's message, which names what failed: the socket no daemon answers on,
the rank that was lost, what a timeout waited for, the argument that is bad.
"""

from typing import Dict, Type


class EpxError(RuntimeError):
    """Any EPX failure. ``code`` is the gRPC-style status name."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class EpxUnavailableError(EpxError):
    """No daemon answers (UNAVAILABLE), or a peer or rank went away."""


class EpxTimeoutError(EpxError, TimeoutError):
    """A wait ran out (DEADLINE_EXCEEDED); the message names what it waited for."""


class EpxInvalidArgumentError(EpxError, ValueError):
    """A bad argument (INVALID_ARGUMENT, OUT_OF_RANGE); the message names it and why."""


class EpxRankLostError(EpxError):
    """A rank of the job left or was lost (ABORTED); the message names it."""


class EpxFailedPreconditionError(EpxError):
    """The call cannot run in the current state (FAILED_PRECONDITION, ALREADY_EXISTS)."""


class EpxResourceExhaustedError(EpxError):
    """A limit of the daemon or the GPU was reached (RESOURCE_EXHAUSTED)."""


class EpxPermissionError(EpxError, PermissionError):
    """The daemon refused the caller (PERMISSION_DENIED, UNAUTHENTICATED)."""


class EpxInternalError(EpxError):
    """A fault inside EPX or CUDA (INTERNAL, UNKNOWN, DATA_LOSS, ...)."""


# gRPC's canonical codes, as epx::StatusCode and epx_c.h number them.
CODE_NAMES: Dict[int, str] = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNSUPPORTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}

_CLASS_OF_CODE: Dict[int, Type[EpxError]] = {
    3: EpxInvalidArgumentError,
    4: EpxTimeoutError,
    5: EpxInvalidArgumentError,
    6: EpxFailedPreconditionError,
    7: EpxPermissionError,
    8: EpxResourceExhaustedError,
    9: EpxFailedPreconditionError,
    10: EpxRankLostError,
    11: EpxInvalidArgumentError,
    14: EpxUnavailableError,
    16: EpxPermissionError,
}


def error_from_status(code: int, message: str) -> EpxError:
    """The exception for a non-OK status code of libepx_c."""
    cls = _CLASS_OF_CODE.get(code, EpxInternalError)
    return cls(message, CODE_NAMES.get(code, f"CODE_{code}"))
