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


def write_fanout_manifest(root: Path, manifest: Path, utterances: int, real_files: int = 8,
                          min_len: int = 8000, max_len: int = 40000, seed: int = 0) -> Path:
    """A manifest of ``utterances`` distinct paths that resolve to ``real_files`` real wavs.

    Layout under ``root`` (made once, reused while ``real_files`` and the fan-out still fit)::

        real/utt00.wav ... utt{real_files-1}.wav      the only audio, 16 kHz mono
        hub/0000 ... hub/{F-1}   -> ../real           F directory symlinks
        fan/0000 ... fan/{F-1}   -> ../hub            F more

    so that ``fan/AAAA/BBBB/uttKK.wav`` names ``F * F * real_files`` distinct paths from ``2 F``
    links, ``F = ceil(sqrt(utterances / real_files))``: millions of manifest lines without
    millions of files. Utterance ``i`` is ``(A, B, K) = (i // (F * real_files), (i // real_files)
    % F, i % real_files)``; its listed length is the real file's. Returns ``manifest``.
    """
    root = Path(root).resolve()
    fan = max(1, int(np.ceil(np.sqrt(utterances / real_files))))
    real, hub, top = root / "real", root / "hub", root / "fan"
    rng = np.random.default_rng(seed)
    lengths = [int(n) for n in rng.integers(min_len, max_len, size=real_files)]
    real.mkdir(parents=True, exist_ok=True)
    for k, n in enumerate(lengths):
        if not (real / f"utt{k:02d}.wav").exists():
            sf.write(real / f"utt{k:02d}.wav", synth_utterance(n, rng), 16000, subtype="PCM_16")
    lengths = [sf.info(str(real / f"utt{k:02d}.wav")).frames for k in range(real_files)]
    for folder, target in ((hub, "../real"), (top, "../hub")):
        folder.mkdir(exist_ok=True)
        for j in range(fan):
            link = folder / f"{j:04d}"
            if not link.is_symlink():
                link.symlink_to(target, target_is_directory=True)
    manifest = Path(manifest)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    block = 1 << 20
    with open(manifest, "w") as f:
        f.write(f"{root}\n")
        for lo in range(0, utterances, block):
            f.write("".join(
                f"fan/{i // (fan * real_files):04d}/{(i // real_files) % fan:04d}/utt{i % real_files:02d}.wav"
                f"\t{lengths[i % real_files]}\n" for i in range(lo, min(lo + block, utterances))))
    return manifest
