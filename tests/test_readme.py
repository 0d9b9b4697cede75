"""Every command the README shows runs, as written (smoke sizes allowed), through the real
machinery.

The ``seqablate`` commands run in order in one walkthrough (the CLI in a temporary working
folder, a real ``mlflow server`` where the README names one); the others are run by the test
named for them in :data:`ELSEWHERE`. A README command that is neither fails the default tier,
so the README cannot gain a command nobody runs.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

#: README commands run by another test: regex on the command -> "tests/<file>::<test>".
ELSEWHERE: dict[str, str] = {
    r"^make demo$": "tests/test_demo.py::test_demo_smoke_end_to_end_and_rerun_resumes",
    r"^make test$": "tests/test_readme.py::test_ci_runs_the_readme_test_command",
    r"^mlflow ui --backend-store-uri ": "tests/ecosystem/test_ecosystem_mlflow_ui.py::test_runs_page_shows_trials_and_metric_columns",
    r"ray job submit ": "tests/trainables/test_trainables_study.py::test_ray_job_submit",
    r"^seqablate study run .*--objective ": "tests/trainables/test_trainables_objective.py::test_readme_robustness_study",
    r"^seqablate study run .*--objectives ": "tests/trainables/test_trainables_objective.py::test_readme_multi_objective_study",
    r"^seqablate report runs/pareto$": "tests/trainables/test_trainables_objective.py::test_readme_multi_objective_study",
    r"^cat > subsets\.yaml|runs/scaling|cohorts/misreg|runs/misreg": (
        "tests/trainables/test_trainables_new_studies.py::test_readme_new_questions"),
}


@dataclass
class Command:
    text: str  # one command, continuation lines joined, comments dropped
    heredoc: str | None = None  # the here-document it writes, if any


def readme_commands(text: str | None = None) -> list[Command]:
    """The commands of the README's ```bash blocks, in order."""
    text = README.read_text() if text is None else text
    out: list[Command] = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        lines = iter(block.split("\n"))
        pending = ""
        for line in lines:
            if line.lstrip().startswith("#"):
                continue
            line = re.sub(r"\s+#\s.*$", "", line)
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            cmd = " ".join((pending + line).split())
            pending = ""
            if not cmd:
                continue
            doc = re.search(r"<<'?(\w+)'?", cmd)
            body = None
            if doc:
                body_lines = []
                for inner in lines:
                    if inner.strip() == doc.group(1):
                        break
                    body_lines.append(inner)
                body = "\n".join(body_lines) + "\n"
            out.append(Command(cmd, body))
    return out


def _runs_elsewhere(cmd: str) -> str | None:
    return next((test for pat, test in ELSEWHERE.items() if re.search(pat, cmd)), None)


def test_readme_opens_with_the_two_commands():
    first = readme_commands()[:2]
    assert [c.text for c in first] == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M), ".ci/run must call the README's test command"
    make = (REPO / "Makefile").read_text()
    recipe = re.search(r"^test: .*\n\t(.+)$", make, re.M)
    assert recipe and "pytest" in recipe.group(1) and "-m" not in recipe.group(1).split("pytest")[1]


def test_every_readme_command_is_run_by_a_test():
    import ast

    missing = []
    for c in readme_commands():
        test = _runs_elsewhere(c.text)
        if test is None:
            if c.text.startswith("seqablate ") or c.heredoc is not None or c.text.startswith("mlflow server "):
                continue  # the walkthrough below runs these
            missing.append(c.text)
            continue
        path, name = test.split("::")
        tree = ast.parse((REPO / path).read_text())
        assert name in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}, test
    assert not missing, f"README commands no test runs: {missing}"


def test_parser_reads_continuations_comments_and_heredocs():
    text = ("```bash\nseqablate a --x 1 \\\n    --y 2   # comment\n# whole-line comment\n"
            "cat > f.yaml <<'YAML'\nk: v\nYAML\nmake test\n```\n")
    cmds = readme_commands(text)
    assert [c.text for c in cmds] == ["seqablate a --x 1 --y 2", "cat > f.yaml <<'YAML'", "make test"]
    assert cmds[1].heredoc == "k: v\n"


# ------------------------------------------------------------------------------------------
# the walkthrough
# ------------------------------------------------------------------------------------------

#: Smoke sizes and this machine's paths for the README's placeholders (regex -> replacement),
#: applied in order. Nothing else of a command changes.
SUBSTITUTIONS: list[tuple[str, str]] = [
    (r"\[(--[^\]]+)\]", r"\1"),  # optional flags: run them too
    (r"/data/oslo/patient_007", "cohorts/oslo/oslo_000"),
    (r"/data/hospital", "cohorts/stanford"),
    (r"/data/studies", "{tmp}/server"),
    (r"--host 0\.0\.0\.0 --port 5000", "--host 127.0.0.1 --port {port}"),
    (r"http://mlflow(\.internal)?:5000", "http://127.0.0.1:{port}"),
    (r"--seeds 3", "--seeds 1"),
    (r"--num-samples 40", "--num-samples 2"),
    (r"--max-concurrent 4", "--max-concurrent 2"),
    (r"\bSTUDY\b", "runs/table2"),
    (r"\bDIR\b", "{tmp}/report"),
]
SMOKE_STUDIES = ("paper-table1", "paper-table2", "hpo", "dropout-sweep", "hpo-per-sequence", "data-scaling")


def _prepare(cmd: str, ctx: dict[str, str]) -> str:
    from seqablate.search_spaces import get_space

    for pat, rep in SUBSTITUTIONS:
        cmd = re.sub(pat, rep, cmd)
    for key, value in ctx.items():
        cmd = cmd.replace("{" + key + "}", value)
    cmd = cmd.replace("3f2a...c1", ctx.get("run_id", "3f2a...c1"))
    if cmd.startswith("seqablate study run ") and cmd.split()[3] in SMOKE_STUDIES:
        cmd += " --smoke"
        if get_space(cmd.split()[3]).kind != "search" and "--trials" not in cmd:
            cmd += " --trials 'input*'"  # one point of the grid
    return cmd


@pytest.mark.slow
def test_readme_walkthrough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    from seqablate import tracking
    from seqablate.cli import main
    from tests._servers import free_port

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ctx = {"tmp": str(tmp_path), "port": str(free_port())}
    server: subprocess.Popen | None = None
    ran: list[str] = []
    try:
        for c in readme_commands():
            if _runs_elsewhere(c.text):
                continue
            if c.heredoc is not None:
                target = re.search(r">\s*(\S+)", c.text).group(1)
                body = re.sub(r"steps: \d+", "steps: 6", c.heredoc)
                body = re.sub(r"val_every: \d+", "val_every: 3", body)
                Path(target).write_text(body)
                ran.append(c.text)
                continue
            cmd = _prepare(c.text, ctx)
            if cmd.startswith("mlflow server "):
                (tmp_path / "server").mkdir(exist_ok=True)
                args = shlex.split(cmd)
                args[0] = str(Path(sys.executable).with_name("mlflow"))
                server = subprocess.Popen(args + ["--workers", "1"], stdout=subprocess.DEVNULL,
                                          stderr=open(tmp_path / "server.log", "wb"), start_new_session=True)  # noqa: SIM115
                _wait_for(f"http://127.0.0.1:{ctx['port']}/health", server, tmp_path / "server.log")
                ran.append(cmd)
                continue
            if cmd.startswith("seqablate report demo-out"):
                continue  # the demo's own report: tests/test_demo.py writes and checks it
            assert cmd.startswith("seqablate "), cmd
            args = shlex.split(cmd)[1:]
            if args[0] == "evaluate" and "--predictions" in args:
                _nnunet_stand_in(Path(args[args.index("--predictions") + 1]), tmp_path / "nnunet")
            if args[0] in ("predict", "evaluate"):  # they find the run id in the trained run's database
                monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'runs/one/mlflow.db'}")
            else:
                monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
            code = main(args)
            out = capsys.readouterr()
            assert code == 0, f"{cmd} exited {code}:\n{out.out[-3000:]}\n{out.err[-3000:]}"
            ran.append(cmd)
            if args[:1] == ["train"]:
                ctx["run_id"] = tracking.list_trials("runs/one").iloc[0]["run_id"]
            if args[:2] == ["study", "run"] and "--tracking-uri" in args:  # the runs are on the server
                served = tracking.list_trials(args[2], tracking_uri=args[args.index("--tracking-uri") + 1])
                assert list(served["status"]) == ["FINISHED"]
    finally:
        if server is not None:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)
    # What the commands left behind, checked independently of their exit codes.
    assert (tmp_path / "cohorts/stanford/phantom.json").is_file()
    assert list(tracking.list_trials("runs/table2")["run_name"]) == ["input-p0.25-seed0"]
    assert set(tracking.list_trials("runs/mid")["run_name"]) == {
        f"mid@layer4-{s}-p0.25-seed0" for s in ("independent", "shared", "l2_tied")}
    assert len(tracking.list_trials("runs/hpo")) == 2
    assert (tmp_path / "pred").is_dir() and any((tmp_path / "pred").iterdir())
    assert (tmp_path / "eval/hospital/metrics.json").is_file()
    assert len(list((tmp_path / "nnunet/nnUNet_preprocessed").glob("Dataset*/splits_final.json"))) == 1
    assert list(tracking.list_baselines("runs/table2")["tags.seqablate.baseline"]) == ["nnunet-2d"]
    assert (tmp_path / "report/report.html").is_file() and (tmp_path / "report/report.md").is_file()
    assert sum(c.startswith("seqablate ") for c in ran) >= 14


def _nnunet_stand_in(predictions: Path, export: Path) -> None:
    """What nnU-Net would write into ``predictions`` for the exported test cases (the README
    runs nnU-Net itself only in a comment): ``<case>.nii.gz`` masks, here the test labels."""
    import shutil

    if predictions.exists():
        return
    (labels,) = export.glob("nnUNet_raw/Dataset*/labelsTs")
    shutil.copytree(labels, predictions)


def _wait_for(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 240.0) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"mlflow server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.5)
