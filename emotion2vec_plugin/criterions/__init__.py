from . import emotion2vec_criterion  # noqa: F401  (registers the criterion)
from . import emotion2vec_classification  # noqa: F401  (registers the fine-tuning criterion)
