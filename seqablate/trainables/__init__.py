"""Trainables: what needs Ray. The per-worker training loop (Ray Train V2) and its batches,
losses, schedule and memory checks, the Tune trial driver, the worker session and the
study console.

Evaluation, prediction, checkpoint files and cohort checks live one layer below, in
:mod:`seqablate.evaluation`. Only this package (and the CLI) imports Ray, and only inside
functions, so ``seqablate --help`` and the data/metrics code stay light.
"""

from __future__ import annotations
