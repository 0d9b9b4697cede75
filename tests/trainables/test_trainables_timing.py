"""Per-phase timing: the timer's arithmetic by hand (a fake clock), and a real trial's books."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from seqablate import metric_names as mn
from seqablate import timing
from seqablate.timing import PhaseTimer, close_books

from .conftest import tiny_trial


class FakeClock:
    """A clock that moves only when told (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def test_nested_phases_are_counted_once_and_other_closes_the_sum() -> None:
    clock = FakeClock()
    timer = PhaseTimer(clock)
    with timer.phase("evaluation"):
        clock.tick(2.0)
        with timer.phase("bootstrap"):  # taken out of evaluation
            clock.tick(3.0)
        clock.tick(1.0)
        with timer.phase("logging"):
            clock.tick(0.5)
            with timer.phase("logging"):  # the same phase inside itself: booked once
                clock.tick(0.25)
    clock.tick(4.0)  # in no phase: other
    with pytest.raises(RuntimeError), timer.phase("steps"):
        clock.tick(1.5)
        raise RuntimeError("a failing step's time was still spent")
    timer.add("data", 0.75)  # measured elsewhere (the driver's patients)
    # evaluation: 2 + 3 + 1 + 0.75 = 6.75 s inside, less bootstrap 3 and logging 0.75 -> 3.
    assert timer.seconds() == {"bootstrap": 3.0, "logging": 0.75, "evaluation": 3.0, "steps": 1.5, "data": 0.75}
    phases = timer.close()
    assert list(phases) == [mn.time_key(p) for p in mn.TIME_PHASES]  # every phase, in order
    assert phases["time.startup"] == 0.0 and phases["time.evaluation"] == 3.0
    with timer.phase("steps"):  # closed: books nothing more
        clock.tick(10.0)
    assert timer.metrics() == phases
    # Wall time 6.75 + 4 + 1.5 s on this clock, plus the driver's 0.75 s of data: 13 s.
    books = close_books(phases, 13.0)
    assert books == {"time.other": 4.0, "time.total": 13.0}
    assert sum(phases.values()) + books["time.other"] == books["time.total"]


def test_close_books_ignores_other_metrics_and_never_books_negative_time() -> None:
    logged = {"time.steps": 5.0, "time.data": 2.0, "time.total": 99.0, "test.full.mAP": 0.5,
              "time.checkpoint": math.nan, "time.someday": 7.0}
    assert close_books(logged, 10.0) == {"time.other": 3.0, "time.total": 10.0}
    # Phases beyond the driver's total (clock skew between nodes): total becomes their sum.
    assert close_books(logged, 6.0) == {"time.other": 0.0, "time.total": 7.0}


def test_the_worker_books_the_time_before_it_and_a_restart_keeps_its_predecessors_phases() -> None:
    timer = PhaseTimer(FakeClock())
    # Driver started at wall 100 s, loaded patients for 2 s; this worker starts at 110 s.
    timer.start_worker({"origin": 100.0, "before": {"data": 2.0}}, now=110.0)
    assert timer.seconds() == {"data": 2.0, "startup": 8.0}
    # A checkpoint of another driver (a resumed run) is not this run's time.
    timer.resume({"origin": 50.0, "seconds": {"steps": 30.0}})
    assert timer.seconds() == {"data": 2.0, "startup": 8.0}
    # The previous worker of this driver: 1 s start-up, the driver's 2 s of data, 5 s of steps;
    # those 6 s of its own were in this worker's 8 s of start-up.
    timer.resume({"origin": 100.0, "seconds": {"startup": 1.0, "data": 2.0, "steps": 5.0}})
    assert timer.seconds() == {"data": 2.0, "startup": 3.0, "steps": 5.0}
    assert sum(timer.seconds().values()) == 10.0  # still the 10 s since the driver started
    skewed = PhaseTimer(FakeClock())
    skewed.start_worker({"origin": 100.0}, now=99.0)  # a worker clock behind the driver's
    assert skewed.seconds() == {"startup": 0.0}
    PhaseTimer().start_worker(None)  # no driver start (an older config): nothing booked


def test_module_phase_books_to_the_active_timer_only() -> None:
    clock = FakeClock()
    timer = PhaseTimer(clock)
    with timing.phase("bootstrap"):  # no active timer: books nothing anywhere
        clock.tick(1.0)
    with timer.active(), timer.phase("evaluation"):
        clock.tick(1.0)
        with timing.phase("bootstrap"):
            clock.tick(2.0)
    with timing.phase("bootstrap"):  # deactivated again
        clock.tick(1.0)
    assert timer.seconds() == {"bootstrap": 2.0, "evaluation": 1.0}
    with pytest.raises(ValueError, match="unknown timing phase 'bootstrp'"):
        timing.phase("bootstrp")
    with pytest.raises(ValueError, match="unknown time phase"):
        mn.time_key("lunch")
    assert mn.parse_time_key(mn.time_key("norm_stats")) == "norm_stats"
    assert mn.parse_time_key("time.total") == "total" and mn.parse_time_key("test.full.mAP") is None


def test_a_trial_logs_every_phase_summing_to_its_total(cohorts: dict[str, Path], tmp_path: Path) -> None:
    from seqablate import tracking
    from seqablate.config import TrialConfig, parse
    from seqablate.trainables.loop import fit_trial

    raw = tiny_trial(cohorts["stanford"], steps=4)
    raw["model"]["backbone"] = "tiny"
    raw["eval"].update(norm_batches=2, norm_batch_size=4)
    cfg = parse(TrialConfig, raw)
    with tracking.study_run("timing", storage=str(tmp_path / "study")) as study:
        with tracking.trial_run(study.ref, cfg, run_name="t") as log:
            res = fit_trial(cfg, storage=tmp_path / "ckpt", cpus=1, use_gpu=False,
                            tracking={"tracking_uri": study.ref.tracking_uri, "run_id": log.run_id})
    logged = tracking.run_info(log.run_id, tracking_uri=study.ref.tracking_uri).data.metrics
    times = {k: v for k, v in logged.items() if k.startswith("time.")}
    keys = {mn.time_key(p) for p in (*mn.TIME_PHASES, mn.TIME_OTHER, mn.TIME_TOTAL)}
    assert set(times) == keys
    assert all(v >= 0.0 for v in times.values()), times
    total = times.pop("time.total")
    assert sum(times.values()) == pytest.approx(total, abs=1e-6)
    # This trial stepped, validated, took saliency, statistics (BatchNorm), checkpointed, evaluated.
    for phase in ("steps", "saliency", "validation", "norm_stats", "checkpoint", "evaluation", "logging"):
        assert times[f"time.{phase}"] > 0.0, phase
    assert res.timing == pytest.approx({**times, "time.total": total})  # what fit_trial returns
    # The worker's final report carries its phases (what Tune sees of them).
    final = res.history[-1]
    assert "evaluated" in final and all(final[mn.time_key(p)] == times[mn.time_key(p)] for p in mn.TIME_PHASES)
    # The checkpoint keeps the phases for a worker restarted under the same driver.
    assert res.state.timing["origin"] is not None and res.state.timing["seconds"]["steps"] > 0.0
