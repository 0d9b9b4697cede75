"""Each trial's patient split follows its own config; spaces that cannot be planned are refused.

A grid that varies ``data.split_seed`` must train each point on the split its params name (all
trials once shared the base config's split, so the logged ``data.split_seed`` lied). The
expected splits are computed here with :func:`plan_split` on each point's own config.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trainables.conftest import tiny_trial


class _Space:
    def __init__(self, kind: str) -> None:
        self.kind, self.name = kind, "t"


def test_each_split_seed_of_a_grid_gets_its_own_split(cohorts: dict[str, Path]) -> None:
    from seqablate.config import StudyConfig, TrialConfig, with_overrides
    from seqablate.trainables.cohort import check_cohorts, plan_split
    from seqablate.trainables.driver import StudyContext, plan_splits, split_key

    base = TrialConfig.model_validate(tiny_trial(cohorts["stanford"]))
    cfg = StudyConfig(name="s", base=base)
    patients, split = check_cohorts(base)
    points = [{"data.split_seed": s, "train.seed": 0} for s in (0, 1, 2)]
    splits = plan_splits(cfg, _Space("grid"), points, patients, split)
    ctx = StudyContext(name="s", base=base.model_dump(mode="json"), split=split.as_dict(),
                       study_ref=("u", "1", "r"), train_storage="/tmp/x", splits=splits)
    seen = []
    for p in points:
        trial = with_overrides(base, p)
        expect = plan_split(trial, patients).as_dict()
        assert ctx.split_for(trial) == expect
        seen.append(tuple(expect["test"]))
    assert len(set(seen)) > 1  # the seeds do split differently on these 6 patients
    assert ctx.split_for(base) == split.as_dict() and split_key(base) in splits


def test_a_search_that_varies_the_split_and_a_space_that_varies_the_cohort_are_refused(
    cohorts: dict[str, Path],
) -> None:
    from seqablate.config import StudyConfig, TrialConfig
    from seqablate.trainables.cohort import check_cohorts
    from seqablate.trainables.driver import StudySetupError, plan_splits

    base = TrialConfig.model_validate(tiny_trial(cohorts["stanford"]))
    cfg = StudyConfig(name="s", base=base)
    patients, split = check_cohorts(base)
    with pytest.raises(StudySetupError, match=r"search that varies data\.fold.*only a grid"):
        plan_splits(cfg, _Space("search"), [{"data.fold": 0, "data.folds": 3}], patients, split)
    with pytest.raises(StudySetupError, match=r"varies data\.cohort"):
        plan_splits(cfg, _Space("grid"), [{"data.cohort": "/elsewhere"}], patients, split)


def test_select_best_without_validation_patients_is_refused_at_config_time() -> None:
    from seqablate.config import ConfigError, TrialConfig, with_overrides

    with pytest.raises((ConfigError, ValueError), match=r"train\.select: best with no validation patients.*select: last"):
        with_overrides(TrialConfig(), {"data.val_patients": 0})
    with pytest.raises((ConfigError, ValueError), match=r"train\.select: best with no validation patients"):
        with_overrides(TrialConfig(), {"data.val_fraction": 0.0, "data.val_min_lesions": 0})
    ok = with_overrides(TrialConfig(), {"data.val_patients": 0, "train.select": "last"})
    assert ok.train.select == "last"
