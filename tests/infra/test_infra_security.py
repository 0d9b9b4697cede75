"""No credentials in infra files; the MLflow server setup listens on localhost by default and
takes its secrets from the environment; the container image installs the project on a CUDA
PyTorch base."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import ray
import tomllib
import yaml
from _infra import INFRA, REPO, find_secrets, infra_files

START = INFRA / "mlflow" / "start-server.sh"
COMPOSE = INFRA / "mlflow" / "docker-compose.yaml"
DOCKERFILE = INFRA / "docker" / "Dockerfile"


def test_no_credentials_in_infra_files():
    paths = [*infra_files(), REPO / "README.md"]
    hits = [(p.relative_to(REPO), no, kind) for p in paths for no, kind, _ in find_secrets(p.read_text())]
    assert hits == []


@pytest.mark.parametrize(
    "line",
    [
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "-----BEGIN RSA PRIVATE KEY-----",
        "MLFLOW_BACKEND_STORE_URI=postgresql://mlflow:hunter2secret@db:5432/mlflow",
        "      POSTGRES_PASSWORD: correcthorsebattery",
        '  "private_key_id": "0123456789abcdef0123456789abcdef01234567",',
        "export MLFLOW_TRACKING_TOKEN=abcd1234efgh5678",
    ],
)
def test_secret_scanner_flags_literal_credentials(line):
    assert list(find_secrets(line)), f"not flagged: {line}"


@pytest.mark.parametrize(
    "line",
    [
        "      POSTGRES_PASSWORD: ${MLFLOW_DB_PASSWORD:?export MLFLOW_DB_PASSWORD first}",
        '--from-literal=password="$MLFLOW_DB_PASSWORD"',
        "MLFLOW_BACKEND_STORE_URI: postgresql+psycopg2://mlflow@db:5432/mlflow",
        "      AWS_SECRET_ACCESS_KEY:",
        "#   PGPASSWORD                    the database password (from your secret manager / shell)",
        "            - name: PGPASSWORD",
    ],
)
def test_secret_scanner_accepts_environment_references(line):
    assert list(find_secrets(line)) == []


# --- MLflow server -------------------------------------------------------------------------


def test_compose_listens_on_localhost_and_takes_secrets_from_env():
    text = COMPOSE.read_text()
    compose = yaml.safe_load(text)
    mlflow, db = compose["services"]["mlflow"], compose["services"]["db"]
    assert mlflow["ports"] == ["${MLFLOW_PUBLISH:-127.0.0.1}:5000:5000"]
    assert "ports" not in db, "PostgreSQL must not be published"
    # Every secret is a required substitution from the environment (compose fails without it).
    assert re.fullmatch(r"\$\{MLFLOW_DB_PASSWORD:\?[^}]*\}", db["environment"]["POSTGRES_PASSWORD"])
    assert re.fullmatch(r"\$\{MLFLOW_DB_PASSWORD:\?[^}]*\}", mlflow["environment"]["PGPASSWORD"])
    # Backend: PostgreSQL without a password in the URI; artifacts: an object store from env.
    uri = mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert uri.startswith("postgresql") and "@" in uri and ":" not in uri.split("://")[1].split("@")[0]
    assert mlflow["environment"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("${MLFLOW_ARTIFACTS_DESTINATION:?")
    for passthrough in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert mlflow["environment"][passthrough] is None  # value taken from the shell


def _fake_mlflow(tmp_path: Path) -> Path:
    """A stand-in `mlflow` that records the environment and argv it was exec'd with."""
    fake = tmp_path / "mlflow"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'env | grep ^MLFLOW_ | sort > "{tmp_path}/env.txt"\n'
        f'echo "$@" > "{tmp_path}/argv.txt"\n'
    )
    fake.chmod(0o755)
    return fake


def _run_start(tmp_path, **env):
    base = {"PATH": os.environ["PATH"], "MLFLOW_BIN": str(_fake_mlflow(tmp_path))}
    return subprocess.run(["bash", str(START)], env={**base, **env}, capture_output=True,
                          text=True, timeout=30)


def test_start_script_defaults_to_localhost(tmp_path):
    proc = _run_start(
        tmp_path,
        MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://mlflow@db.internal:5432/mlflow",
        MLFLOW_ARTIFACTS_DESTINATION="s3://team-bucket/mlflow",
    )
    assert proc.returncode == 0, proc.stderr
    env = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines())
    assert env["MLFLOW_HOST"] == "127.0.0.1"
    assert env["MLFLOW_PORT"] == "5000"
    assert env["MLFLOW_SERVE_ARTIFACTS"] == "true"
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://team-bucket/mlflow"
    # Settings travel through the environment, not the command line (visible in `ps`).
    assert (tmp_path / "argv.txt").read_text().split() == ["server"]


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({}, "MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION"),
        ({"MLFLOW_BACKEND_STORE_URI": "postgresql://mlflow@db/mlflow"}, "MLFLOW_ARTIFACTS_DESTINATION"),
        (
            {"MLFLOW_BACKEND_STORE_URI": "postgresql://mlflow:s3cr3t@db/mlflow",
             "MLFLOW_ARTIFACTS_DESTINATION": "s3://b/m"},
            "contains a password; put it in PGPASSWORD",
        ),
    ],
)
def test_start_script_refuses_bad_environment(tmp_path, env, needle):
    proc = _run_start(tmp_path, **env)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert not (tmp_path / "env.txt").exists(), "mlflow must not start"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_start_script_runs_a_real_server_on_localhost_only(tmp_path):
    # Real mlflow (SQLite stands in for PostgreSQL here): it answers on 127.0.0.1 and does
    # not listen on the machine's other addresses.
    port = _free_port()
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
    }
    proc = subprocess.Popen(["bash", str(START)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 240  # DB migrations take ~90 s on a loaded 2-core machine
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.read().strip() == b"OK"
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.time() < deadline, "mlflow server did not come up"
                time.sleep(1)
        ext = [ip for ip in subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
               if ":" not in ip and not ip.startswith("127.")]
        assert ext, "no non-loopback IPv4 address to probe: this test would check nothing"
        for ip in ext:
            with socket.socket() as s, pytest.raises(OSError):
                s.settimeout(2)
                s.connect((ip, port))
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


# --- container image ---------------------------------------------------------------------


def _dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), re.M))


def test_dockerfile_on_cuda_pytorch_base_matching_the_pins():
    args = _dockerfile_args()
    base = args["BASE_IMAGE"]
    assert base.startswith("pytorch/pytorch:") and "cuda" in base
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_pin = next(d for d in deps if d.startswith("torch=="))
    assert base.split(":")[1].startswith(torch_pin.split("==")[1] + "-"), (
        f"base image {base} must carry {torch_pin} (else pip installs a second torch)")
    assert args["RAY_VERSION"] == ray.__version__


def test_dockerfile_installs_the_project_from_paths_that_exist():
    text = DOCKERFILE.read_text()
    copies = re.findall(r"^COPY (.+) \S+$", text, re.M)
    for src in " ".join(copies).split():
        assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
    assert re.search(r"pip install --no-deps -e \.", text)
    assert "psycopg2" in text  # the same image runs the MLflow server (infra/kuberay/mlflow.yaml)
    assert re.search(r"^USER (?!root)\w+", text, re.M), "the image must not run as root"
