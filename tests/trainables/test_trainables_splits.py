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
    from seqablate.evaluation.cohort import check_cohorts, plan_split
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
    from seqablate.evaluation.cohort import check_cohorts
    from seqablate.trainables.driver import StudySetupError, plan_splits

    base = TrialConfig.model_validate(tiny_trial(cohorts["stanford"]))
    cfg = StudyConfig(name="s", base=base)
    patients, split = check_cohorts(base)
    with pytest.raises(StudySetupError, match=r"search that varies data\.fold.*only a grid"):
        plan_splits(cfg, _Space("search"), [{"data.fold": 0, "data.folds": 3}], patients, split)
    with pytest.raises(StudySetupError, match=r"search that varies data\.cohort"):
        plan_splits(cfg, _Space("search"), [{"data.cohort": "/elsewhere"}], patients, split)
    with pytest.raises(StudySetupError, match=r"point .*: data\.cohort /elsewhere: no such folder"):
        plan_splits(cfg, _Space("grid"), [{"data.cohort": "/elsewhere"}], patients, split)


def test_a_grid_over_cohorts_plans_each_cohorts_split(cohorts: dict[str, Path], tmp_path: Path) -> None:
    """Cohorts that differ in one phantom parameter (same patients otherwise): each grid point
    gets its own cohort's split, planned (and the cohort preprocessed) before Ray starts."""
    from seqablate.config import StudyConfig, TrialConfig, with_overrides
    from seqablate.data import make_phantom_cohort
    from seqablate.evaluation.cohort import check_cohorts, load_cached, plan_split
    from seqablate.trainables.driver import StudyContext, plan_splits

    other = make_phantom_cohort(tmp_path / "misreg2", site="stanford", patients=6, seed=0, shape=(32, 32, 12),
                                misregistration_mm=2.0)
    base = TrialConfig.model_validate(tiny_trial(cohorts["stanford"]))
    cfg = StudyConfig(name="s", base=base)
    patients, split = check_cohorts(base)
    points = [{"data.cohort": str(c), "train.seed": 0} for c in (cohorts["stanford"], other)]
    splits = plan_splits(cfg, _Space("grid"), points, patients, split)
    assert len(splits) == 2
    ctx = StudyContext(name="s", base=base.model_dump(mode="json"), split=split.as_dict(),
                       study_ref=("u", "1", "r"), train_storage="/tmp/x", splits=splits)
    trial = with_overrides(base, points[1])
    cached = load_cached(trial.data)  # its patients, as its trial reads them
    assert ctx.split_for(trial) == plan_split(trial, cached).as_dict()
    assert ctx.split_for(with_overrides(base, points[0])) == split.as_dict()


def test_select_best_without_validation_patients_is_refused_at_config_time() -> None:
    from seqablate.config import ConfigError, TrialConfig, with_overrides

    with pytest.raises((ConfigError, ValueError), match=r"train\.select: best with no validation patients.*select: last"):
        with_overrides(TrialConfig(), {"data.val_patients": 0})
    with pytest.raises((ConfigError, ValueError), match=r"train\.select: best with no validation patients"):
        with_overrides(TrialConfig(), {"data.val_fraction": 0.0, "data.val_min_lesions": 0})
    ok = with_overrides(TrialConfig(), {"data.val_patients": 0, "train.select": "last"})
    assert ok.train.select == "last"


def test_training_subsets_are_nested_seeded_and_leave_validation_and_test_alone() -> None:
    """data.train_patients / train_fraction: the first N of one ordering of the training split
    seeded by data.split_seed, checked against that ordering recomputed here."""
    from types import SimpleNamespace

    import numpy as np

    from seqablate.config import TrialConfig, with_overrides
    from seqablate.evaluation.cohort import plan_split, training_subset

    train = tuple(f"p{i:02d}" for i in range(20))
    ids = sorted(train)
    order = [ids[i] for i in np.random.default_rng([3, 0x7A1E]).permutation(20)]
    base = with_overrides(TrialConfig(), {"data.split_seed": 3})
    sets = {}
    for ov in ({"data.train_patients": 5}, {"data.train_fraction": 0.5}, {"data.train_fraction": 0.26}, {}):
        got = training_subset(train, with_overrides(base, ov))
        assert list(got) == sorted(got)  # the split's order kept
        sets[tuple(ov.items())] = set(got)
    assert sets[(("data.train_patients", 5),)] == set(order[:5])
    assert sets[(("data.train_fraction", 0.5),)] == set(order[:10])
    assert len(sets[(("data.train_fraction", 0.26),)]) == 5  # round(5.2)
    assert sets[()] == set(train)
    other = training_subset(train, with_overrides(TrialConfig(), {"data.split_seed": 4, "data.train_patients": 5}))
    assert other != sets[(("data.train_patients", 5),)]  # another split seed, another ordering

    # Through plan_split on a cohort: validation and test do not move; too many is an error.
    patients = [SimpleNamespace(patient_id=f"p{i:02d}", mask=1, lesions=3) for i in range(24)]
    cfg = TrialConfig.model_validate({"data": {"val_patients": 4, "test_fraction": 0.25, "cohort": "/c/stanford"}})
    full = plan_split(cfg, patients)
    half = plan_split(with_overrides(cfg, {"data.train_fraction": 0.5}), patients)
    assert (half.val, half.test) == (full.val, full.test) and len(half.train) == 7 and set(half.train) < set(full.train)
    with pytest.raises(ValueError, match=r"/c/stanford: data\.train_patients=15 but the training split has 14"):
        plan_split(with_overrides(cfg, {"data.train_patients": 15}), patients)
    with pytest.raises(ValueError, match="train_patients .* and data.train_fraction .* both set"):
        with_overrides(cfg, {"data.train_patients": 3, "data.train_fraction": 0.5})
