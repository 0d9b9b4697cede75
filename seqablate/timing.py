"""Where a trial's time goes: wall-clock seconds per phase, booked by one timer per worker.

Every second of a trial is booked to exactly one phase of
:data:`seqablate.metric_names.TIME_PHASES` (logged as ``time.<phase>``), or to ``other``; the
phases and ``other`` sum to ``time.total``, the trial driver's start to its end. What each phase
holds (:func:`seqablate.trainables.loop.train_loop_per_worker` opens them):

- ``startup``: the driver's start to the first optimiser step, less the phases inside it: the
  MLflow run, the Ray Train worker group, the config, the model build, the restore. A worker
  that Ray Train restarts within the same driver keeps the phases booked up to its checkpoint
  and books the time from that checkpoint to its restart (lost steps, the new worker group) here;
- ``data``: loading (and caching) the trial's patients, external cohorts included;
- ``batches``: the training batch pipeline: building it and drawing every batch;
- ``steps``: inside the optimiser steps (forward, loss, backward, update);
- ``saliency``, ``validation``, ``norm_stats`` (per-subset BatchNorm statistics, also those a
  validation estimates), ``evaluation`` (test and external inference and metrics),
  ``bootstrap`` (its confidence intervals), ``checkpoint`` (writing and reporting one);
- ``logging``: MLflow calls (metrics, artifacts, the model) and writing the artifacts.

**Nesting.** A phase opened inside another is taken out of the outer one (exclusive time), so
no second is counted twice: bootstrap inside evaluation, logging inside checkpoint, norm_stats
inside validation. The same phase opened inside itself books the inner time once.

**The active timer.** Code deep in a call tree (the bootstrap of
:func:`~seqablate.evaluation.evaluate.score_detections`, validation's statistics) books its time
with the module-level :func:`phase`, which uses the timer the training loop activated in this
context (a :class:`contextvars.ContextVar`, so other threads and trials in the process never
see it) and does nothing without one (``seqablate evaluate``, tests): no timer is threaded
through signatures that have nothing to do with it.

**Clocks.** Durations are :func:`time.perf_counter` differences (monotonic, the highest
resolution). One point crosses processes: the trial driver's start, taken before the Ray Train
worker group exists. The driver passes its start as :func:`time.time` (wall clock, the only
clock two processes share) in the worker config; the worker books ``time.time()`` minus it as
start-up. On one node the two readings share a clock; across nodes they rely on NTP, and a skew
moves seconds between ``startup`` and ``other`` without changing ``total``, which the driver
measures on its own monotonic clock (where a skew would make the phases exceed it, ``total`` is
raised to their sum and ``other`` is 0). On a GPU, kernels a phase queued finish in the next
phase that waits for them (at most one optimiser update per phase change): no phase
synchronises the device, so timing never slows training.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from seqablate import metric_names as mn

STARTUP = "startup"

_ACTIVE: contextvars.ContextVar[PhaseTimer | None] = contextvars.ContextVar("seqablate_phase_timer", default=None)


class _Open:
    """A phase being timed, and the seconds of the phases opened inside it (compared by
    identity: two open frames of one phase are different frames)."""

    __slots__ = ("name", "nested")

    def __init__(self, name: str) -> None:
        self.name, self.nested = name, 0.0


def _check(name: str) -> str:
    if name not in mn.TIME_PHASES:
        raise ValueError(f"unknown timing phase {name!r}; phases: {list(mn.TIME_PHASES)}")
    return name


class PhaseTimer:
    """Seconds per phase of one worker (see the module docstring).

    ``clock`` returns seconds (default :func:`time.perf_counter`; tests pass a fake one).
    ``origin`` is the trial driver's start on the wall clock, set by :meth:`start_worker`.
    Not thread-safe: one timer per worker, used from the thread that trains.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._seconds: dict[str, float] = {}
        self._open: list[_Open] = []  # innermost last
        self.origin: float | None = None
        self._before: dict[str, float] = {}
        self._closed = False

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Book the time inside the block to ``name``, less the phases opened inside it.

        The time is booked when the block raises too (it was spent). Raises ValueError for a
        name not in :data:`~seqablate.metric_names.TIME_PHASES`.
        """
        _check(name)
        frame = _Open(name)
        self._open.append(frame)
        start = self._clock()
        try:
            yield
        finally:
            elapsed = self._clock() - start
            self._open.remove(frame)  # the last one, as blocks nest
            self.add(name, elapsed - frame.nested)
            if self._open:
                self._open[-1].nested += elapsed  # taken out of the enclosing phase

    def add(self, name: str, seconds: float) -> None:
        """Book ``seconds`` measured elsewhere to ``name`` (taken out of no open phase).
        Nothing is booked once the timer is closed (:meth:`close`)."""
        _check(name)
        if not self._closed:
            self._seconds[name] = self._seconds.get(name, 0.0) + float(seconds)

    def close(self) -> dict[str, float]:
        """Stop booking and return :meth:`metrics`: what the worker logs is final, and the time
        after it (the last report, the last flush) is the driver's ``other``."""
        self._closed = True
        return self.metrics()

    def seconds(self) -> dict[str, float]:
        """Seconds booked per phase so far (blocks still open are not in it yet)."""
        return dict(self._seconds)

    def metrics(self) -> dict[str, float]:
        """``time.<phase>`` of every phase in :data:`~seqablate.metric_names.TIME_PHASES`
        order (0 for a phase never entered); ``other`` and ``total`` are the driver's
        (:func:`close_books`)."""
        return {mn.time_key(p): self._seconds.get(p, 0.0) for p in mn.TIME_PHASES}

    @contextlib.contextmanager
    def active(self) -> Iterator[PhaseTimer]:
        """Make this the timer :func:`phase` books to, in this context, for the block."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    # ---- across the driver/worker boundary ----
    def start_worker(self, timing: Mapping[str, Any] | None, *, now: float | None = None) -> None:
        """Book what happened before this worker ran: ``timing`` is :meth:`DriverClock.for_worker`'s
        dict (``origin``: the driver's start, wall clock; ``before``: phases the driver booked
        before the worker, e.g. the patients a local run loads to plan its split). The rest of
        the wall time since ``origin`` is ``startup`` (never negative: a skewed clock books 0).
        ``now``: the wall clock now (default :func:`time.time`). None: nothing to book."""
        if not timing or timing.get("origin") is None:
            return
        self.origin = float(timing["origin"])
        self._before = {_check(k): float(v) for k, v in (timing.get("before") or {}).items()}
        waited = max(0.0, (time.time() if now is None else now) - self.origin)
        for name, s in self._before.items():
            self.add(name, s)
        self.add(STARTUP, max(0.0, waited - sum(self._before.values())))

    def snapshot(self) -> dict[str, Any]:
        """What a checkpoint keeps (JSON): the driver start and the seconds booked so far."""
        return {"origin": self.origin, "seconds": self.seconds()}

    def resume(self, snapshot: Mapping[str, Any] | None) -> None:
        """Take over the phases of the worker that wrote a checkpoint, when it ran under the same
        driver (same ``origin``): their seconds were booked as this worker's start-up, so they
        move from ``startup`` to their phases. A checkpoint of another driver (a resumed study
        or ``seqablate train`` rerun) is not this run's time: ignored."""
        if not snapshot or self.origin is None or snapshot.get("origin") != self.origin:
            return
        # The driver's own phases (before) were booked by this worker already.
        moved = {k: max(0.0, float(v) - self._before.get(k, 0.0)) for k, v in (snapshot.get("seconds") or {}).items()
                 if k in mn.TIME_PHASES}
        for name, s in moved.items():
            self.add(name, s)
        # startup = what this worker booked + the checkpoint's startup - everything moved
        self._seconds[STARTUP] = max(0.0, self._seconds.get(STARTUP, 0.0) - sum(moved.values()))


def phase(name: str) -> contextlib.AbstractContextManager[None]:
    """The active timer's :meth:`PhaseTimer.phase` (``with timing.phase("bootstrap"): ...``), or
    a block that books nothing when no timer is active. Raises ValueError for an unknown name
    either way (a typo never goes unnoticed)."""
    _check(name)
    timer = _ACTIVE.get()
    return timer.phase(name) if timer is not None else contextlib.nullcontext()


def close_books(logged: Mapping[str, float], total: float) -> dict[str, float]:
    """``time.other`` and ``time.total`` of a trial, from its ``time.<phase>`` metrics
    (``logged``: any metrics; phases absent count 0, other keys are ignored) and the driver's
    wall time ``total`` (seconds): ``other = total - sum(phases)``, so the phases and other
    sum to total (to float rounding). Where the phases exceed ``total`` (clock skew between
    nodes, see the module docstring) ``total`` is raised to their sum and ``other`` is 0.
    NaN phases count 0."""
    booked = sum(float(v) for k, v in logged.items()
                 if mn.parse_time_key(k) in mn.TIME_PHASES and not math.isnan(float(v)))
    total = max(float(total), booked)
    return {mn.time_key(mn.TIME_OTHER): total - booked, mn.time_key(mn.TIME_TOTAL): total}


@dataclass(frozen=True)
class DriverClock:
    """The trial driver's start: on the wall clock (what its workers compare with) and on its
    own monotonic clock (what ``time.total`` is measured with)."""

    wall: float  # time.time() at the start, seconds since the epoch
    mono: float  # time.perf_counter() at the same moment; meaningful in this process only

    @classmethod
    def start(cls) -> DriverClock:
        return cls(time.time(), time.perf_counter())

    def elapsed(self) -> float:
        """Seconds since the start (monotonic)."""
        return time.perf_counter() - self.mono

    def for_worker(self, before: Mapping[str, float] | None = None) -> dict[str, Any]:
        """The worker config's timing entry (:meth:`PhaseTimer.start_worker`): JSON-able."""
        return {"origin": self.wall, "before": {_check(k): float(v) for k, v in (before or {}).items()}}


class Timed:
    """``target`` with every method call booked to ``name`` of ``timer`` (the MLflow logger:
    each of its calls is logging, wherever the loop makes it). Other attributes pass through."""

    def __init__(self, target: Any, timer: PhaseTimer, name: str) -> None:
        self._target, self._timer, self._name = target, timer, _check(name)

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._target, attr)
        if not callable(value):
            return value

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._timer.phase(self._name):
                return value(*args, **kwargs)

        return call
