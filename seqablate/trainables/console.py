"""A quiet, informative study console: one line per trial start and finish, a progress bar.

Without ``--verbose`` a study prints only this: Ray's own output (worker logs, Train's
controller messages, Tune's status table) stays out of the console and is copied into the
study folder (``<study>/logs/ray-<session>``) when the study ends, so nothing is lost. Errors are
printed in full.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import ray.tune
from tqdm.auto import tqdm

from seqablate import metric_names as mn
from seqablate.trainables.trial_names import config_name

#: The numbers a finished trial's line shows first, if it reported them; then the test mAP
#: of each sequence the study censored (``eval.censor``) and of each external cohort.
KEYS = (
    (mn.VAL_BEST_OBJECTIVE, "val objective"),
    (mn.TEST_FULL_MAP, "test mAP"),
)


def _name(trial: Any) -> str:
    return config_name(trial.config, str(trial.trial_id))


def result_line(result: dict[str, Any]) -> str:
    """``val objective 0.61 | test mAP 0.58 | ... | external oslo 0.55`` from a trial's last result
    (the validation objective is the validation mAP unless ``train.objective`` says otherwise)."""
    parts = []
    for key, label in KEYS:
        v = result.get(key)
        if isinstance(v, int | float) and not math.isnan(float(v)):
            parts.append(f"{label} {float(v):.3f}")
    for seq, key in mn.censored_map_keys(result):
        v = result[key]
        if isinstance(v, int | float) and not math.isnan(float(v)):
            parts.append(f"{seq} censored {float(v):.3f}")
    for key, v in sorted(result.items()):
        if key.startswith("external.") and key.endswith(".mAP") and key.count(".") == 2:
            parts.append(f"external {key.split('.')[1]} {float(v):.3f}")
    return " | ".join(parts) or "no metrics reported"


class StudyConsole(ray.tune.Callback):
    """Tune callback printing a line per trial start / finish / error and a study progress bar.

    ``total``: the number of trials (None when unknown).
    """

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.bar: Any = None
        self.started: dict[str, float] = {}

    def _bar(self) -> Any:
        if self.bar is None:
            self.bar = tqdm(total=self.total, desc="study", unit="trial", dynamic_ncols=True)
        return self.bar

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started[trial.trial_id] = time.monotonic()
        self._bar().write(f"started   {_name(trial)}")

    def _took(self, trial: Any) -> str:
        t0 = self.started.get(trial.trial_id)
        return f" in {time.monotonic() - t0:.0f} s" if t0 is not None else ""

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        bar = self._bar()
        bar.write(f"finished  {_name(trial)}{self._took(trial)}: {result_line(dict(trial.last_result or {}))}")
        bar.update(1)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        bar = self._bar()
        text = ""
        try:
            text = Path(trial.error_file).read_text() if trial.error_file else ""
        except OSError:
            pass
        bar.write(f"FAILED    {_name(trial)}{self._took(trial)}:\n{text.strip() or trial.error_msg or 'no error text'}")
        bar.update(1)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.bar is not None:
            self.bar.close()


def keep_ray_logs(folder: Path) -> Path | None:
    """Copy this Ray session's logs into ``folder/logs/ray-<session>`` (local Ray only);
    returns the copy, or None when there is no local session to copy from."""
    try:
        import ray

        node = ray._private.worker._global_node  # the local node of this driver, if it started one
        session = Path(node.get_session_dir_path()) if node is not None else None
    except Exception:  # noqa: BLE001 - private API: best effort
        return None
    if session is None or not (session / "logs").is_dir():
        return None
    dst = folder / "logs" / f"ray-{session.name}"
    shutil.copytree(session / "logs", dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.sock"))
    return dst
