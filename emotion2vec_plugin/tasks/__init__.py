from . import emotion2vec_pretraining  # noqa: F401  (registers the task)
from . import emotion2vec_classification  # noqa: F401  (registers the fine-tuning task)
