from __future__ import annotations

from pathlib import Path

import pytest

from seqablate.search_spaces import (
    Space,
    SpaceError,
    get_space,
    list_spaces,
    register_space,
    run_name,
    validate_space,
)


def test_list_spaces_one_line_each() -> None:
    spaces = list_spaces()
    assert list(spaces)[:4] == ["paper-table1", "paper-table2", "dropout-sweep", "hpo"]
    for name, desc in spaces.items():
        assert desc and "\n" not in desc, name
    assert get_space("hpo").kind == "search" and get_space("paper-table1").kind == "grid"


def test_data_scaling_grid_is_sizes_by_dropout() -> None:
    from seqablate.config import TrialConfig

    space = get_space("data-scaling")
    pts = [(p["data.train_fraction"], p["train.dropout_p"]) for p in space.points]
    assert pts == [(f, d) for f in (0.25, 0.5, 1.0) for d in (0.0, 0.25)]
    validate_space(space, TrialConfig(), seeds=1)  # every point a valid trial config


def test_duplicate_name_refused() -> None:
    with pytest.raises(SpaceError, match="'paper-table1' is already registered"):
        register_space(Space("paper-table1", "again", points=({},)))


def test_space_needs_exactly_one_body() -> None:
    with pytest.raises(SpaceError, match="exactly one of points"):
        Space("x", "neither")
    with pytest.raises(SpaceError, match="one line"):
        Space("x", "two\nlines", points=({},))
    with pytest.raises(SpaceError, match="is a search"):
        get_space("hpo").grid()
    with pytest.raises(SpaceError, match="is a grid"):
        get_space("paper-table1").search_fn()


def test_unknown_name_lists_spaces_and_suggests() -> None:
    with pytest.raises(SpaceError) as info:
        get_space("paper-tabel1")
    msg = str(info.value)
    assert "unknown search space 'paper-tabel1' (did you mean 'paper-table1'?)" in msg
    for name in list_spaces():
        assert name in msg


def _write(tmp_path: Path, text: str, name: str = "myspace.py") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_user_grid_file(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        'DESCRIPTION = "two learning rates"\n'
        'SPACE = [{"train.lr": 1e-3}, {"train.lr": 1e-4}]\n',
    )
    space = get_space(str(p))
    assert (space.name, space.description, space.kind, space.source) == ("myspace", "two learning rates", "grid", str(p))
    assert space.grid(2) == [
        {"train.lr": 1e-3, "train.seed": 0}, {"train.lr": 1e-3, "train.seed": 1},
        {"train.lr": 1e-4, "train.seed": 0}, {"train.lr": 1e-4, "train.seed": 1},
    ]
    assert len(validate_space(space)) == 2


def test_user_search_file(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "def SPACE(trial):\n"
        "    return {'train.lr': trial.suggest_float('train.lr', 1e-4, 1e-2, log=True)}\n",
        "lr_search.py",
    )
    space = get_space(p)
    assert space.kind == "search"
    points = validate_space(space, samples=5)
    assert len(points) == 5 and all(1e-4 <= pt["train.lr"] <= 1e-2 for pt in points)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("X = 1\n", "defines no SPACE"),
        ("SPACE = 3\n", "SPACE must be a list of override dicts or a define-by-run function, got int"),
        ("SPACE = []\n", "SPACE is an empty list"),
        ("SPACE = [{'train.lr': 1e-3}, 'oops']\n", r"SPACE\[1\] must be a dict of dotted config keys"),
        ("SPACE = [{\n", "importing it failed: SyntaxError"),
        ("import nonexistent_pkg_xyz\n", "importing it failed: ModuleNotFoundError"),
    ],
)
def test_bad_user_files(tmp_path: Path, text: str, pattern: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(SpaceError, match=pattern) as info:
        get_space(str(p))
    assert str(p) in str(info.value)


def test_missing_or_wrong_kind_of_file(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="search-space file not found"):
        get_space(str(tmp_path / "nope.py"))
    txt = _write(tmp_path, "SPACE = []", "space.txt")
    with pytest.raises(SpaceError, match=r"must be a Python file \(.py\)"):
        get_space(str(txt))


def test_validate_space_names_point_and_field(tmp_path: Path) -> None:
    bad_key = get_space(str(_write(tmp_path, "SPACE = [{'train.lr': 1e-3}, {'model.fusoin': 'mean'}]\n", "a.py")))
    with pytest.raises(SpaceError, match=r"(?s)point 1 \(fusoinmean-seed0\).*model.fusoin: unknown field \(did you mean 'fusion'\?\)"):
        validate_space(bad_key)
    bad_value = get_space(str(_write(tmp_path, "SPACE = [{'train.dropout_p': 1.5}]\n", "b.py")))
    with pytest.raises(SpaceError, match=r"(?s)point 0 \(p1.5-seed0\).*train.dropout_p: .*\(got 1.5\)"):
        validate_space(bad_value)
    bad_combo = get_space(str(_write(tmp_path, "SPACE = [{'model.integration': 'input', 'model.sharing': 'shared'}]\n", "c.py")))
    with pytest.raises(SpaceError, match=r"(?s)point 0 \(input-seed0\).*invalid model combination:\n  input-no-sharing"):
        validate_space(bad_combo)
    dupes = get_space(str(_write(tmp_path, "SPACE = [{'train.lr': 1e-3}, {'train.lr': 0.001}]\n", "d.py")))
    with pytest.raises(SpaceError, match=r"point 1 \(lr1e-3-seed0\) repeats point 0"):
        validate_space(dupes)
    # points that name their seeds are distinct trials; with --seeds 2 they overlap and are refused
    seeded = get_space(str(_write(tmp_path, "SPACE = [{'train.lr': 1e-3, 'train.seed': s} for s in (1, 2)]\n", "s.py")))
    assert [run_name(p) for p in validate_space(seeded)] == ["lr1e-3-seed1", "lr1e-3-seed2"]
    with pytest.raises(SpaceError, match=r"point 2 \(lr1e-3-seed2\) repeats point 1"):
        validate_space(seeded, seeds=2)
    failing = get_space(str(_write(tmp_path, "def SPACE(trial):\n    raise KeyError('k')\n", "e.py")))
    with pytest.raises(SpaceError, match="sample 0: the define-by-run function failed: KeyError"):
        validate_space(failing)


def test_only_registered_helpers_are_left_out_of_a_search_trials_overrides(tmp_path: Path) -> None:
    """A parameter without a '.' is folded away only when it is a helper: one the space's
    function declares (``helper_params``) or a dropout p of a known sequence. A misspelt
    config key (``lr`` for ``train.lr``) is refused, naming it, never silently ignored."""
    from seqablate.config import ConfigError, TrialConfig, with_overrides
    from seqablate.search_spaces import BUILTIN_HELPERS, helper_params
    from seqablate.trainables.trial_names import trial_overrides

    misspelt = get_space(_write(tmp_path, "def SPACE(trial):\n"
                                          "    return {'lr': trial.suggest_float('lr', 1e-4, 1e-2, log=True)}\n",
                                "misspelt.py"))
    with pytest.raises(SpaceError, match=r"sample 0: Optuna parameter\(s\) \['lr'\] are neither config keys") as info:
        validate_space(misspelt, samples=2)
    assert "helper_params" in str(info.value)
    # At run time too: the trial's overrides keep it, and applying them names it.
    overrides = trial_overrides({"lr": 1e-3, "train.steps": 3})
    assert overrides == {"lr": 1e-3, "train.steps": 3}
    with pytest.raises(ConfigError, match=r"lr: unknown field"):
        with_overrides(TrialConfig(), overrides)

    declared = get_space(_write(tmp_path, (
        "def SPACE(trial):\n"
        "    w = trial.suggest_float('lr_scale', 1.0, 10.0)\n"
        "    return {'train.lr': 1e-4 * w}\n"
        "SPACE.helper_params = ('lr_scale',)\n"), "declared.py"))
    points = validate_space(declared, samples=3)
    assert all(set(pt) == {"train.lr"} and 1e-4 <= pt["train.lr"] <= 1e-3 for pt in points)
    fn = declared.search_fn(TrialConfig())
    assert helper_params(fn) == BUILTIN_HELPERS | {"lr_scale"}
    assert trial_overrides({"lr_scale": 2.0, "train.lr": 2e-4}, helper_params(fn)) == {"train.lr": 2e-4}
    # The built-in helpers: a dropout p per known sequence, and nothing that merely looks like one.
    assert trial_overrides({"dropout_p_flair": 0.2, "train.dropout_p": {"flair": 0.2}}) == {
        "train.dropout_p": {"flair": 0.2}}
    assert "dropout_p_flare" in trial_overrides({"dropout_p_flare": 0.2})
    assert helper_params(get_space("hpo-per-sequence").search_fn(TrialConfig())) == BUILTIN_HELPERS

    bad = get_space(_write(tmp_path, ("def SPACE(trial):\n    return {}\nSPACE.helper_params = ['train.lr']\n"),
                           "bad_helper.py"))
    with pytest.raises(SpaceError, match=r"\['train.lr'\] are not helper names"):
        validate_space(bad, samples=1)
