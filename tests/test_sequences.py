from __future__ import annotations

import pytest

from seqablate.sequences import (
    PAPER_SEQUENCES,
    UnknownSequenceError,
    canonical,
    contrast_pair,
    subset_label,
    subsets,
    validate_sequences,
)


@pytest.mark.parametrize(
    ("name", "layout", "expected"),
    [
        ("bravo", "nifti", "t1_gre_post"),
        ("t1_pre", "nifti-stanford", "t1_fse_pre"),  # Stanford NIfTI copy: t1_pre is CUBE pre
        ("t1_pre", "nifti", "t1_pre"),  # elsewhere it is the canonical name
        ("t1_gd", "nifti-stanford", "t1_fse_post"),
        ("0", "brainmetshare", "t1_gre_post"),
        ("3", "brainmetshare", "flair"),
        ("t2f", "brats-mets", "flair"),
        ("t1c", "brats-mets", "t1_post"),
        ("T1post", "ucsf-bmsr", "t1_post"),
        ("FLAIR", None, "flair"),
    ],
)
def test_canonical_aliases(name: str, layout: str | None, expected: str) -> None:
    assert canonical(name, layout) == expected


def test_unknown_sequence_names_value_and_suggests() -> None:
    with pytest.raises(UnknownSequenceError, match=r"'fliar'.*did you mean 'flair'"):
        canonical("fliar")
    with pytest.raises(UnknownSequenceError, match="unknown layout 'brats'"):
        canonical("t1n", "brats")


def test_validate_sequences_rejects_duplicates_and_empty() -> None:
    assert validate_sequences(["bravo", "flair"]) == ("t1_gre_post", "flair")
    with pytest.raises(ValueError, match="more than once"):
        validate_sequences(["bravo", "t1_gre_post"])
    with pytest.raises(ValueError, match="empty"):
        validate_sequences([])


def test_subsets_counts_and_order() -> None:
    subs = subsets(PAPER_SEQUENCES)
    assert len(subs) == 2**4 - 1
    assert subs[0] == PAPER_SEQUENCES  # full protocol first
    assert len(set(subs)) == len(subs)
    sizes = [len(s) for s in subs]
    assert sizes == sorted(sizes, reverse=True)
    # by hand: C(4,1) singletons at the end, in study order
    assert subs[-4:] == [(s,) for s in PAPER_SEQUENCES]
    assert subset_label(("flair", "t1_gre_post"), PAPER_SEQUENCES) == "t1_gre_post+flair"


def test_contrast_pair() -> None:
    assert contrast_pair(PAPER_SEQUENCES) == ("t1_fse_post", "t1_fse_pre")
    assert contrast_pair(["t1_pre", "t1_post", "flair"]) == ("t1_post", "t1_pre")
    assert contrast_pair(["t1_gre_post", "flair"]) is None
