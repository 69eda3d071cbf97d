"""tasks.data: the report's data section, and the split options a config passes on."""

import dataclasses
from pathlib import Path

import ml_collections
import pytest

from recsys_jax.config_files import sibling_config
from recsys_jax.data import ids, splits, synthetic
from recsys_jax.tasks.config_checks import config_problems
from recsys_jax.tasks.data import SplitData, split_from_config


def _split_data(notes=()):
    dataset = dataclasses.replace(synthetic.generate_synthetic(30, 20, 400, seed=0), notes=notes)
    encoded, mapping = ids.encode_dataset(dataset)
    split = splits.make_split(encoded.interactions, "random", seed=0)
    return SplitData(dataset=dataset, encoded=encoded, mapping=mapping, split=split)


def test_data_notes_reach_the_report_section():
    note = "u.user is missing: no demographic user features"
    section = _split_data(notes=(note,)).section()
    assert f"- **data note:** {note}\n" in section
    assert section.index("data note") < section.index("- split:")


def test_a_complete_copy_adds_no_note():
    section = _split_data().section()
    assert "data note" not in section and section.startswith("## Data and split\n")


CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _pairs(part):
    return set(zip(part["user_id"].tolist(), part["item_id"].tolist()))


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.py")))
def test_every_config_declares_the_fair_split_defaults(name):
    split = sibling_config(CONFIGS / "any.py", name).split
    assert split.tie_order == "random"
    assert split.min_user_interactions == 0 and split.min_item_interactions == 0


def test_split_from_config_passes_tie_order_and_k_core():
    config = sibling_config(CONFIGS / "any.py", "ncf_tiny")
    interactions = synthetic.generate_synthetic(40, 30, 900, seed=1).interactions
    default = split_from_config(interactions, config.split)
    assert default.params == {"tie_order": "random", "seed": 0}
    config.split.tie_order, config.split.seed = "item_id", 3
    config.split.min_user_interactions, config.split.min_item_interactions = 10, 8
    cored = split_from_config(interactions, config.split)
    expected = splits.make_split(interactions, "leave_one_out", tie_order="item_id",
                                 min_user_interactions=10, min_item_interactions=8)
    assert cored.params == expected.params and cored.fingerprint() == expected.fingerprint()
    assert [_pairs(p) for p in cored.parts().values()] == \
        [_pairs(p) for p in expected.parts().values()]
    # A config written before these keys existed gets the defaults.
    old = ml_collections.ConfigDict({k: v for k, v in config.split.items()
                                     if k not in ("tie_order", "min_user_interactions",
                                                  "min_item_interactions")})
    assert split_from_config(interactions, old).params == {"tie_order": "random", "seed": 3}


def test_config_checks_refuse_bad_split_keys():
    config = sibling_config(CONFIGS / "any.py", "mf_tiny")
    config.split.tie_order = "timestamp"
    config.split.min_user_interactions = -1
    config.split.min_item_interactions = -3
    assert [p.split(" =")[0] for p in config_problems(config, "rating")] == [
        "split.tie_order", "split.min_user_interactions", "split.min_item_interactions"]
