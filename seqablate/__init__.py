"""seqablate: ablation and hyperparameter studies of multi-sequence MRI segmentation networks."""

from __future__ import annotations

__version__ = "0.1.0"
