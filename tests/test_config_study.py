from __future__ import annotations

from pathlib import Path

import pytest

from seqablate.config import ConfigError, StudyConfig, TrialConfig, load_yaml, parse, to_yaml


def test_the_default_study_is_one_that_runs() -> None:
    """Defaults that fit together: the default space exists and every point of it is a valid
    trial on the default base, one run per point (one seed), nothing scheduled away; and the
    defaults survive a YAML round trip."""
    from seqablate.search_spaces import get_space, validate_space

    s = StudyConfig()
    points = validate_space(get_space(s.space), s.base, seeds=s.seeds)
    assert points and all(p["train.seed"] == 0 for p in points)
    assert len({tuple(sorted((k, str(v)) for k, v in p.items())) for p in points}) == len(points)
    assert s.scheduler == "none" and s.base == TrialConfig()
    import yaml

    assert parse(StudyConfig, yaml.safe_load(to_yaml(s))) == s


def test_cohort_and_external_flow_into_base() -> None:
    s = parse(StudyConfig, {"cohort": "/data/stanford", "external": {"oslo": "/data/oslo"}})
    assert s.base.data.cohort == "/data/stanford"
    assert s.base.eval.external == {"oslo": "/data/oslo"}
    # ... and back: a cohort given only in the base is the study's cohort.
    s2 = parse(StudyConfig, {"base": {"data": {"cohort": "/c"}, "eval": {"external": {"a": "/a"}}},
                             "external": {"b": "/b"}})
    assert s2.cohort == "/c"
    assert s2.external == {"a": "/a", "b": "/b"} == s2.base.eval.external


def test_conflicting_cohorts_refused() -> None:
    with pytest.raises(ConfigError, match=r"cohort '/x' differs from base.data.cohort '/y'"):
        parse(StudyConfig, {"cohort": "/x", "base": {"data": {"cohort": "/y"}}})
    with pytest.raises(ConfigError, match=r"external cohorts \['oslo'\] differ"):
        parse(StudyConfig, {"external": {"oslo": "/1"}, "base": {"eval": {"external": {"oslo": "/2"}}}})
    # Equal values in both places are fine.
    assert parse(StudyConfig, {"cohort": "/x", "base": {"data": {"cohort": "/x"}}}).cohort == "/x"


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        ({"schedular": "asha"}, r"schedular: unknown field \(did you mean 'scheduler'\?\)"),
        ({"base": {"model": {"fusoin": "mean"}}}, r"base.model.fusoin: unknown field \(did you mean 'fusion'\?\)"),
        ({"scheduler": "hyperband"}, r"scheduler: .*'none' or 'asha'.*\(got 'hyperband'\)"),
        ({"seeds": 0}, r"seeds: .*greater than or equal to 1 \(got 0\)"),
        ({"num_samples": 0}, r"num_samples: .*\(got 0\)"),
        ({"max_concurrent": 0}, r"max_concurrent: .*\(got 0\)"),
        ({"gpus_per_worker": -1}, r"gpus_per_worker: .*\(got -1\)"),
        ({"cpus_per_worker": 0}, r"cpus_per_worker: .*\(got 0\)"),
        ({"name": "a/b"}, r"name: .*without slashes.*'a/b'"),
        ({"name": ""}, r"name: .*non-empty"),
        ({"external": {"os lo": "/p"}}, r"external: .*\['os lo'\]"),
        ({"base": 3}, r"base: .*TrialConfig \(got 3\)"),
    ],
)
def test_bad_values_name_the_field(raw: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        parse(StudyConfig, raw)


def test_yaml_round_trip(tmp_path: Path) -> None:
    s = parse(
        StudyConfig,
        {"name": "dropout", "space": "dropout-sweep", "seeds": 3, "scheduler": "asha",
         "cohort": "/c", "smoke": True, "base": {"train": {"steps": 10}}},
    )
    p = tmp_path / "study.yaml"
    p.write_text(to_yaml(s))
    back = load_yaml(p, StudyConfig)
    assert back == s
    assert back.base.train.steps == 10 and back.base.data.cohort == "/c"
