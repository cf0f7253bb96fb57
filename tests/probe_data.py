"""A small labelled probe set (as e2v-labels writes it) for the in-training probe tests."""

from pathlib import Path

import numpy as np
import soundfile as sf


def write_probe_set(root: Path, split: str = "probe", speakers: int = 3, per_class: int = 6, seed: int = 0,
                    jitter: float = 0.35) -> Path:
    """``root/SPLIT.tsv/.emo/.group``: 2 classes ("low", "high": harmonic tones around 140 / 220 Hz)
    x ``speakers`` x ``per_class`` clips of 0.5-1 s. Each clip's pitch is the class pitch times a
    speaker factor times a log-normal jitter (sigma ``jitter``), so the classes overlap and a
    probe lands between chance and 100%; each speaker is a group."""
    root = Path(root)
    wav_dir = (root / "wav").resolve()
    wav_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines, emo, grp = [str(wav_dir)], [], []
    for s in range(speakers):
        for c, f0 in (("low", 140.0), ("high", 220.0)):
            for k in range(per_class):
                n = int(rng.integers(8000, 16000))
                t = np.arange(n) / 16000
                f = f0 * (1 + 0.1 * s) * np.exp(jitter * rng.standard_normal()) * (1 + 0.03 * np.sin(2 * np.pi * 3 * t))
                phase = 2 * np.pi * np.cumsum(f) / 16000
                x = sum(np.sin(h * phase) / h for h in range(1, 4)) * 0.2 + 0.05 * rng.standard_normal(n)
                name = f"spk{s}_{c}_{k}.wav"
                sf.write(wav_dir / name, x.astype(np.float32), 16000)
                lines.append(f"{name}\t{n}")
                emo.append(c)
                grp.append(f"spk{s}")
    (root / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    (root / f"{split}.emo").write_text("\n".join(emo) + "\n")
    (root / f"{split}.group").write_text("\n".join(grp) + "\n")
    return root
