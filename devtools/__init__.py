"""Development code that the tests and the benchmark scripts share; the plugin never imports it.

Not installed (``setup.py`` packages only ``emotion2vec_plugin`` and ``manifests``): it is imported
from a checkout. The tests find it because pytest puts the repository root on ``sys.path`` (``tests``
is a package); the scripts in ``recipes/benchmark/`` put the root there themselves.

* ``reference_data2vec``: fairseq's own data2vec 2.0, patched to import, the reference of the
  objective tests and of the training-step benchmark;
* ``speed_reference``: our training step as it was before the speed work, frozen (the equivalence
  test and ``train_step_vs_data2vec.py --baseline``);
* ``funasr_fixture``: the tiny seeded model and input of ``tests/data/funasr_tiny_reference.npz``
  (the test rebuilds them, ``compare_funasr.py --write-fixture`` wrote the file from them);
* ``benchmark``: what the benchmark scripts share (architecture recipes, timing, one plain training
  step, fairseq log parsing).
"""
