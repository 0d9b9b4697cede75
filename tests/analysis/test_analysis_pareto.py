"""The Pareto front of a multi-objective study: placed on the validation objectives at each
trial's selected checkpoint, reported with the test numbers of the same objectives (recipe
interval from 3 seeds, else the networks'), drawn, and tagged in MLflow."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from seqablate.analysis.pareto import (
    PARETO_PNG,
    compute_front,
    front_table,
    objective_on_test,
    paper_mark,
    pareto_blocks,
)
from seqablate.analysis.runs import Run
from seqablate.metrics import DetectionResult, PatientDetection
from tests._detections import cohort

FULL, CENSOR = "full", "censor_t1_gre_post"
OBJECTIVES = "full; worst"






class _Detections:
    """Stands in for StudyDetections: each run's per-patient detections by logged prefix."""

    def __init__(self) -> None:
        self.by_run: dict[str, dict[str, list[PatientDetection]]] = {}

    def get(self, run: Run) -> dict[str, list[PatientDetection]]:
        return self.by_run.get(run.run_id, {})


def _run(run_id: str, dropout: str, seed: int, selected: tuple[float, ...], detections: _Detections,
         *, status: str = "FINISHED", objectives: str = OBJECTIVES) -> Run:
    full, censored = cohort(np.random.default_rng(100 + len(detections.by_run)), 8, 0.8), cohort(np.random.default_rng(200 + len(detections.by_run)), 8, 0.4)
    detections.by_run[run_id] = {"test.full": full, f"test.{CENSOR}": censored}
    metrics = {f"val.selected_objective.{i}": v for i, v in enumerate(selected, start=1)}
    metrics |= {"test.full.mAP": DetectionResult.from_patients(full).mAP,
                f"test.{CENSOR}.mAP": DetectionResult.from_patients(censored).mAP}
    params = {"model.integration": "input", "train.dropout_p": dropout, "train.seed": str(seed),
              "train.objectives": objectives, "train.objective": "full", "train.val_conditions": f"full,{CENSOR}"}
    return Run(run_id, f"{run_id}-seed{seed}", status, params, {}, metrics if status == "FINISHED" else {})


@pytest.fixture
def study() -> tuple[list[Run], _Detections]:
    d = _Detections()
    runs = [
        *[_run(f"a{s}", "0.0", s, v, d) for s, v in enumerate([(0.60, 0.10), (0.62, 0.12), (0.58, 0.08)])],
        _run("b", "0.25", 0, (0.50, 0.40), d),
        _run("c", "flair=0.3", 0, (0.50, 0.40), d),  # b's point again: both on the front
        _run("d", "flair=0.1", 0, (0.45, 0.35), d),  # b does better on both
        _run("e", "flair=0.5", 0, (0.70,), d),  # objective 2 missing: left out, named
        _run("f", "flair=0.6", 0, (0.90, 0.90), d, status="FAILED"),  # not finished: not placed
    ]
    return runs, d


def test_the_front_by_hand_and_its_tags(study: tuple[list[Run], _Detections]) -> None:
    runs, _ = study
    front = compute_front(runs)
    assert front is not None and front.objectives == ["full", "worst"] and front.val_conditions == [FULL, CENSOR]
    assert front.labels == ["1: full", "2: worst"]
    assert front.definitions[1] == f"worst (lowest) validation mAP over full, {CENSOR}"
    placed = {p.runs[0].run_id[0]: p for p in front.points}
    assert set(placed) == {"a", "b", "c", "d"}
    assert placed["a"].values == pytest.approx((0.60, 0.10)) and len(placed["a"].runs) == 3  # seed mean
    assert {k for k, p in placed.items() if p.on_front} == {"a", "b", "c"}
    assert len(front.left_out) == 1 and "val.selected_objective.2" in front.left_out[0]
    assert front.tags() == {**{f"a{s}": {"pareto": "true"} for s in range(3)}, "b": {"pareto": "true"},
                            "c": {"pareto": "true"}, "d": {"pareto": "false"}}
    # The paper's dropout settings: no dropout and p = 0.25 everywhere (as a number or a mapping).
    assert paper_mark(placed["a"].group) == "paper: no dropout"
    assert paper_mark(placed["b"].group) == "paper: p = 0.25"
    assert paper_mark(placed["c"].group) is None
    # A study without several objectives has no front.
    single = [Run(r.run_id, r.name, r.status, {**r.params, "train.objectives": ""}, {}, r.metrics) for r in runs]
    assert compute_front(single) is None


def _cell(text: str) -> tuple[float, float, float]:
    """(estimate, lo, hi) of a table cell; a worst case's cell is the bias-corrected estimate,
    and its note gives the plain seed mean of the minima: that one is returned as the estimate
    (what the tests compute by hand), after checking the correction is what the note says."""
    m = re.fullmatch(r"(-?[\d.]+) \((-?[\d.]+), (-?[\d.]+)\)"
                     r"(?: \[bias-corrected: ([+-][\d.]+) points on the seed mean of the minima (-?[\d.]+)\])?", text)
    assert m, text
    if m[4] is None:
        return float(m[1]), float(m[2]), float(m[3])
    assert float(m[1]) == pytest.approx(float(m[5]) + float(m[4]), abs=0.11)
    return float(m[5]), float(m[2]), float(m[3])


def test_the_table_shows_test_numbers_of_the_same_objectives(study: tuple[list[Run], _Detections]) -> None:
    runs, detections = study
    front = compute_front(runs)
    table = front_table(front, detections)
    assert list(table["Pareto"]) == ["yes", "yes", "yes", "no"]  # front first, by objective 1
    row_a = table.iloc[0]
    assert row_a["configuration"].endswith("(paper: no dropout)") and row_a["seeds"] == 3
    assert (row_a["val 1: full"], row_a["val 2: worst"]) == ("60.0", "10.0")
    # Test value of 'worst' for a: each seed's weaker condition on test, averaged (by hand).
    a_runs = [r for r in runs if r.run_id.startswith("a")]
    worst = np.mean([min(r.metrics["test.full.mAP"], r.metrics[f"test.{CENSOR}.mAP"]) for r in a_runs])
    full = np.mean([r.metrics["test.full.mAP"] for r in a_runs])
    est, lo, hi = _cell(row_a["test 2: worst"])
    assert est == pytest.approx(100 * worst, abs=0.051) and lo <= est <= hi
    est, lo, hi = _cell(row_a["test 1: full"])
    assert est == pytest.approx(100 * full, abs=0.051) and lo <= est <= hi
    assert row_a["test interval"] == "training recipe (seeds and patients)"  # 3 seeds
    b = table[table["configuration"].str.contains("paper: p = 0.25")].iloc[0]
    assert b["test interval"] == "these networks (patients)" and b["seeds"] == 1
    (r_b,) = [r for r in runs if r.run_id == "b"]
    est, lo, hi = _cell(b["test 2: worst"])
    assert est == pytest.approx(100 * min(r_b.metrics["test.full.mAP"], r_b.metrics[f"test.{CENSOR}.mAP"]), abs=0.051)
    # Without the evaluation tables: the estimate, no interval; a missing test condition is named.
    point = front.points[0]
    bare = objective_on_test(point, "worst", front.val_conditions)
    assert bare.estimate == pytest.approx(worst) and bare.interval is None
    gone = objective_on_test(point, "censor_flair", front.val_conditions, detections)
    assert gone.estimate is None and "no test mAP under censor_flair" in gone.note
    # A profile is the share-weighted mean of the same conditions' test mAPs.
    prof = objective_on_test(point, {FULL: 0.7, CENSOR: 0.3}, front.val_conditions, detections)
    assert prof.estimate == pytest.approx(np.mean([0.7 * r.metrics["test.full.mAP"] + 0.3 * r.metrics[f"test.{CENSOR}.mAP"]
                                                   for r in a_runs]))
    assert prof.kind == "recipe" and prof.interval[0] <= prof.estimate <= prof.interval[1]


def test_the_report_blocks_draw_the_front(study: tuple[list[Run], _Detections], tmp_path: Path) -> None:
    from seqablate.analysis.document import Figure, Frame, Paragraph

    runs, detections = study
    blocks = pareto_blocks(compute_front(runs), tmp_path, detections)
    (fig,) = [b for b in blocks if isinstance(b, Figure)]
    assert fig.path == tmp_path / PARETO_PNG and fig.path.stat().st_size > 5000
    assert "3 of 4 configurations" in fig.caption
    assert [b for b in blocks if isinstance(b, Frame)]
    texts = " ".join(b.text for b in blocks if isinstance(b, Paragraph))
    assert "selected its checkpoint on objective 1" in texts and "never used to choose" in texts
    assert "Left out of the front" in texts
    # Three objectives: the front of all three, drawn in the first two, and said so.
    d = _Detections()
    three = [_run("x", "0.0", 0, (0.5, 0.1, 0.9), d, objectives="full; worst; mean"),
             _run("y", "0.25", 0, (0.5, 0.1, 0.2), d, objectives="full; worst; mean"),
             _run("z", "flair=0.2", 0, (0.6, 0.2, 0.1), d, objectives="full; worst; mean")]
    front = compute_front(three)
    assert [p.on_front for p in front.points] == [True, False, True]
    blocks = pareto_blocks(front, tmp_path / "three", d)
    (fig,) = [b for b in blocks if isinstance(b, Figure)]
    assert "over all 3 objectives; the figure shows the first two" in fig.caption


def test_tag_study_writes_the_tags_through_mlflow(tmp_path: Path) -> None:
    """Through seqablate.tracking on a real store: finished runs tagged by the front, a run
    without the objectives left untagged; tagging again follows a changed front."""
    from seqablate import tracking
    from seqablate.analysis.pareto import tag_study
    from seqablate.config import TrialConfig, parse

    cfg = parse(TrialConfig, {"train": {"objectives": ["full", "worst"], "val_conditions": [FULL, CENSOR]}})
    storage = str(tmp_path / "study")
    ids = {}
    with tracking.study_run("pareto", storage=storage) as study:
        for name, p, values in (("a", 0.0, (0.6, 0.1)), ("b", 0.25, (0.5, 0.4)), ("c", 0.5, (0.4, 0.3)),
                                ("d", 0.4, None)):
            run_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"dropout_p": p})})
            with tracking.trial_run(study.ref, run_cfg, overrides={"train.dropout_p": p}, run_name=name) as log:
                if values is not None:
                    log.log_metrics({f"val.selected_objective.{i}": v for i, v in enumerate(values, 1)}, step=4)
                ids[name] = log.run_id
    front = tag_study(storage)
    assert front is not None and sorted(p.runs[0].name for p in front.front) == ["a", "b"]
    tags = {r: tracking.run_info(i, tracking_uri=study.ref.tracking_uri).data.tags for r, i in ids.items()}
    assert {r: t.get("pareto") for r, t in tags.items()} == {"a": "true", "b": "true", "c": "false", "d": None}
    assert tags["a"]["objectives.definition"].startswith("1: validation mAP under full; 2: worst (lowest)")
    assert math.isclose(front.points[0].values[0], 0.6)
    # c now does better than a and b on both objectives: tagging again moves the front to it.
    c = tracking.client(study.ref.tracking_uri)
    c.log_metric(ids["c"], "val.selected_objective.1", 0.7, step=5)
    c.log_metric(ids["c"], "val.selected_objective.2", 0.5, step=5)
    tag_study(storage)
    again = {r: tracking.run_info(i, tracking_uri=study.ref.tracking_uri).data.tags.get("pareto") for r, i in ids.items()}
    assert again == {"a": "false", "b": "false", "c": "true", "d": None}
