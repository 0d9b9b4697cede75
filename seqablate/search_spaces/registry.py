"""The registry of named search spaces, user space files, and space validation.

A :class:`Space` is either a *grid* (a list of override dicts, dotted keys for
:func:`seqablate.config.with_overrides`) or a *search* (an Optuna define-by-run function
``(trial: optuna.Trial) -> dict`` returning the trial's override dict). Named spaces are
registered once at import (duplicates are refused, like torchvision's model registry); a user
can also pass the path of a Python file that defines ``SPACE`` (and optionally a one-line
``DESCRIPTION``). A search's Optuna parameters named with a '.' are config keys. A name
without one is a *helper* only when it is registered as one (:func:`helper_params`): the
function folds it into a returned override and it is never a config key (``hpo-per-sequence``
samples ``dropout_p_<sequence>`` and returns ``train.dropout_p`` as their mapping). Any other
name without a '.' (``lr`` for ``train.lr``) stays in the trial's overrides, so it is refused
as an unknown field, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seqablate.config import ConfigError, TrialConfig, with_overrides
from seqablate.naming import expand_seeds, run_name, trial_key
from seqablate.search_spaces.rules import model_problems
from seqablate.sequences import CANONICAL

if TYPE_CHECKING:  # optuna is only needed when a search is actually sampled
    import optuna

Overrides = dict[str, Any]
DefineByRun = Callable[["optuna.Trial"], Overrides]


#: Helper names every study accepts without a declaration: one dropout probability per known
#: sequence (``dropout_p_<canonical sequence>``, what ``hpo-per-sequence`` samples), so trial
#: names and overrides read the same wherever a Tune config is seen without its space.
BUILTIN_HELPERS: frozenset[str] = frozenset(f"dropout_p_{s}" for s in CANONICAL)


def helper_params(fn: Any = None) -> frozenset[str]:
    """The Optuna parameter names that are helpers for the define-by-run function ``fn``.

    :data:`BUILTIN_HELPERS` plus the names ``fn`` declares in an attribute ``helper_params``
    (a collection of strings: parameters it samples and folds into a returned override). A
    declared name holding a '.' would be a config key, so it is refused. ``fn`` None: the
    built-in ones. Raises :class:`SpaceError` naming a declared name that is not a string or
    holds a '.'.
    """
    declared = getattr(fn, "helper_params", None) or ()
    if isinstance(declared, str):
        declared = (declared,)
    bad = [n for n in declared if not isinstance(n, str) or not n or "." in n]
    if bad:
        raise SpaceError(f"helper_params of {fn!r}: {bad} are not helper names (a non-empty name without '.': "
                         "names with a '.' are config keys)")
    return BUILTIN_HELPERS | frozenset(declared)


def search_overrides(params: Mapping[str, Any], helpers: frozenset[str] = BUILTIN_HELPERS) -> Overrides:
    """A search trial's overrides from its sampled and returned values (Ray's ``OptunaSearch``
    puts both in the trial config): every key but the ``helpers``. A name without a '.' that
    is no helper is kept, so that applying the overrides refuses it as an unknown field."""
    return {k: v for k, v in params.items() if k not in helpers}


class SpaceError(ValueError):
    """An unknown space, a bad space file, or a space point that is not a valid trial config."""


@dataclass(frozen=True)
class Space:
    """A named search space: exactly one of ``points`` (grid) or ``search`` (define-by-run)."""

    name: str  # registry name or the user file's stem
    description: str  # one line, shown by `seqablate study spaces`
    points: tuple[Mapping[str, Any], ...] | None = None  # grid: override dicts
    search: DefineByRun | None = None  # search: Optuna define-by-run function
    # search only: base config -> define-by-run adapted to it (e.g. no 'subtract' without a
    # contrast pair among the base's sequences); None = `search` fits every base.
    search_factory: Callable[[TrialConfig], DefineByRun] | None = field(default=None, repr=False)
    source: str = "builtin"  # 'builtin' or the path of the user file

    def __post_init__(self) -> None:
        if (self.points is None) == (self.search is None):
            raise SpaceError(f"space {self.name!r}: give exactly one of points (grid) or search")
        if "\n" in self.description:
            raise SpaceError(f"space {self.name!r}: the description must be one line")

    @property
    def kind(self) -> str:
        """'grid' or 'search'."""
        return "grid" if self.points is not None else "search"

    def grid(self, seeds: int = 1) -> list[Overrides]:
        """The grid's override dicts, each repeated with ``train.seed`` 0..seeds-1 (copies)."""
        if self.points is None:
            raise SpaceError(f"space {self.name!r} is a search (Optuna), not a grid")
        return expand_seeds(self.points, seeds)

    def select(self, patterns: Sequence[str]) -> Space:
        """The grid restricted to points whose run name (``run_name`` without the seed, e.g.
        ``mid@layer4-shared``) matches one of the shell-style ``patterns``.

        Raises :class:`SpaceError` for a search, or a pattern that matches no point (the
        message lists the point names).
        """
        import fnmatch

        if self.points is None:
            raise SpaceError(f"space {self.name!r} is a search (Optuna): --trials selects grid points only")
        names = [run_name(p) for p in self.points]
        for pat in patterns:
            if not any(fnmatch.fnmatchcase(n, pat) for n in names):
                raise SpaceError(f"--trials {pat!r} matches no point of space {self.name!r}; its points: {names}")
        kept = tuple(p for p, n in zip(self.points, names, strict=True)
                     if any(fnmatch.fnmatchcase(n, pat) for pat in patterns))
        return dataclasses.replace(self, points=kept, description=f"{self.description} [trials: {', '.join(patterns)}]")

    def crossed(self, key: str, values: Sequence[Any]) -> Space:
        """The grid with every point repeated for each of ``values`` of ``key`` (e.g. every point
        on each of several cohorts: ``crossed("data.cohort", paths)``), value-major. Raises
        :class:`SpaceError` for a search or a point that sets ``key`` itself."""
        if self.points is None:
            raise SpaceError(f"space {self.name!r} is a search (Optuna): only a grid can be crossed with {key}")
        clash = [run_name(p) for p in self.points if key in p]
        if clash:
            raise SpaceError(f"space {self.name!r} sets {key} itself (points {clash}); it cannot also be crossed with it")
        points = tuple({**p, key: v} for v in values for p in self.points)
        return dataclasses.replace(self, points=points, description=f"{self.description} [x {len(values)} {key}]")

    def describe(self) -> dict[str, Any]:
        """A JSON-able description: name, kind, description, source and the grid's points."""
        out: dict[str, Any] = {"name": self.name, "description": self.description, "kind": self.kind,
                               "source": self.source}
        if self.points is not None:
            out["points"] = [dict(p) for p in self.points]
        return out

    def search_fn(self, base: TrialConfig | None = None) -> DefineByRun:
        """The define-by-run function, adapted to ``base`` when the space supports that."""
        if self.search is None:
            raise SpaceError(f"space {self.name!r} is a grid, not a search")
        if base is not None and self.search_factory is not None:
            return self.search_factory(base)
        return self.search


_REGISTRY: dict[str, Space] = {}


def register_space(space: Space) -> Space:
    """Add a named space; refuses a name that is already registered."""
    if space.name in _REGISTRY:
        raise SpaceError(f"a search space named {space.name!r} is already registered")
    _REGISTRY[space.name] = space
    return space


def list_spaces() -> dict[str, str]:
    """Registered space names -> one-line descriptions, in registration order."""
    return {name: s.description for name, s in _REGISTRY.items()}


def _import_file(path: Path) -> Any:
    """Import a user space file as a fresh module (its errors reported as SpaceError)."""
    if not path.is_file():
        raise SpaceError(f"{path}: search-space file not found")
    if path.suffix != ".py":
        raise SpaceError(f"{path}: a search-space file must be a Python file (.py) defining SPACE")
    spec = importlib.util.spec_from_file_location(f"seqablate_user_space_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise SpaceError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the user's code: report it as their error, with its type
        raise SpaceError(f"{path}: importing it failed: {type(err).__name__}: {err}") from err
    return module


class FileSearch:
    """A user file's define-by-run ``SPACE``, picklable by its path.

    Ray Tune pickles the Optuna searcher (with its define-by-run function) at every
    experiment checkpoint; a function from a dynamically imported file cannot be pickled by
    reference, so this wrapper stores only the path and re-imports the file where it is
    unpickled (``study resume``).
    """

    def __init__(self, path: str | Path, fn: DefineByRun | None = None) -> None:
        self.path = str(Path(path).resolve())
        self._fn = fn

    def __repr__(self) -> str:
        return f"FileSearch({self.path!r})"

    def _function(self) -> DefineByRun:
        if self._fn is None:
            self._fn = _import_file(Path(self.path)).SPACE
        return self._fn

    def __call__(self, trial: optuna.Trial) -> Overrides:
        return self._function()(trial)

    @property
    def helper_params(self) -> tuple[str, ...]:
        """The helper names the file's function declares (its ``helper_params``), if any."""
        declared = getattr(self._function(), "helper_params", None) or ()
        return (declared,) if isinstance(declared, str) else tuple(declared)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self._fn = state["path"], None


def _load_file(path: Path) -> Space:
    module = _import_file(path)
    if not hasattr(module, "SPACE"):
        raise SpaceError(
            f"{path}: defines no SPACE (a list of override dicts, or a define-by-run "
            "function (trial) -> dict)"
        )
    space = module.SPACE
    desc = str(getattr(module, "DESCRIPTION", f"user space from {path.name}")).splitlines()[0]
    if isinstance(space, Space):
        return space
    if callable(space):
        return Space(path.stem, desc, search=FileSearch(path, space), source=str(path))
    if isinstance(space, Sequence) and not isinstance(space, str | bytes):
        for i, point in enumerate(space):
            if not isinstance(point, Mapping) or not all(isinstance(k, str) for k in point):
                raise SpaceError(
                    f"{path}: SPACE[{i}] must be a dict of dotted config keys, got {point!r}"
                )
        if not space:
            raise SpaceError(f"{path}: SPACE is an empty list")
        return Space(path.stem, desc, points=tuple(dict(p) for p in space), source=str(path))
    raise SpaceError(
        f"{path}: SPACE must be a list of override dicts or a define-by-run function, "
        f"got {type(space).__name__}"
    )


def get_space(name_or_path: str | Path) -> Space:
    """A registered space by name, or the space a user Python file defines as ``SPACE``.

    An unknown name raises :class:`SpaceError` listing the available spaces, with the closest
    name suggested.
    """
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".py") or "/" in text or Path(text).is_file():
        return _load_file(Path(text))
    if text in _REGISTRY:
        return _REGISTRY[text]
    close = difflib.get_close_matches(text, list(_REGISTRY), n=1, cutoff=0.4)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    lines = "\n".join(f"  {n:<14} {d}" for n, d in list_spaces().items())
    raise SpaceError(
        f"unknown search space {text!r}{hint}; available spaces (or pass a .py file "
        f"defining SPACE):\n{lines}"
    )


def _check_point(space: Space, where: str, point: Mapping[str, Any], base: TrialConfig) -> None:
    if not isinstance(point, Mapping) or not all(isinstance(k, str) for k in point):
        raise SpaceError(f"space {space.name!r} {where}: expected a dict of dotted keys, got {point!r}")
    # The file, the point and (in the error) the field: a bad value in a user's space file is
    # found by all three.
    source = f" ({space.source})" if space.source != "builtin" else ""
    label = f"space {space.name!r}{source} {where} ({run_name(point)}) {dict(point)}"
    try:
        cfg = with_overrides(base, point)
    except ConfigError as err:
        raise SpaceError(f"{label}: {err}") from None
    problems = model_problems(cfg)
    if problems:
        raise SpaceError(f"{label}: invalid model combination:\n  " + "\n  ".join(problems))


def validate_space(
    space: Space, base: TrialConfig | None = None, *, seeds: int = 1, samples: int = 32
) -> list[Overrides]:
    """Check that every point of ``space`` is a valid trial config on top of ``base``.

    Grids: every point (after seed expansion) must parse through
    :func:`seqablate.config.with_overrides`, satisfy :mod:`~seqablate.search_spaces.rules`,
    and be distinct (two equal points would be duplicate trials). Searches: ``samples``
    trials are drawn with Optuna's random sampler (seeded, in memory) and each returned
    override dict is checked the same way. Returns the checked override dicts. Raises
    :class:`SpaceError` naming the space, the point (index and run name) and the field.
    """
    base = base if base is not None else TrialConfig()
    if space.kind == "grid":
        points = space.grid(seeds)
        seen: dict[str, int] = {}
        for i, point in enumerate(points):
            _check_point(space, f"point {i}", point, base)
            key = trial_key(point)
            if key in seen:
                raise SpaceError(
                    f"space {space.name!r}: point {i} ({run_name(point)}) repeats point "
                    f"{seen[key]}; duplicate trials would waste compute"
                )
            seen[key] = i
        return points
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    fn = space.search_fn(base)
    helpers = helper_params(fn)
    out: list[Overrides] = []
    for i in range(samples):
        trial = study.ask()
        try:
            returned = fn(trial)
        except Exception as err:
            raise SpaceError(
                f"space {space.name!r} sample {i}: the define-by-run function failed: "
                f"{type(err).__name__}: {err}"
            ) from err
        # As Ray's OptunaSearch does: suggested values, updated by the returned constants;
        # then, as the trial driver reads a trial's config, every key but the registered
        # helpers is an override (a helper is folded into one by the function, e.g. one
        # dropout p per sequence into train.dropout_p).
        point = search_overrides({**trial.params, **(returned or {})}, helpers)
        stray = sorted(k for k in point if "." not in k)
        if stray:
            raise SpaceError(
                f"space {space.name!r} sample {i}: Optuna parameter(s) {stray} are neither config keys (dotted, "
                f"e.g. 'train.lr') nor helpers of the space (helper names: the define-by-run function's "
                f"helper_params, or dropout_p_<sequence>); rename them to the config key they set, or declare "
                f"them in helper_params and fold them into a returned override"
            )
        _check_point(space, f"sample {i}", point, base)
        study.tell(trial, 0.0)
        out.append(dict(point))
    return out
