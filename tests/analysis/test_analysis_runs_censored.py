"""Which sequence a study's headline claims censor: the study's ``eval.censor``, not a
constant."""

from __future__ import annotations

from seqablate.analysis.runs import Run, study_censored
from seqablate.analysis.tables import table_censored


def _run(i: int, **params: str) -> Run:
    return Run(f"r{i}", f"run{i}", "FINISHED", params=params)


def test_study_censored_follows_eval_censor():
    # what most runs censored first, among the protocol's sequences
    runs = [_run(0, **{"eval.censor": "flair,t1_fse_pre"}), _run(1, **{"eval.censor": "flair"}),
            _run(2, **{"eval.censor": "t1_gre_post"})]
    assert study_censored(runs) == "flair"
    # nothing named (an each_sequence study logs an empty list): the config's default, the paper's BRAVO
    assert study_censored([_run(0, **{"eval.censor": ""}), _run(1)]) == "t1_gre_post"
    # a protocol without BRAVO and a name it does not have: its first sequence
    other = {"data.sequences": "t2,flair"}
    assert study_censored([_run(0, **other, **{"eval.censor": "t1_gre_post"})]) == "t2"


def test_table_censored_titles_the_studys_sequence():
    runs = [_run(0, **{"eval.censor": "flair", "model.integration": "input", "train.dropout_p": "0.25"})]
    assert "flair" in table_censored(runs, dropout=True).title
