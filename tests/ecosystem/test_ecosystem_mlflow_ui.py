"""MLflow's own UI on a smoke study, in a real browser (headless Chromium; slow tier).

The study experiment opens in MLflow's model-training view (not the GenAI overview); the
study's view link shows the trial runs (not the parent run) with their key test metrics as
columns, and the seed-grouped link one group row per configuration with the seeds' average. Skipped when
no Chromium is installed (``apt-get install chromium``). The screenshot is kept beside the
study (``<tmp>/runs.png``) for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests._servers import mlflow_server

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(url: str, *extra: str) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--virtual-time-budget=40000", "--window-size=1600,1000", *extra, url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install chromium)")
def test_runs_page_shows_trials_and_metric_columns(tmp_path: Path, phantom: Path) -> None:
    space = tmp_path / "two.py"
    space.write_text('SPACE = [{"model.integration": "input", "train.dropout_p": 0.0},\n'
                     '         {"model.integration": "input", "train.dropout_p": 0.25}]\n')
    storage = tmp_path / "study"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    run = subprocess.run([sys.executable, "-m", "seqablate", "study", "run", str(space), "--cohort", str(phantom),
                          "--smoke", "--seeds", "2", "--storage", str(storage), "--name", "ui-smoke"],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    link = re.search(r"then open http://127\.0\.0\.1:5000/(\S+)", run.stdout)
    grouped = re.search(r"seeds grouped per configuration: http://127\.0\.0\.1:5000/(\S+)", run.stdout)
    assert link and grouped, run.stdout
    with mlflow_server(tmp_path / "server", backend_uri=f"sqlite:///{storage / 'mlflow.db'}") as url:
        dom = _chromium(f"{url}/{link.group(1)}", "--dump-dom")
        _chromium(f"{url}/{link.group(1)}", f"--screenshot={tmp_path / 'runs.png'}")
        gdom = _chromium(f"{url}/{grouped.group(1)}", "--dump-dom")
        _chromium(f"{url}/{grouped.group(1)}", f"--screenshot={tmp_path / 'grouped.png'}")
    assert (tmp_path / "runs.png").stat().st_size > 10_000
    for name in ("input-seed0", "input-seed1", "input-p0.25-seed0", "input-p0.25-seed1"):
        assert name in dom, name
    # The parent run is not a row of either view (its name is also the experiment's, so rows are
    # told by their links to the run page)
    from seqablate import tracking

    ref = tracking.resolve_study(str(storage))
    trials = tracking.list_trials(ref)
    for page in (dom, gdom):
        assert f'/runs/{ref.parent_run_id}"' not in page
        assert all(f'/runs/{rid}"' in page for rid in trials["run_id"])
    assert "test.full.mAP" in dom  # a metric column of the runs table
    assert "Token usage" not in dom  # not the GenAI overview
    # Grouped view: one row per configuration, named by the configuration tag, with the mean
    # of its two seeds' test mAP (computed here from the runs themselves).
    assert "Group: input<" in gdom or "Group: input" in gdom
    assert "Group: input-p0.25" in gdom and "(average)" in gdom  # MLflow's aggregated group rows
    for conf in ("input", "input-p0.25"):
        vals = trials[trials["tags.configuration"] == conf]["metrics.test.full.mAP"].astype(float)
        assert len(vals) == 2
        mean = float(vals.mean())
        assert any(f"{mean:.{d}f}".rstrip("0").rstrip(".") in gdom for d in (2, 3, 4)), (conf, mean)
