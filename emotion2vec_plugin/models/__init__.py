from . import emotion2vec_model  # noqa: F401  (registers the model)
