"""Pulse-sequence vocabulary: canonical names, the aliases each cohort layout uses, subsets.

Channel (sequence) *names* drive behaviour everywhere in seqablate, never indices: a study
declares an ordered list of canonical names (``sequences``), and that order fixes the S axis
of every ``image[S, K, H, W]`` tensor. Files on disk are mapped to canonical names through the
alias tables below.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Iterable, Mapping, Sequence

#: Canonical pulse-sequence names and what they are.
CANONICAL: dict[str, str] = {
    "t1_gre_post": "post-contrast 3D T1 IR-FSPGR gradient echo ('BRAVO')",
    "t1_fse_pre": "pre-contrast 3D T1 fast spin echo ('CUBE pre')",
    "t1_fse_post": "post-contrast 3D T1 fast spin echo ('CUBE post')",
    "flair": "T2 fluid-attenuated inversion recovery",
    "t1_pre": "pre-contrast T1 (sequence type unspecified)",
    "t1_post": "post-contrast T1 (sequence type unspecified)",
    "t2": "T2-weighted",
    "t1_subtraction": "post- minus pre-contrast T1 subtraction image",
}

#: The paper's four sequences, in the paper's order (BRAVO, CUBE pre, CUBE post, FLAIR).
PAPER_SEQUENCES: tuple[str, ...] = ("t1_gre_post", "t1_fse_pre", "t1_fse_post", "flair")

#: Name of the lesion-mask file in every layout that stores masks beside the sequences.
MASK_NAME = "seg"

#: Per-layout alias tables: file stem (as written by that release) -> canonical name.
#: Lookup is case-insensitive. Canonical names are always accepted by the ``nifti`` layout.
LAYOUT_ALIASES: dict[str, dict[str, str]] = {
    # Generic one-folder-per-patient NIfTI layout: common vendor nicknames.
    "nifti": {
        "bravo": "t1_gre_post",
        "fspgr": "t1_gre_post",
        "cube_pre": "t1_fse_pre",
        "cube_post": "t1_fse_post",
        "t1_gd": "t1_fse_post",
        "t2f": "flair",
        "t2_flair": "flair",
    },
    # The public NIfTI copy of the Stanford BrainMetShare data names its files
    # bravo, t1_pre, t1_gd, flair, seg; there ``t1_pre`` is the CUBE (FSE) pre-contrast scan.
    # A nifti patient folder that contains ``bravo`` or ``t1_gd`` is read with this table.
    "nifti-stanford": {
        "bravo": "t1_gre_post",
        "t1_pre": "t1_fse_pre",
        "t1_gd": "t1_fse_post",
        "flair": "flair",
    },
    # BrainMetShare: numbered sub-folders.
    "brainmetshare": {
        "0": "t1_gre_post",
        "1": "t1_fse_pre",
        "2": "t1_fse_post",
        "3": "flair",
    },
    # BraTS 2023 METS: <case>-{t1n,t1c,t2w,t2f,seg}.nii.gz
    "brats-mets": {
        "t1n": "t1_pre",
        "t1c": "t1_post",
        "t2w": "t2",
        "t2f": "flair",
    },
    # UCSF-BMSR: <study>_{T1pre,T1post,FLAIR,subtraction,seg}.nii.gz
    "ucsf-bmsr": {
        "t1pre": "t1_pre",
        "t1post": "t1_post",
        "flair": "flair",
        "subtraction": "t1_subtraction",
    },
    # nnU-Net v2 raw datasets: dataset.json's channel_names, as MRI datasets usually name them
    # (canonical names, as ``cohort export-nnunet`` writes them, are accepted as well).
    "nnunet": {
        "t1": "t1_pre",
        "t1w": "t1_pre",
        "t1n": "t1_pre",
        "t1ce": "t1_post",
        "t1c": "t1_post",
        "t1gd": "t1_post",
        "t2": "t2",
        "t2w": "t2",
        "flair": "flair",
        "t2f": "flair",
        "t2_flair": "flair",
    },
}

#: (post, pre) contrast pairs the ``subtract`` fusion can use, in order of preference.
CONTRAST_PAIRS: tuple[tuple[str, str], ...] = (
    ("t1_fse_post", "t1_fse_pre"),
    ("t1_post", "t1_pre"),
)


class UnknownSequenceError(ValueError):
    """A sequence name that is neither canonical nor a known alias."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def canonical(name: str, layout: str | None = None) -> str:
    """Map a sequence name (canonical, or an alias of ``layout``) to its canonical name.

    Lookup is case-insensitive. Raises :class:`UnknownSequenceError` naming the value and
    the closest valid name when nothing matches.
    """
    key = name.strip().lower()
    if layout is not None:
        if layout not in LAYOUT_ALIASES:
            raise UnknownSequenceError(
                f"unknown layout {layout!r}{suggest(layout, LAYOUT_ALIASES)}; "
                f"known: {sorted(LAYOUT_ALIASES)}"
            )
        table = LAYOUT_ALIASES[layout]
        if key in table:
            return table[key]
    if key in CANONICAL:
        return key
    for table in LAYOUT_ALIASES.values():
        # Unambiguous nicknames are accepted anywhere (e.g. 'bravo' on the command line).
        if key in table and not key.isdigit():
            return table[key]
    valid = list(CANONICAL) + [a for t in LAYOUT_ALIASES.values() for a in t]
    raise UnknownSequenceError(
        f"unknown pulse sequence {name!r}{suggest(key, valid)}; canonical names: {list(CANONICAL)}"
    )


def validate_sequences(names: Sequence[str]) -> tuple[str, ...]:
    """Canonicalise an ordered sequence list; refuse empties and duplicates.

    Returns the canonical names in the given order.
    """
    if len(names) == 0:
        raise ValueError("the sequence list is empty: a study needs at least one pulse sequence")
    out = tuple(canonical(n) for n in names)
    dupes = sorted({n for n in out if out.count(n) > 1})
    if dupes:
        raise ValueError(f"sequence list {list(names)} names {dupes} more than once")
    return out


def subsets(sequences: Sequence[str]) -> list[tuple[str, ...]]:
    """All non-empty subsets of ``sequences`` (2^S - 1 of them), each in study order.

    Ordered by size, largest first (the full protocol first), then lexicographically by
    position, so tables list the full protocol on top.
    """
    seqs = tuple(sequences)
    out: list[tuple[str, ...]] = []
    for r in range(len(seqs), 0, -1):
        out.extend(itertools.combinations(seqs, r))
    return out


def subset_label(subset: Iterable[str], sequences: Sequence[str]) -> str:
    """A stable, readable label for a subset, e.g. ``t1_fse_pre+flair`` (study order)."""
    chosen = set(subset)
    return "+".join(s for s in sequences if s in chosen)


def contrast_pair(sequences: Sequence[str]) -> tuple[str, str] | None:
    """The first (post, pre) pair of :data:`CONTRAST_PAIRS` fully inside ``sequences``."""
    have = set(sequences)
    for post, pre in CONTRAST_PAIRS:
        if post in have and pre in have:
            return post, pre
    return None


def invert_aliases(table: Mapping[str, str]) -> dict[str, list[str]]:
    """canonical name -> aliases that map to it (for help texts and error messages)."""
    out: dict[str, list[str]] = {}
    for alias, canon in table.items():
        out.setdefault(canon, []).append(alias)
    return out
