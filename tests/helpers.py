"""Shared test helpers: the tiny model config (read from the recipe itself) and synthetic audio."""


import os
from pathlib import Path
from typing import List

import numpy as np
import soundfile as sf
import yaml

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes" / "pretrain"
PLUGIN_DIR = REPO / "emotion2vec_plugin"


def tiny_model_cfg(**overrides):
    """Emotion2vecConfig with the fields of recipes/pretrain/arch/tiny.yaml (plus overrides)."""
    from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecConfig

    fields = yaml.safe_load((RECIPES / "arch" / "tiny.yaml").read_text())["model"]
    fields.pop("_name")
    fields.update(seed=1)
    fields.update(overrides)
    return Emotion2vecConfig(**fields)


def synth_utterance(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """A harmonic tone with a pitch glide and noise: enough structure to learn something."""
    t = np.arange(num_samples) / 16000
    f0 = rng.uniform(90, 300) * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 5)) * 0.2 + 0.02 * rng.standard_normal(num_samples)
    return x.astype(np.float32)


def write_corpus(root: Path, splits=(("train", 16), ("valid", 4)), min_len=8000, max_len=24000, seed=0) -> Path:
    """Synthesise wavs under root/wav and fairseq manifests root/<split>.tsv; returns root."""
    rng = np.random.default_rng(seed)
    wav_dir = root / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    for split, n in splits:
        lines: List[str] = [str(wav_dir)]
        for i in range(n):
            length = int(rng.integers(min_len, max_len))
            name = f"{split}_{i:03d}.wav"
            sf.write(wav_dir / name, synth_utterance(length, rng), 16000)
            lines.append(f"{name}\t{length}")
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root
