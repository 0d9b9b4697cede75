"""The demo's no-dropout trial trained channels-last or not, everything else equal: whether the
memory layout moves a study's outcome (``benchmarks/RESULTS.md``, "Training channels-last")."""

DESCRIPTION = "input-level network, no dropout, train.channels_last false/true"
SPACE = [{"model.integration": "input", "train.channels_last": cl} for cl in (False, True)]
