"""tasks.data: the report's data section carries what the loader noted about the copy."""

import dataclasses

from recsys_jax.data import ids, splits, synthetic
from recsys_jax.tasks.data import SplitData


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
