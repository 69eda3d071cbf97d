"""Hyperparameter search for rating models, scored on validation RMSE only.

``score_config`` trains one experiment config (the fields of ``configs/mf_ml100k.py``) with the
library's fit loop in a throw-away directory and returns its validation metrics (and test
metrics only when asked: the search itself never looks at test). ``grid_configs`` expands a
small grid of dotted overrides and ``perturb`` varies a winner one field at a time; ``search``
scores candidates and ranks them by validation RMSE.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import ml_collections

from recsys_jax.evaluation.validators import RatingEvaluator
from recsys_jax.tasks.fold_in import fold_in_for_test
from recsys_jax.tasks.rating import MONITOR, RatingData, make_rating_loss, train_rating_model

Overrides = dict[str, Any]


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A copy of ``config`` with dotted fields (``"optimizer.lr"``) replaced.

    Raises:
      KeyError: for a field the config does not have (a typo must not pass silently).
    """
    config = ml_collections.ConfigDict(config.to_dict())
    for key, value in overrides.items():
        *path, leaf = key.split(".")
        block = config
        for name in path:
            block = block[name]
        if leaf not in block:
            raise KeyError(f"config has no field {key!r}")
        block[leaf] = value
    return config


def score_config(config: ml_collections.ConfigDict, data: RatingData, *,
                 with_test: bool = False) -> dict[str, Any]:
    """Trains ``config`` on ``data.train`` and scores its best-validation-epoch model.

    Nothing is written (``workdir=None``): runs leave nothing behind and cannot resume each
    other.

    The test part is scored as the rating task scores it: after folding in the validation
    events (``evaluation.test_user_inputs``, ``tasks.fold_in``); validation never sees them.

    Returns:
      ``val_rmse``, ``val_mae``, ``best_epoch``, ``epochs_trained``, ``seconds``, and
      ``test_rmse``, ``test_mae``, ``test_user_inputs`` when ``with_test``.
    """
    t0 = time.perf_counter()
    model, result = train_rating_model(config, data, None)
    chunk = config.training.get("eval_chunk_size", 65536)
    scores: dict[str, Any] = dict(RatingEvaluator(data.val, data.rating_scale, prefix="val",
                                                  chunk_size=chunk)(model))
    if with_test:
        facts = fold_in_for_test(config, model, data.train, data.val,
                                 lambda columns: make_rating_loss(config.training.loss,
                                                                  config.training.l2_reg))
        scores["test_user_inputs"] = facts["test_user_inputs"]
        scores.update(RatingEvaluator(data.test, data.rating_scale, prefix="test",
                                      chunk_size=chunk)(model))
    scores.update(best_epoch=result.best_epoch, epochs_trained=result.last_epoch,
                  seconds=time.perf_counter() - t0)
    return scores


def axis(field: str, values: Sequence[Any]) -> list[Overrides]:
    """One grid axis that varies a single dotted field."""
    return [{field: value} for value in values]


def grid_configs(axes: Sequence[Sequence[Overrides]]) -> list[Overrides]:
    """Every combination of one entry per axis, merged (later axes win on shared fields).

    An axis is a list of override dicts, so fields that only make sense together (a weight
    decay with its per-example L2) vary as one axis.
    """
    return [{k: v for entry in combo for k, v in entry.items()}
            for combo in itertools.product(*axes)]


def perturb(best: Overrides, changes: Sequence[Overrides]) -> list[Overrides]:
    """``best`` with each change applied in turn (one-at-a-time refinement around a winner);
    changes that leave ``best`` as it is are dropped."""
    out = []
    for change in changes:
        candidate = {**best, **change}
        if candidate != best and candidate not in out:
            out.append(candidate)
    return out


@dataclasses.dataclass(frozen=True)
class Trial:
    """One scored configuration of a search.

    Attributes:
      overrides: the dotted fields changed from the search's base config.
      scores: what ``score_config`` returned (validation only).
      stage: which part of the search proposed it (``reference``, ``grid``, ``refine``).
    """

    overrides: Overrides
    scores: dict[str, Any]
    stage: str = ""

    @property
    def val_rmse(self) -> float:
        """The selection criterion."""
        return float(self.scores[MONITOR])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"stage": self.stage, "overrides": self.overrides, **self.scores}


def search(base: ml_collections.ConfigDict, data: RatingData, candidates: Iterable[Overrides],
           *, stage: str = "", on_trial: Callable[[Trial], None] | None = None) -> list[Trial]:
    """Scores every candidate on validation (never test); returns trials, best first."""
    trials = []
    for overrides in candidates:
        trial = Trial(dict(overrides), score_config(apply_overrides(base, overrides), data),
                      stage)
        trials.append(trial)
        if on_trial is not None:
            on_trial(trial)
    return sorted(trials, key=lambda t: t.val_rmse)


def two_stage_search(base: ml_collections.ConfigDict, data: RatingData, *,
                     references: Sequence[Overrides], grid: Sequence[Overrides],
                     refinements: Sequence[Overrides],
                     on_trial: Callable[[Trial], None] | None = None) -> list[Trial]:
    """References (e.g. the untuned recipe), then a grid, then one-at-a-time changes to the
    grid's winner; all scored on validation. Returns every trial, best first."""
    trials = search(base, data, references, stage="reference", on_trial=on_trial)
    grid_trials = search(base, data, grid, stage="grid", on_trial=on_trial)
    refined = search(base, data, perturb(grid_trials[0].overrides, refinements),
                     stage="refine", on_trial=on_trial)
    return sorted(trials + grid_trials + refined, key=lambda t: t.val_rmse)


def format_trials(trials: Sequence[Trial], limit: int | None = None) -> str:
    """A Markdown table of trials (in the given order): stage, overrides (blank = base value),
    val RMSE/MAE, best epoch, seconds."""
    keys = sorted({k for t in trials for k in t.overrides})
    header = ("| rank | stage | " + " | ".join(keys)
              + " | val RMSE | val MAE | best epoch | s |")
    lines = [header, "|" + "---|" * (len(keys) + 6)]
    for rank, t in enumerate(trials[:limit], start=1):
        cells = [_cell(t.overrides.get(k, "")) for k in keys]
        lines.append(f"| {rank} | {t.stage} | " + " | ".join(cells)
                     + f" | {t.val_rmse:.4f} | {t.scores['val_mae']:.4f} | "
                     f"{t.scores['best_epoch']} | {t.scores['seconds']:.1f} |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
