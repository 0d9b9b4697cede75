"""A study as the report reads it: its trial runs (and search space) back from MLflow.

:func:`load_study` resolves STUDY (a study folder, an MLflow experiment name, or a parent or
trial run id) through :mod:`seqablate.tracking`; the other analysis modules take the
:class:`StudyRuns` it returns.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqablate import tracking
from seqablate.analysis.runs import Run, runs_from_frame


@dataclass
class StudyRuns:
    """What the report reads from MLflow about one study."""

    name: str
    tracking_uri: str
    parent_run_id: str
    runs: list[Run]
    space: dict[str, Any] | None = None  # the parent run's space.json, when logged
    folder: Path | None = None  # the study folder when STUDY was one
    baselines: list[Run] = field(default_factory=list)  # outside tools' scored predictions (finished)
    findings: list[Any] = field(default_factory=list)  # filled by build_document
    tables: list[Any] = field(default_factory=list)  # filled by build_document
    pareto: Any = None  # a multi-objective study's ParetoFront (analysis.pareto), filled by build_document

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return tracking.metric_history(run_id, key, tracking_uri=self.tracking_uri)


def load_study(study: str, *, tracking_uri: str | None = None) -> StudyRuns:
    """Resolve STUDY (folder, experiment name, or parent/trial run id) and read its trials.

    Raises ValueError (from :func:`seqablate.tracking.resolve_study`) naming what was tried.
    """
    ref = tracking.resolve_study(study, tracking_uri)
    parent = tracking.run_info(ref.parent_run_id, tracking_uri=ref.tracking_uri)
    name = parent.data.tags.get(tracking.TAG_STUDY) or parent.info.run_name or study
    frame = tracking.list_trials(ref)
    # A trial still running has no test metrics yet: the report covers the finished ones
    # (`seqablate report` names the others).
    runs = runs_from_frame(frame[frame["status"] != "RUNNING"])
    space = None
    with contextlib.suppress(Exception):  # older studies / other tools: no space.json
        tmp = tempfile.mkdtemp(prefix="seqablate-space-")
        try:
            p = tracking.download_artifact(ref.parent_run_id, "space.json", tmp, tracking_uri=ref.tracking_uri)
            space = json.loads(Path(p).read_text())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    folder = Path(study) if Path(study).is_dir() else None
    baselines: list[Run] = []
    with contextlib.suppress(Exception):  # a store without baselines (or an older seqablate's)
        frame = tracking.list_baselines(ref)
        if len(frame):
            baselines = [r for r in runs_from_frame(frame) if r.usable]
    return StudyRuns(str(name), ref.tracking_uri, ref.parent_run_id, runs, space, folder, baselines)
