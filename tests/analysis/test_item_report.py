import json

import numpy as np

from recsys_jax.analysis.item_report import (
    GENRE_CLUSTER_FILE,
    SIMILAR_ITEMS_FILE,
    TSNE_FILE,
    analyse_item_embeddings,
)


def test_report_finds_planted_clusters_and_skips_rare_items(planted, tmp_path):
    counts = np.full(len(planted.embeddings), 50)
    rare = np.arange(100, 200)  # half the catalogue is too rarely rated to take part
    counts[rare] = 3
    analysis = analyse_item_embeddings(
        planted.embeddings, planted.items, counts, tmp_path,
        titles=("Star Wars (1977)", "No Such Film (2001)"), min_count=20,
        n_permutations=50)

    assert analysis.num_items == 100
    assert analysis.genre_cluster.n_items == 100
    assert analysis.genre_cluster.observed > 0.95
    assert analysis.genre_cluster.p_value == 1 / 51
    neighbours = analysis.similar["Star Wars (1977)"]
    assert set(neighbours["item_id"]).isdisjoint(rare)
    # Every listed neighbour comes from the query's planted cluster.
    assert (planted.cluster[neighbours["item_id"]] == planted.cluster[0]).all()
    assert "No Such Film (2001)" not in analysis.similar

    assert (tmp_path / TSNE_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / GENRE_CLUSTER_FILE).read_text())
    assert saved["min_count"] == 20 and saved["observed"] == analysis.genre_cluster.observed
    markdown = (tmp_path / SIMILAR_ITEMS_FILE).read_text()
    assert "skipped 'No Such Film (2001)'" in markdown and "## Star Wars (1977)" in markdown
    assert "Most similar to Star Wars (1977):" in analysis.format()
