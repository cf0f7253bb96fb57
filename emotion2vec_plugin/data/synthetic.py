"""Synthetic speech-like audio for smoke runs and tests (no download needed).

Harmonic tones with a vibrato-like pitch glide plus noise: enough temporal structure for the
tiny model to learn something, generated deterministically from a seed.
"""

from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import soundfile as sf


def synth_utterance(num_samples: int, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """One utterance [num_samples] float32 in about [-0.5, 0.5]."""
    t = np.arange(num_samples) / sample_rate
    f0 = rng.uniform(90, 300) * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    x = sum(np.sin(k * phase) / k for k in range(1, 5)) * 0.2 + 0.02 * rng.standard_normal(num_samples)
    return x.astype(np.float32)


def write_corpus(root: Path, splits: Sequence[Tuple[str, int]] = (("train", 16), ("valid", 4)),
                 min_len: int = 8000, max_len: int = 24000, seed: int = 0) -> Path:
    """Write ``root/wav/<split>_NNN.wav`` (16 kHz mono) and fairseq manifests ``root/<split>.tsv``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    wav_dir = (root / "wav").resolve()
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
