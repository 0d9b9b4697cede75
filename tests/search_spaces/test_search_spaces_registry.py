from __future__ import annotations

from pathlib import Path

import pytest

from seqablate.search_spaces import (
    Space,
    SpaceError,
    get_space,
    list_spaces,
    register_space,
    validate_space,
)


def test_list_spaces_one_line_each() -> None:
    spaces = list_spaces()
    assert list(spaces)[:4] == ["paper-table1", "paper-table2", "dropout-sweep", "hpo"]
    for name, desc in spaces.items():
        assert desc and "\n" not in desc, name
    assert get_space("hpo").kind == "search" and get_space("paper-table1").kind == "grid"


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
    failing = get_space(str(_write(tmp_path, "def SPACE(trial):\n    raise KeyError('k')\n", "e.py")))
    with pytest.raises(SpaceError, match="sample 0: the define-by-run function failed: KeyError"):
        validate_space(failing)
