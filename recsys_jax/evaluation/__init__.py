"""Metrics, ranking protocols, significance tests and simple baselines.

Modules (import the one you need; importing this package loads nothing else):
  interactions    user × item CSR matrices from id pairs (relevant sets, exclusions)
  sources         what a model hands over: Embeddings, ScoreMatrix, ScoreFunction, RankedLists
  ranking         full-ranking top-K on the device, chunked over users, exclusions masked
  sampled         the sampled protocol (held-out items + N sampled unseen items)
  metrics         HR, Precision, Recall, NDCG, MAP, MRR per user
  rating          RMSE / MAE on clipped predictions
  beyond_accuracy coverage, exposure Gini, intra-list diversity, novelty
  significance    paired t-test, Wilcoxon, bootstrap CIs, Holm, Cohen's d_z
  baselines       popularity and random rankers; mean and bias rating predictors
  evaluate        one source on one part of a split
  runs            the on-disk run format (save_run / load_run)
  compare         comparison tables, Markdown / CSV / PNG / per-user outputs
  comparison      runs + baselines on a split → table (refuses runs from other splits)
"""
