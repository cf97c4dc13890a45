"""deep_ep.EventOverlap: a CUDA event recorded after EPX enqueued a call
(async_finish=True, Buffer.capture()), and the tensors to keep alive until
the current stream waited for it. EPX enqueues on the caller's stream, so
without async_finish there is no event (event is None)."""

from typing import Any, Optional, Tuple


class EventOverlap:
    def __init__(self, event: Optional[Any] = None, extra_tensors: Optional[Tuple[Any, ...]] = None) -> None:
        self.event = event
        self.extra_tensors = extra_tensors

    def current_stream_wait(self) -> None:
        """Makes the current stream wait for the event."""
        if self.event is None:
            raise RuntimeError("EventOverlap.current_stream_wait: no event (the call ran with async_finish=False)")
        import torch
        torch.cuda.current_stream().wait_event(self.event)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        if self.event is not None:
            self.current_stream_wait()


def record_on_current_stream() -> Any:
    """A torch.cuda.Event recorded on the current stream."""
    import torch
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream())
    return event
