from . import emotion2vec_criterion  # noqa: F401  (registers the criterion)
