"""Writing to one run: buffered metrics, params, tags, artifacts, the model, the terminal status."""

from __future__ import annotations

import contextlib
import copy
import re
import tempfile
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag

from seqablate.provenance import git_commit
from seqablate.tracking.names import CONFIG_ARTIFACT, MODEL_DIR, SPLIT_ARTIFACT, TAG_ERROR
from seqablate.tracking.store import client, retry
from seqablate.vocabulary import STORED

if TYPE_CHECKING:
    import pandas as pd

def _now_ms() -> int:
    return int(time.time() * 1000)


def param_str(v: Any) -> str:
    return "None" if v is None else str(v)


VALID_KEY = re.compile(r"^[/\w.\- :]+$")
MAX_KEY = 250  # MLflow's limit on metric, param and tag names


def _check_key(key: str, what: str) -> str:
    """Refuse keys MLflow would reject at flush time (which would lose a whole batch)."""
    if (not isinstance(key, str) or not VALID_KEY.match(key) or ".." in key or key.startswith("/")
            or len(key) > MAX_KEY):
        raise ValueError(
            f"{what} name {key!r} is not valid for MLflow: use letters, digits, '_', '-', '.', "
            f"' ', ':' and '/' (no leading '/', no '..'), at most {MAX_KEY} characters"
        )
    return key


def _log_params_tags(
    c: mlflow.MlflowClient,
    run_id: str,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> None:
    ps = [Param(_check_key(k, "param"), param_str(v)) for k, v in (params or {}).items()]
    ts = [RunTag(k, param_str(v)) for k, v in (tags or {}).items()]
    if ps or ts:
        retry(c.log_batch, run_id, params=ps, tags=ts)


def _mark_failed(c: mlflow.MlflowClient, run_id: str, err: BaseException) -> None:
    """FAILED status, ``error`` tag and ``error.txt`` traceback; never raises (best effort)."""
    msg = f"{type(err).__name__}: {err}".strip()
    if len(msg) > 7900:  # MLflow's tag value limit is 8000 characters
        msg = msg[:7900] + " ..."
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    with contextlib.suppress(Exception):
        retry(c.set_tag, run_id, TAG_ERROR, msg)
    with contextlib.suppress(Exception):
        retry(c.log_text, run_id, tb, "error.txt")
    with contextlib.suppress(Exception):
        retry(c.set_terminated, run_id, RunStatus.to_string(RunStatus.FAILED))


def yaml_text(data: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(dict(data), sort_keys=False)


class RunLogger:
    """Logs to one run by id: buffered metrics, params, tags, artifacts.

    Metrics are buffered and written with ``log_batch`` when ``flush_every`` values are
    pending or ``flush_seconds`` have passed since the last write (checked on each call), and
    always on :meth:`flush`/close. A failed flush keeps the buffer (nothing is lost; the next
    flush retries it). Not thread-safe: one logger per thread/trial.
    """

    def __init__(
        self,
        tracking_uri: str,
        run_id: str,
        *,
        flush_every: int = 500,
        flush_seconds: float = 10.0,
        create: bool = True,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.client = client(tracking_uri, create=create)  # create=False: an existing run's store
        self.flush_every = max(1, int(flush_every))
        self.flush_seconds = float(flush_seconds)
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()
        self.metrics_logged = 0  # values handed to log_batch successfully

    # ---- metrics ----
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Buffer ``{key: value}`` at ``step`` (default 0). Non-numeric values raise ValueError."""
        ts = _now_ms()
        for key, value in metrics.items():
            _check_key(key, "metric")
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"metric {key!r}: value {value!r} is not a number") from None
            self._buffer.append(Metric(key, v, ts, int(step or 0)))
        if len(self._buffer) >= self.flush_every or (
            time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self.flush()

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.log_metrics({key: value}, step)

    def flush(self) -> None:
        """Write buffered metrics (chunks of 1000 per MLflow batch), retrying lock errors."""
        while self._buffer:
            chunk = self._buffer[:1000]
            retry(self.client.log_batch, self.run_id, metrics=chunk)
            del self._buffer[: len(chunk)]
            self.metrics_logged += len(chunk)
        self._last_flush = time.monotonic()

    # ---- params / tags ----
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params now (values stringified; re-logging an equal value is allowed)."""
        _log_params_tags(self.client, self.run_id, params=params)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        _log_params_tags(self.client, self.run_id, tags=tags)

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    # ---- artifacts ----
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file, or a folder's contents, under ``artifact_path`` (None = run root)."""
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{p}: cannot log as an artifact, it does not exist")
        if p.is_dir():
            retry(self.client.log_artifacts, self.run_id, str(p), artifact_path)
        else:
            retry(self.client.log_artifact, self.run_id, str(p), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        retry(self.client.log_text, self.run_id, text, artifact_file)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """JSON, or YAML when ``artifact_file`` ends in .yaml/.yml."""
        retry(self.client.log_dict, self.run_id, dict(data), artifact_file)

    def log_table(self, df: pd.DataFrame, artifact_file: str) -> None:
        """A DataFrame as CSV (e.g. the per-lesion table ``lesions/test_full.csv``)."""
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(artifact_file).name
            df.to_csv(local, index=False)
            parent = str(Path(artifact_file).parent)
            self.log_artifact(local, None if parent in ("", ".") else parent)

    def log_pr_curve(
        self, name: str, precision: Any, recall: Any, thresholds: Any | None = None
    ) -> None:
        """A PR curve as ``pr_curves/<name>.csv`` (columns precision, recall[, threshold]).

        ``precision``/``recall`` are 1-D arrays of equal length N; ``thresholds`` has N or
        N - 1 values (scikit-learn's convention: the last point has none -> NaN).
        """
        import numpy as np
        import pandas as pd

        p, r = np.asarray(precision, float).ravel(), np.asarray(recall, float).ravel()
        if p.shape != r.shape:
            raise ValueError(f"PR curve {name!r}: precision {p.shape} and recall {r.shape} differ")
        cols: dict[str, Any] = {"precision": p, "recall": r}
        if thresholds is not None:
            t = np.asarray(thresholds, float).ravel()
            if len(t) == len(p) - 1:
                t = np.append(t, np.nan)
            if len(t) != len(p):
                raise ValueError(f"PR curve {name!r}: {len(t)} thresholds for {len(p)} points")
            cols["threshold"] = t
        self.log_table(pd.DataFrame(cols), f"pr_curves/{name}.csv")

    def log_model(self, model: Any, *, example: Mapping[str, Any] | None = None,
                  split: Mapping[str, Any] | None = None) -> None:
        """The trained model under ``model/`` as an MLflow PyTorch model.

        ``model`` is a :class:`~seqablate.models.deployed.DeployedModel` (it carries its config
        and normalisation statistics); ``example`` (``{"image": float32[N, S, K, H, W],
        "present": bool[N, S]}``) gives the signature. Saved in MLflow's ``pickle`` format:
        the default ``pt2`` traces the forward pass with ``torch.export``, which cannot
        follow the data-dependent branches on ``present``. ``mlflow.pytorch.load_model`` on
        ``runs:/<run id>/model`` (or a registered version) returns the module. The resolved
        config is also written as ``model/config.yaml``, and ``split`` (the trial's split
        record) as ``model/split.json``, so a registered or downloaded model still knows which
        patients it was trained on.
        """
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        from seqablate import __version__

        if any(t.device.type != "cpu" for t in model.state_dict().values()):
            model = copy.deepcopy(model).cpu()  # saved and served from the CPU; the caller's stays put
        signature = None
        if example is not None:
            with torch.no_grad():
                out = model(torch.as_tensor(example["image"]), torch.as_tensor(example["present"]))
            signature = infer_signature({k: v for k, v in example.items()}, out.float().numpy())
            if (getattr(model, "config", None) or {}).get("data", {}).get("geometry") == "spacing":
                signature = _any_slice_size(signature)
        meta = {"seqablate_version": __version__, "git_commit": git_commit(),
                "norm_stats": getattr(model, "policy", STORED),
                "sequences": list(getattr(model, "sequences", ()))}
        import logging

        # The pickle format is chosen deliberately (see above); MLflow warns about it each time.
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        with tempfile.TemporaryDirectory(prefix="seqablate-model-") as tmp:
            path = Path(tmp) / MODEL_DIR
            mlflow.pytorch.save_model(
                model, str(path), serialization_format="pickle", signature=signature, metadata=meta,
                pip_requirements=[f"seqablate=={__version__}", f"torch=={torch.__version__.split('+')[0]}",
                                  f"mlflow=={mlflow.__version__}"],
            )
            cfg = getattr(model, "config", None)
            if cfg:
                (path / CONFIG_ARTIFACT).write_text(yaml_text(dict(cfg)))
            if split is not None:
                import json

                (path / SPLIT_ARTIFACT).write_text(json.dumps(dict(split), indent=1))
            self.log_artifact(path, MODEL_DIR)

    # ---- end ----
    def finish(self, status: str = "FINISHED") -> None:
        """Flush and set the terminal status (FINISHED, FAILED or KILLED). If the flush
        fails, the run is marked FAILED with that error (never left RUNNING) and it raises."""
        try:
            self.flush()
        except BaseException as err:
            self.fail(err)
            raise
        retry(self.client.set_terminated, self.run_id, status)

    def fail(self, err: BaseException) -> None:
        """Flush what can be flushed, then mark FAILED with the error (never raises)."""
        with contextlib.suppress(Exception):
            self.flush()
        _mark_failed(self.client, self.run_id, err)


def _any_slice_size(signature: Any) -> Any:
    """``signature`` with the slice height and width (the last two axes of every tensor) left
    open (-1): a model of the ``spacing`` geometry takes whole slices of any size."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    def open_hw(schema: Any) -> Any:
        specs = []
        for spec in schema.inputs:
            shape = tuple(spec.shape)
            if len(shape) >= 4:
                shape = (*shape[:-2], -1, -1)
            specs.append(TensorSpec(spec.type, shape, spec.name))
        return Schema(specs)

    return ModelSignature(inputs=open_hw(signature.inputs), outputs=open_hw(signature.outputs),
                          params=signature.params)
