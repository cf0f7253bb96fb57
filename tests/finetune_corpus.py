"""A labelled synthetic corpus in e2v-labels layout (SPLIT.tsv / .emo / .group) for fine-tuning tests.

Classes are harmonic tones that differ in pitch (low / mid / high fundamental, each with a random
jitter, glide and noise), a task a tiny randomly initialised model separates in a few dozen
updates. Per-utterance normalisation removes loudness, so pitch is the only cue.
"""

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import soundfile as sf

PITCH = {"high": 1200.0, "low": 150.0, "mid": 450.0}


def tone(f0: float, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(num_samples) / 16000
    f = f0 * rng.uniform(0.9, 1.1) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 4)) * rng.uniform(0.05, 0.5)
    return (x + 0.01 * rng.standard_normal(num_samples)).astype(np.float32)


def write_labelled_corpus(root: Path, splits: Sequence[Tuple[str, int]] = (("train", 8), ("valid", 4)),
                          classes: Sequence[str] = ("low", "mid", "high"), min_len: int = 6000,
                          max_len: int = 14000, shuffle_labels: bool = False, seed: int = 0) -> Path:
    """``root/wav/*.wav`` and ``root/SPLIT.{tsv,emo,group}``; ``n`` utterances per class and split.
    With ``shuffle_labels`` the label files are permuted (audio unchanged): nothing to learn."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    wav_dir = (root / "wav").resolve()
    wav_dir.mkdir(parents=True, exist_ok=True)
    for split, n in splits:
        rows: List[Dict[str, object]] = []
        for i in range(n):
            for label in classes:
                length = int(rng.integers(min_len, max_len))
                name = f"{split}_{label}_{i:03d}.wav"
                sf.write(wav_dir / name, tone(PITCH[label], length, rng), 16000)
                rows.append({"name": name, "length": length, "label": label, "group": f"spk{i % 2}"})
        order = rng.permutation(len(rows))
        rows = [rows[j] for j in order]
        labels = [r["label"] for r in rows]
        if shuffle_labels:
            labels = [labels[j] for j in rng.permutation(len(labels))]
        (root / f"{split}.tsv").write_text(str(wav_dir) + "\n" + "".join(f"{r['name']}\t{r['length']}\n" for r in rows))
        (root / f"{split}.emo").write_text("".join(f"{lab}\n" for lab in labels))
        (root / f"{split}.group").write_text("".join(f"{r['group']}\n" for r in rows))
    return root
