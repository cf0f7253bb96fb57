"""emotion2vec pretraining as a fairseq user-dir plugin.

``common.user_dir=.../emotion2vec_plugin`` makes fairseq import this package; fairseq only
auto-imports ``tasks/`` and ``models/`` of a user dir, so the criterion is imported here.
The plain-torch parts (``modules``, ``data.manifest``, ``downstream``) import without fairseq.
"""

__version__ = "0.1.0"

try:
    import fairseq  # noqa: F401
except ImportError:  # inference/export helpers work without fairseq
    fairseq = None

if fairseq is not None:
    from . import criterions, models, tasks  # noqa: F401,E402
