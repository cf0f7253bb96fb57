"""Synthetic speech-like audio for smoke runs and tests (no download needed).

Harmonic tones with a vibrato-like pitch glide plus noise: enough temporal structure for the
tiny model to learn something, generated deterministically from a seed.
"""

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from ..cli import run_main


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


def get_parser():
    import argparse

    p = argparse.ArgumentParser(description="Write a synthetic 16 kHz corpus with train/valid manifests.")
    p.add_argument("dest", help="output folder (wav/ and train.tsv, valid.tsv)")
    p.add_argument("--train", type=int, default=200, help="training utterances")
    p.add_argument("--valid", type=int, default=20, help="validation utterances")
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--max-seconds", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(args) -> Path:
    if args.train < 1 or args.valid < 0:
        raise ValueError(f"--train {args.train} --valid {args.valid}: need at least 1 training utterance and "
                         f"0 or more validation utterances")
    if not 0 < args.min_seconds < args.max_seconds:
        raise ValueError(f"--min-seconds {args.min_seconds} --max-seconds {args.max_seconds}: need "
                         f"0 < min < max")
    if Path(args.dest).exists() and not Path(args.dest).is_dir():
        raise ValueError(f"{args.dest}: is a file, expected a folder to write wav/, train.tsv and valid.tsv into")
    return write_corpus(Path(args.dest), (("train", args.train), ("valid", args.valid)),
                        int(args.min_seconds * 16000), int(args.max_seconds * 16000), args.seed)


def cli_main(argv: Optional[List[str]] = None) -> None:
    """Console script ``e2v-synth-corpus``: bad input is one ``e2v-synth-corpus: error: ...`` line and exit 2."""
    args = get_parser().parse_args(argv)
    root = run_main("e2v-synth-corpus", main, args, (ValueError,))
    print(f"wrote {args.train} + {args.valid} utterances and manifests to {root}")


if __name__ == "__main__":
    cli_main()
