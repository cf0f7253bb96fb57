"""Shared test helpers: the tiny model config, read from the recipe itself so the two cannot drift."""

from pathlib import Path

import yaml

from emotion2vec_plugin.data.synthetic import synth_utterance, write_corpus  # noqa: F401  (re-exported)

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes" / "pretrain"
PLUGIN_DIR = REPO / "emotion2vec_plugin"


def tiny_model_cfg(**overrides):
    """Emotion2vecConfig with the fields of recipes/pretrain/arch/tiny.yaml (plus overrides)."""
    from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecConfig

    fields = yaml.safe_load((RECIPES / "arch" / "tiny.yaml").read_text())["model"]
    fields.pop("_name", None)
    fields.update(seed=1)
    fields.update(overrides)
    return Emotion2vecConfig(**fields)
