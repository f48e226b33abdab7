"""Training-time schedules for criterion hyper-parameters (the transport temperature ``epsilon``,
the auxiliary layers' instance capacity ``aux_capacity``).

The entropic plan of the ``ot`` criterion is soft for a large ``epsilon`` (every query shares every
instance a little: smooth, stable gradients early on) and tends to the one-to-one assignment as
``epsilon`` -> 0.  :class:`EpsilonSchedule` maps training progress to ``epsilon`` so that a loop
can start soft and finish sharp; :class:`CapacitySchedule` likewise takes ``aux_capacity`` from
one-to-many supervision of the intermediate layers (extra positives early) down to one-to-one.
The 2D trainer (detectron2 hooks) and the 3D plugin (mmengine hooks) call them and assign the
criterion's attribute.  Pure Python: no tensors, no host sync.
"""
from __future__ import annotations

import math

__all__ = ["Schedule", "EpsilonSchedule", "CapacitySchedule", "SCHEDULE_KINDS"]

SCHEDULE_KINDS = ("constant", "linear", "cosine", "exp")


class Schedule:
    """``value(iteration)`` from ``start`` to ``end`` over ``[warmup, max_iter]``.

    Args:
        start (float): value up to ``warmup`` (above ``minimum``).
        end (float): value at ``max_iter`` and after (above ``minimum``); ignored for
            ``kind='constant'``.
        max_iter (int): iteration at which ``end`` is reached (> 0).
        kind (str): ``constant`` (always ``start``), ``linear``, ``cosine`` (half cosine) or
            ``exp`` (geometric: constant ratio per iteration, the natural choice for a
            temperature).
        warmup (int): iterations held at ``start`` before the decay begins.
    """

    name = "value"
    minimum = 0.0  # the values must stay above it (or reach it, with ``minimum_inclusive``)
    minimum_inclusive = False

    def __init__(self, start: float, end: float, max_iter: int, kind: str = "cosine", warmup: int = 0):
        if kind not in SCHEDULE_KINDS:
            raise ValueError(f"{self.name} schedule kind {kind!r}: choose one of {SCHEDULE_KINDS}")

        def ok(v):
            return math.isfinite(v) and (v >= self.minimum if self.minimum_inclusive else v > self.minimum)
        if not (ok(start) and (kind == "constant" or ok(end))):
            bound = f">= {self.minimum:g}" if self.minimum_inclusive else f"> {self.minimum:g}"
            raise ValueError(f"{self.name} must stay {bound}, got start={start}, end={end}")
        if max_iter <= 0 or warmup < 0 or warmup > max_iter:
            raise ValueError(f"need 0 <= warmup <= max_iter and max_iter > 0, got warmup={warmup}, "
                             f"max_iter={max_iter}")
        self.start, self.end = float(start), float(end)
        self.max_iter, self.kind, self.warmup = int(max_iter), kind, int(warmup)

    def progress(self, iteration: int) -> float:
        """Fraction of the decay done at ``iteration``, clipped to [0, 1]."""
        span = self.max_iter - self.warmup
        if span <= 0:
            return 1.0 if iteration >= self.max_iter else 0.0
        return min(max((iteration - self.warmup) / span, 0.0), 1.0)

    def __call__(self, iteration: int) -> float:
        if self.kind == "constant":
            return self.start
        t = self.progress(iteration)
        if self.kind == "linear":
            return self.start + (self.end - self.start) * t
        if self.kind == "cosine":
            return self.end + 0.5 * (self.start - self.end) * (1.0 + math.cos(math.pi * t))
        return self.start * (self.end / self.start) ** t  # exp

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(start={self.start}, end={self.end}, max_iter={self.max_iter}, "
                f"kind={self.kind!r}, warmup={self.warmup})")


class EpsilonSchedule(Schedule):
    """The transport temperature ``epsilon`` (> 0): soft early, near one-to-one at the end."""

    name = "epsilon"


class CapacitySchedule(Schedule):
    """``aux_capacity`` (>= 1) of the auxiliary layers: several queries per instance early,
    annealed to one-to-one (``end=1``) so that the intermediate layers end as the final one."""

    name = "aux_capacity"
    minimum = 1.0
    minimum_inclusive = True
