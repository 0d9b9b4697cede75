"""`seqablate cohort inspect` and `seqablate phantom` through the real CLI entry point."""

from __future__ import annotations

import json

import numpy as np
from _data_helpers import lesion_mask, volume, write_nii

from seqablate.cli import main


def test_inspect_json_counts_lesions_26_connected(make_nifti_cohort, capsys):
    root = make_nifti_cohort({"p1": ["bravo", "flair"], "p2": ["flair"]})
    m = lesion_mask()
    m[6, 0, 4] = 1
    m[7, 1, 5] = 1  # touches (6,0,4) only at a corner: same lesion under 26-connectivity
    write_nii(root / "p2" / "seg.nii.gz", m)
    rc = main(["cohort", "inspect", str(root), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["layout"] == "nifti" and out["usable"] and out["n_patients"] == 2
    p1, p2 = out["patients"]
    assert p1["sequences"] == ["flair", "t1_gre_post"] and p1["shape"] == [12, 10, 6]
    assert p1["spacing"] == [1.0, 1.2, 2.0] and p1["lesions"] == 2 and p1["lesion_voxels"] == 22
    assert p2["lesions"] == 3 and p2["lesion_voxels"] == 24


def test_inspect_reports_every_problem_and_exits_2(make_nifti_cohort, capsys):
    root = make_nifti_cohort({"ok": ["flair"], "bad1": ["flair"], "bad2": ["flair", "t1_gre_post"]})
    v = volume(0)
    v[0, 0, 0] = np.nan
    write_nii(root / "bad1" / "flair.nii.gz", v)
    write_nii(root / "bad2" / "t1_gre_post.nii.gz", volume(1, (12, 10, 5)))
    m = lesion_mask()
    m[0, 0, 0] = 4
    write_nii(root / "bad2" / "seg.nii.gz", m)
    rc = main(["cohort", "inspect", str(root), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 2 and not out["usable"] and out["n_usable"] == 1
    by_id = {p["patient_id"]: p for p in out["patients"]}
    assert by_id["ok"]["usable"] and by_id["ok"]["problems"] == []
    assert len(by_id["bad1"]["problems"]) == 1 and "1 NaN" in by_id["bad1"]["problems"][0]
    probs = " ".join(by_id["bad2"]["problems"])
    assert len(by_id["bad2"]["problems"]) == 2 and "unexpected mask label(s) [4]" in probs and "shape (12, 10, 5)" in probs
    # text mode lists all three problems too
    rc = main(["cohort", "inspect", str(root)])
    text = capsys.readouterr().out
    assert rc == 2 and "3 problem(s)" in text and "[bad2]" in text and "1 unusable" not in text and "2 unusable patient(s)" in text


def test_inspect_unknown_path_exits_2(tmp_path, capsys):
    assert main(["cohort", "inspect", str(tmp_path / "missing")]) == 2
    assert "cohort folder does not exist" in capsys.readouterr().err


def test_phantom_command_then_inspect(tmp_path, capsys):
    out = tmp_path / "ph"
    rc = main(["phantom", str(out), "--site", "oslo", "--patients", "1", "--seed", "5", "--shape", "24", "24", "12"])
    assert rc == 0 and (out / "oslo_000" / "seg.nii.gz").is_file()
    capsys.readouterr()
    assert main(["cohort", "inspect", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["patients"][0]["shape"] == [24, 24, 12] and "t1_gre_post" not in rep["patients"][0]["sequences"]
