"""The README's new questions, as written (smoke sizes, small phantoms): a data-scaling study
evaluated on every sequence subset (Shapley values and learning curves) and a study over two
phantom cohorts that differ only in misregistration, through the CLI, Ray Tune and MLflow."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from seqablate import metric_names as mn


@pytest.mark.slow
def test_readme_new_questions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    import ray

    from seqablate import tracking
    from seqablate.analysis.runs import runs_from_frame
    from seqablate.cli import main
    from tests.test_readme import SMOKE_STUDIES, _prepare, readme_commands

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # the walkthrough's stanford cohort, smaller (smoke size); the README's commands otherwise as written
    assert main(["phantom", "cohorts/stanford", "--patients", "12", "--seed", "0", "--small"]) == 0
    cmds = [c for c in readme_commands()
            if "subsets.yaml" in c.text or "runs/scaling" in c.text or "misreg" in c.text]
    assert len(cmds) == 7 and "data-scaling" in SMOKE_STUDIES
    for c in cmds:
        if c.heredoc is not None:
            Path(re.search(r">\s*(\S+)", c.text).group(1)).write_text(c.heredoc)
            continue
        cmd = _prepare(c.text, {"tmp": str(tmp_path)}).replace("--patients 24", "--patients 12")
        if cmd.startswith("seqablate study run"):
            assert "--smoke" in cmd
        try:
            code = main(shlex.split(cmd)[1:])
        finally:
            ray.shutdown()
        out = capsys.readouterr()
        assert code == 0, cmd + "\n" + out.out[-3000:] + out.err[-3000:]

    # data-scaling: 6 configurations (sizes x dropout), each run on every subset with Shapley values
    runs = runs_from_frame(tracking.list_trials("runs/scaling"))
    assert len(runs) == 6 and all(r.status == "FINISHED" for r in runs)
    sizes = sorted({r.metrics[mn.N_TRAIN] for r in runs})
    assert len(sizes) == 3 and sizes[-1] > sizes[0]
    for r in runs:
        shap = {s: r.metrics[mn.shapley_key(s)] for s in r.sequences}
        assert sum(shap.values()) == pytest.approx(r.metrics["test.full.mAP"], abs=1e-9)
    md = Path("runs/scaling/report/report.md").read_text()
    assert "How much each sequence contributes (Shapley values)" in md and "shapley.png" in md
    assert "How results scale with training data" in md and "learning_curves.png" in md

    # the misregistration sweep: the same patients at 0 and 2 mm, both arms trained on each cohort
    meta = {m: json.loads(Path(f"cohorts/misreg{m}/phantom.json").read_text()) for m in (0, 2)}
    assert (meta[0]["misregistration_mm"], meta[2]["misregistration_mm"]) == (0.0, 2.0)
    runs = runs_from_frame(tracking.list_trials("runs/misreg"))
    assert sorted(r.name for r in runs) == sorted(f"{a}-on_misreg{m}-seed0" for a in ("input", "input-p0.25")
                                                  for m in (0, 2))
    assert {Path(r.params["data.cohort"]).name for r in runs} == {"misreg0", "misreg2"}
    md = Path("runs/misreg/report/report.md").read_text()
    assert "Across cohorts: the cost of censoring t1_gre_post" in md and "misregistration_mm" in md
    assert "cohort_sweep.png" in md


def test_cohorts_flag_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--cohorts: a missing folder is named; two folders of one name (which labels runs) are
    refused, naming both; a search cannot be crossed with cohorts; no --cohort at all is an
    error naming both flags. Nothing is written."""
    from seqablate.cli import main
    from seqablate.search_spaces import SpaceError, get_space, run_name

    assert main(["study", "run", "dropout-sweep", "--cohorts", str(tmp_path / "nope"),
                 "--storage", str(tmp_path / "s")]) == 2
    assert f"--cohorts {tmp_path / 'nope'}: no such file or directory" in capsys.readouterr().err
    assert main(["study", "run", "dropout-sweep", "--storage", str(tmp_path / "s")]) == 2
    assert "--cohort PATH (or --cohorts PATH ...) is required" in capsys.readouterr().err
    for sub in ("x/stanford", "y/stanford"):
        (tmp_path / sub).mkdir(parents=True)
    assert main(["study", "run", "dropout-sweep", "--cohorts", str(tmp_path / "x/stanford"),
                 str(tmp_path / "y/stanford"), "--storage", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "share the folder name 'stanford'" in err and str(tmp_path / "y/stanford") in err
    assert not (tmp_path / "s").exists()
    with pytest.raises(SpaceError, match="is a search .*only a grid can be crossed with data.cohort"):
        get_space("hpo").crossed("data.cohort", ["/a", "/b"])
    grid = get_space("dropout-sweep").select(["input"]).crossed("data.cohort", ["/c/a", "/c/b"])
    assert [p["data.cohort"] for p in grid.points] == ["/c/a", "/c/b"]
    assert [run_name({**p, "train.seed": 0}) for p in grid.points] == ["input-on_a-seed0", "input-on_b-seed0"]
    with pytest.raises(SpaceError, match="sets data.cohort itself"):
        grid.crossed("data.cohort", ["/c/d"])
