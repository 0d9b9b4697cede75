"""A trained network as it is deployed: presence rule, normalisation statistics, its config.

:class:`DeployedModel` is what a study logs as its MLflow model and what evaluation,
validation, ``predict`` and the report's overlays predict with (through
:class:`seqablate.models.inference.Predictor`). Its contract takes *unscaled* inputs:

    forward(image: float[B, S, K, H, W], present: bool[B, S]) -> logits: float[B, 1, H, W]

``image`` holds each sequence as preprocessed (anything where absent); the module applies the
presence rule itself (absent sequences zeroed, present ones scaled by S / S_present, as in
training) and, for a BatchNorm model with per-subset statistics and policy ``per_subset``,
normalises each sample with the statistics of the sequences it has. So a user of
``mlflow.pytorch.load_model`` gets the same numbers as seqablate's own evaluation.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from seqablate.models.norm_stats import NormStats, apply_stats, has_batchnorm, subset_key
from seqablate.vocabulary import NORM_STATS, PER_SUBSET, STORED


class DeployedModel(nn.Module):
    """A ``SeqSegModel`` in eval mode with its statistics policy (see the module docstring).

    Args:
        model: the trained network (a copy is kept, in eval mode).
        norm_stats: per-subset BatchNorm statistics (subset key -> buffers), or None.
        policy: ``"per_subset"`` uses them (a subset without an entry keeps the stored
            statistics); ``"stored"`` always uses the training statistics.
        config: the resolved TrialConfig as a JSON-able dict (what it was trained with).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        norm_stats: NormStats | None = None,
        policy: str = STORED,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if policy not in NORM_STATS:
            raise ValueError(f"eval.norm_stats: unknown value {policy!r}; valid choices: {list(NORM_STATS)}")
        self.net = copy.deepcopy(model).eval()
        self.sequences: tuple[str, ...] = tuple(model.sequences)  # type: ignore[arg-type]
        self.slices = int(model.slices)  # type: ignore[arg-type]
        self.norm_stats: NormStats = dict(norm_stats or {}) if has_batchnorm(self.net) else {}
        self.policy = policy
        self.config = dict(config or {})
        self._prepared: dict[str, nn.Module] = {}
        self.eval()

    def _apply(self, fn: Any, recurse: bool = True) -> DeployedModel:
        self._prepared = {}  # moved or cast: the per-key copies are rebuilt from the new weights
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_prepared"] = {}  # the per-key copies are a cache: never pickled
        return state

    def train(self, mode: bool = True) -> DeployedModel:
        """A deployed model stays in eval mode (BatchNorm statistics are chosen, not learned)."""
        return super().train(False)

    @property
    def geometry(self) -> dict[str, Any]:
        """How inputs are preprocessed for this model (from its config): ``geometry``
        (``spacing`` or ``resize``; a config saved before the geometry existed means
        ``resize``), ``spacing_mm`` / ``slice_mm`` (``spacing``), ``image_size`` (the patch or
        resize size), ``intensity`` and ``clahe_tile_mm``. Empty without a config."""
        from seqablate.vocabulary import LEGACY_GEOMETRY

        data = dict(self.config.get("data") or {})
        if not data:
            return {}
        kind = data.get("geometry", LEGACY_GEOMETRY)
        out: dict[str, Any] = {"geometry": kind, "image_size": data.get("image_size"), "intensity": data.get("intensity")}
        if kind == "spacing":
            out.update(spacing_mm=data.get("spacing_mm"), slice_mm=data.get("slice_mm"),
                       clahe_tile_mm=data.get("clahe_tile_mm"))
        return out

    def describe_geometry(self) -> str:
        """One line for the console, e.g. ``resampled to 1.5 x 1.5 x 2.25 mm (trained on
        64 x 64 patches), minmax_clahe intensities``."""
        g = self.geometry
        if not g:
            return "geometry unknown (a model without its config)"
        if g["geometry"] == "spacing" and (g.get("spacing_mm") is None or g.get("slice_mm") is None):
            return (f"resampled to a spacing planned from the cohort it is applied to (none recorded in its config; "
                    f"trained on {g['image_size']} x {g['image_size']} patches), {g['intensity']} intensities")
        if g["geometry"] == "spacing":
            return (f"resampled to {g['spacing_mm']:g} x {g['spacing_mm']:g} x {g['slice_mm']:g} mm (trained on "
                    f"{g['image_size']} x {g['image_size']} patches), {g['intensity']} intensities, CLAHE tiles "
                    f"{g['clahe_tile_mm']:g} mm")
        return (f"every slice resized to {g['image_size']} x {g['image_size']} pixels whatever its field of view, "
                f"{g['intensity']} intensities")

    def stats_key(self, present: Tensor | list[bool]) -> str:
        """The statistics a sample with sequences ``present`` (bool[S]) gets: its subset's key
        when ``per_subset`` statistics hold it, else ``"stored"``."""
        if self.policy != PER_SUBSET or not self.norm_stats:
            return STORED
        key = subset_key(present, self.sequences)
        return key if key in self.norm_stats else STORED

    def condition(self, present: Tensor, censor: Any = ()) -> tuple[Tensor, Tensor, str]:
        """One patient's sequences under a condition: ``(keep bool[S], used bool[S], statistics
        key)``: ``keep`` is False for the censored names (canonical names or aliases), ``used``
        = ``present & keep`` (what the network sees), and the key is :meth:`stats_key` of
        ``used``. ``present``: bool[S] (what the patient has on disk). Raises ValueError for a
        censored name the model does not take."""
        import numpy as np

        from seqablate.data.dropout import keep_vector

        keep = torch.from_numpy(np.asarray(keep_vector(censor, self.sequences)))
        used = present.to(torch.bool).cpu() & keep
        return keep, used, self.stats_key(used)

    @staticmethod
    def presence(image: Tensor, present: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The presence rule (:func:`seqablate.data.dropout.apply_presence`): sequences absent
        or not kept zeroed, the rest scaled by S / S_present. ``image`` float[B, S, K, H, W],
        ``present`` bool[B, S], ``keep`` bool[B, S] or [S]; returns ``(image', present')``."""
        from seqablate.data.dropout import apply_presence

        return apply_presence(image, present, keep)

    @staticmethod
    def sequence_weights(used: Tensor) -> Tensor:
        """float32[S]: the presence rule's per-sequence multipliers for the sequences ``used``
        (bool[S]): what a linear stem weighs each sequence's partial convolution by."""
        from seqablate.data.dropout import presence_weights

        return presence_weights(used)  # type: ignore[return-value]

    def network(self, key: str) -> nn.Module:
        """A new eval-mode copy of the network with statistics ``key`` ("stored" or a subset
        key), on this model's device; the caller owns it (``Predictor`` prepares it in place)."""
        net = copy.deepcopy(self.net).eval()
        if key != STORED:
            apply_stats(net, self.norm_stats[key])
        return net

    def net_for(self, key: str) -> nn.Module:
        """The network with statistics ``key``, eval mode, made once per key (what
        :meth:`forward` runs)."""
        if key not in self._prepared:
            self._prepared[key] = self.network(key)
        return self._prepared[key]

    def forward(self, image: Tensor, present: Tensor) -> Tensor:
        """``image[B, S, K, H, W]`` (unscaled), ``present[B, S]`` -> ``logits[B, 1, H, W]``."""
        present = present.to(device=image.device, dtype=torch.bool)
        if tuple(present.shape) != tuple(image.shape[:2]):
            raise ValueError(f"present must be [B, S] = {tuple(image.shape[:2])}, got {tuple(present.shape)}")
        image, present = self.presence(image, present)
        keys = [self.stats_key(row) if bool(row.any()) else STORED for row in present.cpu()]
        if len(set(keys)) == 1:
            return self.net_for(keys[0])(image, present)
        out: Tensor | None = None
        for key in dict.fromkeys(keys):
            rows = torch.tensor([i for i, k in enumerate(keys) if k == key], device=image.device)
            y = self.net_for(key)(image.index_select(0, rows), present.index_select(0, rows))
            if out is None:
                out = y.new_empty((image.shape[0], *y.shape[1:]))
            out[rows] = y
        assert out is not None
        return out
