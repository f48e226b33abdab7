"""Timing a span of device work without making the step wait for it (torch only).

:class:`DeviceTimer` starts when built and stops at :meth:`~DeviceTimer.stop`. On a CUDA
device it records two CUDA events on the current stream, so neither call synchronises the
host; the elapsed time is read (``float(timer)``) later, e.g. after the training step, when
the work has finished anyway. On other devices it uses ``time.perf_counter`` (the work is
synchronous). Both the 2D model (``time/criterion_forward``) and the 3D detectors
(``criterion_time``) time their criterion with it.
"""
import time
from typing import Optional

import torch

__all__ = ["DeviceTimer"]


class DeviceTimer:
    """Wall time in seconds of the device work between construction and :meth:`stop`.

    Args:
        device: where the timed work runs (``torch.device`` or string); CUDA events on CUDA,
            ``perf_counter`` elsewhere.

    ``float(timer)`` (or :meth:`item`) gives the seconds; on CUDA it waits for the stop event
    the first time (so read it after the step). :meth:`numel` / :meth:`item` let mmengine's
    ``MessageHub`` log a timer like a one-element tensor.
    """

    def __init__(self, device):
        device = torch.device(device)
        self._seconds: Optional[float] = None
        self._stopped = False
        if device.type == "cuda":
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self._events[0].record()
        else:
            self._events = None
            self._start = time.perf_counter()

    def stop(self) -> "DeviceTimer":
        """End of the timed span (no host synchronisation); returns the timer."""
        if self._stopped:
            raise RuntimeError("DeviceTimer.stop() called twice")
        self._stopped = True
        if self._events is None:
            self._seconds = time.perf_counter() - self._start
        else:
            self._events[1].record()
        return self

    def __float__(self) -> float:
        if not self._stopped:
            raise RuntimeError("DeviceTimer read before stop()")
        if self._seconds is None:
            self._events[1].synchronize()
            self._seconds = self._events[0].elapsed_time(self._events[1]) / 1000.0
        return self._seconds

    def item(self) -> float:
        return float(self)

    @staticmethod
    def numel() -> int:
        return 1

    def __repr__(self) -> str:
        state = "running" if not self._stopped else ("pending" if self._seconds is None else f"{self._seconds:.6f} s")
        return f"DeviceTimer({'cuda' if self._events is not None else 'cpu'}, {state})"
