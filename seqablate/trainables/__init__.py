"""Trainables: the per-worker training loop (Ray Train V2), the Tune trial driver, evaluation
under missing sequences, prediction, and the ``train`` / ``study`` / ``predict`` / ``demo``
commands.

Only this package (and the CLI) imports Ray, and only inside functions, so ``seqablate
--help`` and the data/metrics code stay light.
"""

from __future__ import annotations
