from pathlib import Path

import pytest

from recsys_jax.config_files import load_config_file, sibling_config
from recsys_jax.tasks.config_checks import (
    ConfigError,
    check_config,
    config_problems,
    integer,
    integers,
    one_of,
    optional,
    real,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.py")))
def test_every_shipped_config_passes(name):
    config = sibling_config(CONFIGS / "any.py", name)
    assert config_problems(config, config.task) == []


@pytest.mark.parametrize("spec", ["ease_ml100k.py:recency", "sasrec_ml100k.py:bce"])
def test_shipped_config_variants_pass(spec):
    config = load_config_file(str(CONFIGS / spec))
    assert config_problems(config, config.task) == []


def test_sasrec_variants_differ_only_in_loss_and_batch():
    softmax = load_config_file(str(CONFIGS / "sasrec_ml100k.py"))
    bce = load_config_file(str(CONFIGS / "sasrec_ml100k.py:bce"))
    assert (softmax.loss.name, softmax.training.batch_size) == ("softmax", 16)
    assert (bce.loss.name, bce.training.batch_size) == ("bce", 128)
    bce.loss.name, bce.training.batch_size = "softmax", 16
    assert bce.to_dict() == softmax.to_dict()
    with pytest.raises(ValueError, match="loss must be one of"):
        load_config_file(str(CONFIGS / "sasrec_ml100k.py:bpr"))


def test_check_rules_known_answers():
    lr = real(0, low_open=True)
    assert lr(1e-3) is None and lr(1) is None
    assert lr(0.0) == lr(-1.0) == "must be in (0, inf)"
    assert lr(float("nan")) == lr(True) == lr("0.1") == "must be a finite number in (0, inf)"
    assert real(0, 1)(1.0) is None and real(0, 1, high_open=True)(1.0) == "must be in [0, 1)"
    assert integer(1)(1) is None and integer(1)(1.0) == integer(1)(0) == integer(1)(False)
    assert integers(1)((10, 100)) is None and integers(1)(()) and integers(1)("10")
    assert one_of(("a", "b"))("c") == "must be one of ['a', 'b']"
    assert optional(integer(1))(None) is None and optional(integer(1))(0)


def test_missing_required_keys_and_unchecked_absent_ones():
    config = sibling_config(CONFIGS / "any.py", "mf_tiny")
    del config.optimizer["lr"]
    del config.training["patience"]  # Optional: not checked when absent.
    assert config_problems(config, "rating") == ["optimizer.lr is missing"]


def test_prepared_data_makes_the_data_blocks_unused():
    config = sibling_config(CONFIGS / "any.py", "mf_tiny")
    config.data.dataset = "my-own"
    config.split.name = "by-hand"
    assert config_problems(config, "rating", data_given=True) == []
    assert [p.split(" =")[0] for p in config_problems(config, "rating")] == [
        "data.dataset", "split.name"]


def test_task_specific_keys():
    config = sibling_config(CONFIGS / "any.py", "two_tower_tiny")
    config.index.kind = "annoy"
    config.serving.num_queries = 0
    config.training.monitor = "val_recall"  # A ranking task needs the cut-off.
    problems = config_problems(config, "retrieval")
    assert [p.split(" =")[0] for p in problems] == ["index.kind", "serving.num_queries",
                                                     "training.monitor"]
    with pytest.raises(ConfigError, match="3 problem.*nothing was run or written"):
        check_config(config, "retrieval")


def test_the_index_config_reaches_the_index_recipe():
    from recsys_jax.retrieval.index import IndexConfig

    config = sibling_config(CONFIGS / "any.py", "two_tower_tiny")
    index = IndexConfig(**config.index.to_dict())  # What the retrieval task builds from.
    assert (index.quantizer, index.radius_weight) == ("radius", 0.5)
    config.index.quantizer, config.index.radius_weight = "cosine", -1.0
    assert [p.split(" =")[0] for p in config_problems(config, "retrieval")] == [
        "index.quantizer", "index.radius_weight"]
    # An index FAISS keeps on the CPU cannot be asked onto a GPU (IndexConfig refuses it too).
    config.index.kind, config.index.quantizer, config.index.radius_weight = "ivf", "radius", 0.5
    config.index.use_gpu = "always"
    assert [p for p in config_problems(config, "retrieval") if "GPU" in p] == [
        "index.use_gpu = 'always' asks for a GPU index, but the radius-probed IVF stays on the "
        "CPU: use quantizer='l2' (the GPU IVF) or use_gpu='auto'"]
    config.index.quantizer = "l2"
    assert config_problems(config, "retrieval") == []


def test_holdout_k_replaces_the_fractions():
    config = sibling_config(CONFIGS / "any.py", "mf_tiny")
    config.split.name, config.split.holdout_k, config.split.val_fraction = (
        "user_temporal", 2, 0.0)
    assert config_problems(config, "rating") == []
    config.split.name = "random"
    assert config_problems(config, "rating") == [
        "split.holdout_k = 2 applies only to split.name='user_temporal', not 'random'",
        "split.val_fraction = 0.0 must be in (0, 1) for split.name='random'"]
