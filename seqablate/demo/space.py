"""The demo's search space: the input-level network without and with sequence dropout."""

DESCRIPTION = "demo: input-level integration, sequence dropout p in {0, 0.25}"
SPACE = [
    {"model.integration": "input", "train.dropout_p": 0.0},
    {"model.integration": "input", "train.dropout_p": 0.25},
]
