"""The ``hpo`` spaces: Optuna define-by-run functions over architecture, dropout and lr.

``hpo`` samples one dropout probability for every sequence; ``hpo-per-sequence`` one per
sequence (:class:`HpoPerSequenceSearch`).

Define-by-run lets the space be conditional: the integration point and fusion are only
sampled for mid-level integration, sharing only where there are parallel branches, the L2
tie strength only with ``l2_tied`` (log-uniform), and ``subtract`` fusion forces shared
branches; so every sample is a valid model (see :mod:`seqablate.search_spaces.rules`).
Optuna parameter names are the dotted config keys, so Ray Tune's ``OptunaSearch`` puts them
in the trial config under the same names the function returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from seqablate import vocabulary as V
from seqablate.config import TrialConfig
from seqablate.search_spaces.paper import DROPOUT_MODES, SHARING_MODES, model_point
from seqablate.sequences import PAPER_SEQUENCES, contrast_pair

if TYPE_CHECKING:
    import optuna

INTEGRATIONS: tuple[str, ...] = V.INTEGRATIONS
POINTS: tuple[str, ...] = V.INTEGRATION_POINTS
TIE_LAMBDA_RANGE = (1e-5, 1e-1)  # log-uniform
DROPOUT_P_RANGE = (0.0, 0.5)  # step 0.05, so run names stay readable
PER_SEQUENCE_P_RANGE = (0.0, 0.6)  # hpo-per-sequence: each sequence's p, step 0.05
LR_RANGE = (1e-5, 3e-3)  # log-uniform


class HpoSearch:
    """The define-by-run function of the ``hpo`` space for a study over ``sequences``.

    A module-level class (not a closure) so that Ray Tune can pickle it when it checkpoints
    its Optuna searcher, and unpickle it when ``study resume`` restores the search.
    ``subtract`` fusion is offered only when ``sequences`` hold a post/pre contrast pair.
    Calling it returns the complete override dict of the trial (sampled values plus the
    neutral values of keys that do not apply).
    """

    def __init__(self, sequences: Sequence[str] = PAPER_SEQUENCES) -> None:
        self.sequences = tuple(sequences)
        self.fusions = [f for f in V.FUSIONS if f != "subtract" or contrast_pair(self.sequences)]

    def __repr__(self) -> str:
        return f"HpoSearch(sequences={list(self.sequences)})"

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        integration = trial.suggest_categorical("model.integration", list(INTEGRATIONS))
        point, fusion, sharing = "layer4", "concat", "independent"
        if integration == "mid":
            point = trial.suggest_categorical("model.integration_point", list(POINTS))
            fusion = trial.suggest_categorical("model.fusion", self.fusions)
        if integration != "input":
            if fusion == "subtract":
                sharing = "shared"  # the only sharing subtraction makes sense with
            else:
                sharing = trial.suggest_categorical("model.sharing", list(SHARING_MODES))
        tie = 0.0
        if sharing == "l2_tied":
            tie = trial.suggest_float("train.tie_lambda", *TIE_LAMBDA_RANGE, log=True)
        out = model_point(integration, point=point, sharing=sharing, fusion=fusion, tie_lambda=tie)
        out.update(self.dropout(trial))
        out["train.lr"] = trial.suggest_float("train.lr", *LR_RANGE, log=True)
        return out

    def dropout(self, trial: optuna.Trial) -> dict[str, Any]:
        """``train.dropout_p`` and ``train.dropout_mode`` of the trial: one p for every
        sequence and a mode."""
        return {"train.dropout_p": trial.suggest_float("train.dropout_p", *DROPOUT_P_RANGE, step=0.05),
                "train.dropout_mode": trial.suggest_categorical("train.dropout_mode", list(DROPOUT_MODES))}


class HpoPerSequenceSearch(HpoSearch):
    """The ``hpo-per-sequence`` space: ``hpo`` with one dropout probability per sequence.

    Each sequence's p is sampled on its own (uniform on :data:`PER_SEQUENCE_P_RANGE`, step
    0.05) as the Optuna parameter ``dropout_p_<sequence>``, and the trial's
    ``train.dropout_p`` is the mapping of them, in study order (bernoulli: ``uniform`` would
    ignore them). The Optuna names are declared helpers (:attr:`helper_params`), never config
    keys: Tune's config carries them beside the dotted overrides, and the overrides carry the
    mapping. A search over how much each sequence may be missing pays off with an objective
    that rewards surviving it (``--objective worst``, or a deployment profile): under the full
    protocol alone dropout can only cost, and the search would drive every p to 0.
    """

    def __repr__(self) -> str:
        return f"HpoPerSequenceSearch(sequences={list(self.sequences)})"

    @property
    def helper_params(self) -> tuple[str, ...]:
        """The Optuna parameters this function samples and folds into ``train.dropout_p``."""
        return tuple(f"dropout_p_{s}" for s in self.sequences)

    def dropout(self, trial: optuna.Trial) -> dict[str, Any]:
        p = {s: round(trial.suggest_float(f"dropout_p_{s}", *PER_SEQUENCE_P_RANGE, step=0.05), 2)
             for s in self.sequences}
        return {"train.dropout_p": p, "train.dropout_mode": "bernoulli"}


def make_hpo(sequences: Sequence[str] = PAPER_SEQUENCES) -> HpoSearch:
    """The (picklable) define-by-run function for a study over ``sequences``."""
    return HpoSearch(sequences)


def hpo_for(base: TrialConfig) -> HpoSearch:
    """:func:`make_hpo` adapted to a base config's sequences."""
    return make_hpo(base.data.sequences)


def make_hpo_per_sequence(sequences: Sequence[str] = PAPER_SEQUENCES) -> HpoPerSequenceSearch:
    """The (picklable) define-by-run function of ``hpo-per-sequence`` for ``sequences``."""
    return HpoPerSequenceSearch(sequences)


def hpo_per_sequence_for(base: TrialConfig) -> HpoPerSequenceSearch:
    """:func:`make_hpo_per_sequence` adapted to a base config's sequences."""
    return make_hpo_per_sequence(base.data.sequences)
