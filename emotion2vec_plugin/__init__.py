"""emotion2vec pretraining as a fairseq user-dir plugin.

``common.user_dir=.../emotion2vec_plugin`` makes fairseq import this package; fairseq only
auto-imports ``tasks/`` and ``models/`` of a user dir, so the criterion is imported here.
The plain-torch parts (``modules``, ``data``, ``evaluation``, ``inference``, ``formats``) import
without fairseq.

The fairseq parts are registered here only when fairseq is already imported (fairseq-hydra-train
imports this package after itself): the console scripts (``e2v-extract``, ``e2v-probe``, ...) then
start without fairseq's import, about 4 s each. A script that imports this package before fairseq
and then builds one of our tasks, models or criteria by name calls :func:`register` first.
"""

import sys

__version__ = "0.1.0"


def register() -> None:
    """Register the task, model and criterion names with fairseq (imports fairseq)."""
    from . import criterions, models, tasks  # noqa: F401


if "fairseq" in sys.modules:
    register()
