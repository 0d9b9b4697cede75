"""One shared sequence-dropout probability for every sequence: the grid the per-sequence search
is compared with (``benchmarks/RESULTS.md``, "Search for robustness")."""

DESCRIPTION = "input-level network, one shared bernoulli dropout p in {0, 0.1, 0.25, 0.4}"
SPACE = [
    {"model.integration": "input", "train.dropout_p": p, "train.dropout_mode": "bernoulli"}
    for p in (0.0, 0.1, 0.25, 0.4)
]
