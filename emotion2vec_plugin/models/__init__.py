from . import emotion2vec_model  # noqa: F401  (registers the model)
from . import emotion2vec_classifier  # noqa: F401  (registers the fine-tuning model)
