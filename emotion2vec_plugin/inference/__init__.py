"""Inference: the featurizer shared by e2v-extract, e2v-predict and the training probe, and those
two console scripts (``extract_cli``, ``predict_cli``)."""
