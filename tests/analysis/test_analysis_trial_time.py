"""The report's trial-time section: a stacked bar per trial and the study's seconds per phase;
a study whose runs logged no time gets a note and no figure."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqablate.analysis.report import TIME_PNG, write_report

# Two timed trials (phases not logged count 0) and one of an older seqablate (no time.*).
TIMED = {
    0: {"startup": 10.0, "data": 5.0, "steps": 20.0, "validation": 5.0, "evaluation": 5.0, "bootstrap": 1.0,
        "logging": 2.0, "other": 2.0, "total": 50.0},
    1: {"startup": 10.0, "data": 5.0, "steps": 40.0, "validation": 5.0, "evaluation": 6.0, "bootstrap": 1.0,
        "logging": 1.0, "other": 2.0, "total": 70.0},
    2: None,
}


@pytest.fixture(scope="module")
def timed_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from seqablate import tracking
    from seqablate.config import TrialConfig, with_overrides

    root = tmp_path_factory.mktemp("timed")
    with tracking.study_run("timed", storage=str(root), space="toy grid") as study:
        for seed, seconds in TIMED.items():
            overrides = {"model.integration": "input", "train.seed": seed}
            cfg = with_overrides(TrialConfig(), overrides)
            with tracking.trial_run(study.ref, cfg, overrides=overrides, study_name="timed") as log:
                metrics = {"test.full.mAP": 0.4 + 0.01 * seed, "val.best_objective": 0.4}
                metrics.update({f"time.{k}": v for k, v in (seconds or {}).items()})
                log.log_metrics(metrics, step=30)
    return root


def test_report_shows_each_trials_phases_and_the_studys_totals(timed_study: Path, tmp_path: Path) -> None:
    from seqablate.analysis.runs import timing_summary
    from seqablate.analysis.study import load_study

    res = write_report(str(timed_study), out=tmp_path / "r", formats=("md",), progress=False, overlays=False,
                       log=False)
    assert (res.out / "figures" / TIME_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (res.out / "report.md").read_text()
    assert f"](figures/{TIME_PNG})" in md
    # Sums over the two timed trials by hand: steps 20 + 40 = 60 of 120 s, median trial 30 s.
    assert "| steps | 60.00 | 50.0 % | 30.00 |" in md
    assert "| bootstrap | 2.00 | 1.7 % | 1.00 |" in md
    assert "| checkpoint | 0.00 | 0.0 % | 0.00 |" in md  # not logged: 0
    assert "| total | 120.00 | 100.0 % | 60.00 |" in md
    assert "summed over its 2 timed trials" in md  # the untimed run is left out
    table = timing_summary(load_study(str(timed_study)).runs).set_index("phase")
    assert table["seconds"].drop("total").sum() == pytest.approx(table.loc["total", "seconds"])
    assert table.loc["total", "share"] == 1.0 and table.loc["steps", "runs"] == 2


def test_report_of_a_study_without_time_metrics_has_no_timeline(toy_study: Path, tmp_path: Path) -> None:
    res = write_report(str(toy_study), out=tmp_path / "r", formats=("md",), progress=False, overlays=False,
                       log=False)
    assert not (res.out / "figures" / TIME_PNG).exists()
    md = (res.out / "report.md").read_text()
    assert "## Trial time" in md and "No finished run logged its time per phase" in md
