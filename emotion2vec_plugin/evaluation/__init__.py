"""Scoring frozen features and trained models (no fairseq needed).

* ``metrics``: WA, UA, macro-F1, weighted-F1 under one set of names, for every tool;
* ``mlp_probe``: the paper's MLP probe, leave-one-group-out; ``linear_probe``: the fast linear
  probe (also run during pretraining); ``standardize``: per-dimension and per-group z-scoring;
* ``probe_cli``: ``e2v-probe``; ``plots``: t-SNE and confusion plots;
* ``curves``: ``e2v-curves``, learning curves of a pretraining run;
* ``paired``: the paired comparison of two probe results over the same folds;
* ``folds``: the probe on a corpus's official folds (``e2v-probe --folds DIR``);
* ``benchmark``: ``e2v-benchmark``, extraction + probe + results table for several corpora.
"""
