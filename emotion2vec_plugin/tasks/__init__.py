from . import emotion2vec_pretraining  # noqa: F401  (registers the task)
