"""The sequential task: next-item prediction from each user's item sequence (SASRec).

Data: ratings become positives (all, or those ≥ ``implicit.min_rating``, as in the implicit
task), split by a per-user or global temporal protocol (``leave_one_out`` by default; a
``random`` split has no "next" item and is refused). Each user's events are put in time order,
equal timestamps by the split's tie rule (``data.sequences``). Training rows are windows of
``model.max_len + 1`` items of the *training* events (``training.windows``: ``"last"``, each
user's most recent window, as SASRec's sampler; ``"all"``, the whole history cut into windows);
a prediction at every position. Model: any ``contract.SequenceEncoder`` (``sasrec``). Loss
(``loss.name``, ``tasks.sequential_losses``): ``bce`` (one sampled negative per position, the
paper's) or ``softmax`` (in-batch softmax with logQ correction). Users are their sequences: a
user is ranked from the hidden state at the last position of their last ``max_len`` items
(``SequenceRanker``), so the model never learns a per-user parameter and nothing is refitted.

* Validation users are encoded from their training events only; full ranking over all items
  but the user's training items (``training.monitor``, default ``val_ndcg@10``), early stopping.
* Test users are encoded from their train + validation events (the protocol's "equal
  information"; ``evaluation.test_user_inputs="train"`` encodes them from train only), never a
  test event; full ranking (every item minus the user's train and validation items,
  ``evaluation.ks``) and the sampled protocol (``evaluation.num_negatives`` = 100 sampled
  unseen items, SASRec's; ``evaluation.sampled_ks``), for published comparisons only.

Files under the workdir besides ``runner``'s: ``run/`` (the test users' last hidden states
and the item embeddings, ``seen_parts`` as encoded).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from recsys_jax.data import splits
from recsys_jax.data.columns import Columns
from recsys_jax.data.sequences import UserSequences, user_sequences
from recsys_jax.evaluation.evaluate import EvaluationTarget, target_from_split
from recsys_jax.evaluation.validators import RankingValidator
from recsys_jax.models.contract import SequenceEncoder
from recsys_jax.tasks.base import Task, TaskData, monitor_parts
from recsys_jax.tasks.data import load_split
from recsys_jax.tasks.fold_in import seen_parts, test_user_inputs
from recsys_jax.tasks.implicit import (
    implicit_interactions,
    interaction_columns,
    ranking_test_headline,
    ranking_test_results,
    ranking_test_sections,
    save_ranking_run,
)
from recsys_jax.tasks.negatives import build_positive_set
from recsys_jax.tasks.retrieval_losses import sampling_log_q
from recsys_jax.tasks.sequential_losses import (
    SEQUENCE_LOSSES,
    make_sequence_bce_loss,
    make_sequence_softmax_loss,
)
from recsys_jax.training.losses import LossFn

# Split protocols under which a user's validation events follow their training events.
SEQUENTIAL_PROTOCOLS = ("leave_one_out", "user_temporal", "global_temporal")
# Users encoded per jitted call when ranking.
ENCODE_CHUNK = 1024


@partial(jax.jit, static_argnums=0)
def _last_hidden(graphdef: nnx.GraphDef, state: nnx.State, sequences: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state)
    return model(sequences)[:, -1]


@partial(jax.jit, static_argnums=0)
def _all_item_vectors(graphdef: nnx.GraphDef, state: nnx.State) -> jax.Array:
    model = nnx.merge(graphdef, state)
    return model.item_vectors(jnp.arange(model.num_items, dtype=jnp.int32))


class SequenceRanker:
    """A ``contract.RankingEmbedder`` view of a sequence encoder for fixed user sequences:
    user u's vector is the hidden state at the last position of ``sequences[u]``, item i's its
    output embedding, so their dot product is the model's score of i as u's next item."""

    def __init__(self, model: nnx.Module, sequences: np.ndarray, *,
                 chunk: int = ENCODE_CHUNK):
        """Args: the model, ``[num_users, max_len]`` int32 sequences (left-padded with
        ``model.num_items``), users encoded per call."""
        if np.ndim(sequences) != 2 or np.shape(sequences)[1] != model.max_len:
            raise ValueError(f"sequences must be [num_users, {model.max_len}], got "
                             f"{np.shape(sequences)}")
        self.model, self.sequences = model, np.asarray(sequences, np.int32)
        self.num_users, self.num_items = len(self.sequences), model.num_items
        self.chunk = max(1, min(chunk, self.num_users))

    def ranking_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """``(users [num_users, d], items [num_items, d])`` float32 NumPy."""
        graphdef, state = nnx.split(self.model)
        items = np.asarray(_all_item_vectors(graphdef, state), np.float32)
        users = [np.zeros((0, items.shape[1]), np.float32)]
        for start in range(0, self.num_users, self.chunk):
            block = self.sequences[start:start + self.chunk]
            padded = np.full((self.chunk, block.shape[1]), self.model.num_items, np.int32)
            padded[:len(block)] = block  # one shape, one compilation
            users.append(np.asarray(_last_hidden(graphdef, state, padded))[:len(block)])
        return np.concatenate(users).astype(np.float32), items


@dataclasses.dataclass
class SequentialData(TaskData):
    """Encoded, split positives as sequences.

    ``train`` holds the training rows: ``user`` (int32) and ``sequence`` (``[n, max_len + 1]``
    int32, left-padded with ``num_items``).

    Attributes:
      val, test: columns ``user``, ``item`` (int32) of the held-out parts.
      split: the data layer's ``Split``.
      val_inputs: ``[num_users, max_len]`` each user's last training items (validation).
      test_inputs: ``[num_users, max_len]`` each user's last train + validation items (or
        training items with ``evaluation.test_user_inputs="train"``) (test).
      train_sequences: each user's training items in time order.
    """

    val: Columns = dataclasses.field(default_factory=dict)
    test: Columns = dataclasses.field(default_factory=dict)
    split: splits.Split | None = None
    val_inputs: np.ndarray | None = None
    test_inputs: np.ndarray | None = None
    train_sequences: UserSequences | None = None

    def target(self, part: str) -> EvaluationTarget:
        """The evaluation target of ``part`` (``"val"`` excludes train items from ranking,
        ``"test"`` train and val items)."""
        return target_from_split(self.split, self.num_users, self.num_items, part)


def sequential_data_from_split(split: splits.Split, *, num_users: int, num_items: int,
                               max_len: int, windows: str = "last",
                               test_inputs: str = "train+val", dataset: str = "",
                               report_section: str = "") -> SequentialData:
    """Training windows and encoder inputs of ``split`` (frames with encoded ``user_id``,
    ``item_id``, ``timestamp``); never reads a test event into an input.

    Raises:
      ValueError: for a split protocol without a time order (``random``), or bad sizes.
    """
    if split.protocol not in SEQUENTIAL_PROTOCOLS:
        raise ValueError(f"the sequential task needs a split whose validation events follow "
                         f"the training events ({SEQUENTIAL_PROTOCOLS}), got "
                         f"{split.protocol!r}")
    tie = dict(tie_order=split.params.get("tie_order", "random"),
               seed=split.params.get("seed", 0))
    pad = num_items
    train = user_sequences([split.train], num_users, num_items, **tie)
    seen = [split.train] if test_inputs == "train" else [split.train, split.val]
    test = train if test_inputs == "train" else user_sequences(seen, num_users, num_items,
                                                               **tie)
    users, rows = train.training_windows(max_len, pad, windows)
    parts = {name: interaction_columns(part["user_id"].to_numpy(), part["item_id"].to_numpy(),
                                       num_users=num_users, num_items=num_items)
             for name, part in (("val", split.val), ("test", split.test))}
    return SequentialData(
        train={"user": users, "sequence": rows}, num_users=num_users, num_items=num_items,
        dataset=dataset, split_protocol=split.protocol, split_fingerprint=split.fingerprint(),
        report_section=report_section, **parts, split=split,
        val_inputs=train.last(max_len, pad), test_inputs=test.last(max_len, pad),
        train_sequences=train)


def load_sequential_data(config: ml_collections.ConfigDict,
                         save_dir: str | Path | None = None) -> SequentialData:
    """Loads, encodes, thresholds and splits the data of ``config`` and builds the sequences
    (``ids/`` and ``split/`` saved into ``save_dir`` when given).

    Raises:
      ValueError: when the split fails its leakage checks or has no time order.
    """
    if config.split.name not in SEQUENTIAL_PROTOCOLS:  # Before loading anything.
        raise ValueError(f"split.name must be one of {SEQUENTIAL_PROTOCOLS} for the "
                         f"sequential task, got {config.split.name!r}")
    min_rating = config.get("implicit", {}).get("min_rating")
    loaded = load_split(config, save_dir,
                        keep=lambda frame: implicit_interactions(frame, min_rating))
    kept = "all ratings" if min_rating is None else f"ratings ≥ {min_rating:g}"
    data = sequential_data_from_split(
        loaded.split, num_users=loaded.mapping.num_users, num_items=loaded.mapping.num_items,
        max_len=config.model.max_len, windows=config.training.get("windows", "last"),
        test_inputs=test_user_inputs(config), dataset=loaded.dataset.name)
    lengths = data.train_sequences.lengths
    targets = int(np.sum(data.train["sequence"][:, :-1] != data.num_items))
    data.report_section = loaded.section(
        f"- positives: {kept}; training sequences: median {np.median(lengths):.0f} events "
        f"per user (max {lengths.max(initial=0)}), {len(data.train['user']):,} windows of "
        f"{config.model.max_len} + 1 items ({config.training.get('windows', 'last')}), "
        f"{targets:,} of {int(np.sum(np.maximum(lengths - 1, 0))):,} next-item targets "
        "trained on\n")
    return data


class SequentialTask(Task):
    """Next-item prediction from sequences: see the module docstring."""

    name = "sequential"
    model_protocol = SequenceEncoder
    default_monitor = "val_ndcg@10"

    def prepare(self, config: ml_collections.ConfigDict, workdir: Path | None
                ) -> SequentialData:
        return load_sequential_data(config, workdir)

    def loss(self, config: ml_collections.ConfigDict, data: SequentialData) -> LossFn:
        loss_cfg = config.loss
        if loss_cfg.name not in SEQUENCE_LOSSES:
            raise ValueError(f"loss.name must be one of {SEQUENCE_LOSSES} for the sequential "
                             f"task, got {loss_cfg.name!r}")
        if loss_cfg.name == "bce":
            # Negatives are never one of the user's training items (the paper's sampler).
            t = data.train_sequences
            users = np.repeat(np.arange(t.num_users), t.lengths)
            return make_sequence_bce_loss(build_positive_set(
                users, t.items, data.num_users, data.num_items,
                kind=config.training.get("positive_set", "auto")))
        rows = data.train["sequence"]
        targets = rows[:, 1:][rows[:, :-1] != data.num_items]  # the positions trained on
        return make_sequence_softmax_loss(
            num_items=data.num_items,
            target_log_q=(sampling_log_q(targets, data.num_items) if loss_cfg.get("logq", True)
                          else None),
            remove_accidental_hits=loss_cfg.get("remove_accidental_hits", True),
            num_random_negatives=loss_cfg.get("num_random_negatives", 0))

    def validator(self, config: ml_collections.ConfigDict, data: SequentialData):
        """Full ranking of the validation part, users encoded from their training events."""
        metric, k = monitor_parts(self.monitor(config))
        rank = RankingValidator(data.target("val"), ks=(k,),
                                metrics=tuple(dict.fromkeys(("hr", "ndcg", metric))))
        return lambda model: rank(SequenceRanker(model, data.val_inputs))

    def evaluate(self, config: ml_collections.ConfigDict, data: SequentialData,
                 model: nnx.Module) -> dict[str, Any]:
        """Test metrics, users encoded from ``data.test_inputs``."""
        results = ranking_test_results(config, data.target("test"),
                                       SequenceRanker(model, data.test_inputs))
        return {"test": {label: r.summary() for label, r in results.items()},
                "test_user_inputs": test_user_inputs(config),
                "num_val": len(data.val["user"]), "num_test": len(data.test["user"])}

    def export(self, config: ml_collections.ConfigDict, data: SequentialData,
               model: nnx.Module, workdir: Path, summary: Mapping[str, Any]) -> dict[str, Any]:
        save_ranking_run(SequenceRanker(model, data.test_inputs), workdir / "run",
                         name=config.get("run_name") or workdir.name,
                         model_name=config.model.name, data=data,
                         seen_parts=seen_parts(summary["test_user_inputs"]),
                         metadata={"config": config.to_dict(), "test": summary["test"],
                                   "user_embeddings": "hidden state at the last position of "
                                   "the user's last model.max_len "
                                   f"{summary['test_user_inputs']} items"})
        return {}

    def report_sections(self, config: ml_collections.ConfigDict, data: SequentialData,
                        model: nnx.Module, summary: Mapping[str, Any],
                        workdir: Path | None) -> list[str]:
        m, t, loss_cfg = config.model, config.training, config.loss
        loss = ("binary cross-entropy, one negative per position (never a training item of "
                "the user), resampled every step" if loss_cfg.name == "bce" else
                f"in-batch softmax over the batch's positions, logQ {loss_cfg.get('logq', True)}"
                f", accidental-hit removal {loss_cfg.get('remove_accidental_hits', True)}, "
                f"random negatives {loss_cfg.get('num_random_negatives', 0)}")
        sections = ranking_test_sections(summary)
        sections.append("\n".join([
            "## Model and loss", "",
            f"- model: `{m.name}`, max_len {m.get('max_len', '-')}, dim {m.get('dim', '-')}, "
            f"{m.get('num_blocks', '-')} blocks × {m.get('num_heads', '-')} heads, dropout "
            f"{m.get('dropout', '-')}",
            f"- loss: {loss}; batch {t.batch_size} windows "
            f"({t.get('windows', 'last')})",
            f"- validation users encoded from their training events, test users from their "
            f"{summary['test_user_inputs']} events (last {m.get('max_len', '-')} items)"]))
        sections.append(data.report_section)
        return sections

    def headline(self, summary: Mapping[str, Any]) -> str:
        return ranking_test_headline(summary)

