"""Per-sequence dropout probabilities: each sequence's drop rate by simulation against rates
computed by enumerating every outcome, the "never drop everything" rule, unnamed sequences
never dropped, the stream of a single p unchanged, and bad inputs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from seqablate.data import SequenceDropout
from seqablate.sequences import PAPER_SEQUENCES

SEQS = PAPER_SEQUENCES
N = 20000


def _draws(drop: SequenceDropout, present: np.ndarray, n: int = N) -> np.ndarray:
    return np.stack([drop.draw(present) for _ in range(n)])


def _enumerated_drop_rates(p: list[float]) -> tuple[list[float], float]:
    """Each sequence's probability of being dropped, and of none being dropped, by summing
    over all 2^S independent outcomes with the all-dropped outcome turned into none dropped."""
    s = len(p)
    rates, none = [0.0] * s, 0.0
    for dropped in itertools.product((False, True), repeat=s):
        prob = math.prod(q if d else 1 - q for q, d in zip(p, dropped, strict=True))
        if all(dropped) or not any(dropped):
            none += prob
            continue
        for i, d in enumerate(dropped):
            rates[i] += prob * d
    return rates, none


def _tolerance(p: float, n: int = N) -> float:
    """4 binomial standard errors (a false alarm about once in 16,000 checks), at least 1/n."""
    return max(4 * math.sqrt(p * (1 - p) / n), 1 / n)


def test_each_sequence_drops_at_its_own_rate_unnamed_never():
    drop = SequenceDropout({"bravo": 0.4, "flair": 0.1}, sequences=SEQS, seed=0)  # an alias is a name too
    assert drop.p == (0.4, 0.0, 0.0, 0.1)
    dropped = ~_draws(drop, np.ones(4, bool))
    # Two sequences can never drop, so "everything dropped" never happens and each named
    # sequence drops at exactly its p, independently of the other.
    for i, p in enumerate(drop.p):
        assert dropped[:, i].mean() == pytest.approx(p, abs=_tolerance(p)), SEQS[i]
    assert not dropped[:, 1].any() and not dropped[:, 2].any()
    both = (dropped[:, 0] & dropped[:, 3]).mean()
    assert both == pytest.approx(0.4 * 0.1, abs=_tolerance(0.04))


def test_never_drop_everything_shapes_the_rates():
    p = [0.9, 0.8, 0.5, 0.2]
    drop = SequenceDropout(dict(zip(SEQS, p, strict=True)), sequences=SEQS, seed=1)
    keeps = _draws(drop, np.ones(4, bool))
    assert keeps.any(axis=1).all()  # never an all-zero input
    rates, none = _enumerated_drop_rates(p)
    # p_i minus the all-dropped mass moved to "none": 0.9 - 0.072 = 0.828, ...
    assert rates[0] == pytest.approx(0.9 - 0.9 * 0.8 * 0.5 * 0.2)
    for i in range(4):
        assert (~keeps[:, i]).mean() == pytest.approx(rates[i], abs=_tolerance(rates[i])), SEQS[i]
    assert keeps.all(axis=1).mean() == pytest.approx(none, abs=_tolerance(none))


def test_a_sequence_missing_on_disk_is_never_kept_and_the_rule_covers_the_present_ones():
    drop = SequenceDropout({"t1_gre_post": 0.6, "t1_fse_pre": 0.9, "flair": 0.6}, sequences=SEQS, seed=2)
    present = np.array([True, False, True, True])  # t1_fse_pre missing on disk
    keeps = _draws(drop, present)
    assert not keeps[:, 1].any()
    rates, _ = _enumerated_drop_rates([0.6, 0.0, 0.6])  # the present ones: t1_fse_post never drops
    for col, rate in zip((0, 2, 3), rates, strict=True):
        assert (~keeps[:, col]).mean() == pytest.approx(rate, abs=_tolerance(rate))
    # Only the present ones with p > 0: two sequences that can drop never drop everything.
    lone = np.array([True, False, False, True])
    assert _draws(SequenceDropout({"t1_gre_post": 1.0, "flair": 1.0}, sequences=SEQS, seed=3), lone, 200)[:, [0, 3]].all()


def test_one_p_for_all_is_the_same_stream_and_zeros_are_no_dropout():
    a, b = SequenceDropout(0.25, seed=4), SequenceDropout([0.25] * 4, seed=4)
    present = np.ones(4, bool)
    assert all((a.draw(present) == b.draw(present)).all() for _ in range(500))
    zeros = SequenceDropout({"flair": 0.0}, sequences=SEQS, seed=5)
    before = zeros.rng.bit_generator.state
    assert _draws(zeros, present, 50).all()
    assert zeros.rng.bit_generator.state == before  # nothing drawn: exactly p = 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"p": {"flair": 0.1}}, "need the study's sequences"),
    ({"p": {"t2": 0.1}, "sequences": SEQS}, r"names \['t2'\], not among"),
    ({"p": {"flair": 1.5}, "sequences": SEQS}, r"in \[0, 1\]"),
    ({"p": [0.1, -0.2, 0.0, 0.0]}, r"in \[0, 1\]"),
    ({"p": {"flair": 0.1}, "sequences": SEQS, "mode": "uniform"}, "uniform' ignores p"),
])
def test_bad_per_sequence_probabilities(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SequenceDropout(**kwargs)


def test_one_probability_per_sequence_of_the_sample():
    with pytest.raises(ValueError, match="3 per-sequence dropout probabilities for a sample of 4"):
        SequenceDropout([0.1, 0.2, 0.3], seed=0).draw(np.ones(4, bool))
