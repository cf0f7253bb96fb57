"""e2v-manifest against fairseq's own ``examples/wav2vec/wav2vec_manifest.py``, same folder, one run.

Synthesises ``--files`` short 16 kHz mono wavs in nested folders (cached in ``--work``), then times,
each as a fresh subprocess so start-up counts for both:

* fairseq's ``wav2vec_manifest.py`` (it ships inside the installed fairseq package; it reads
  ``soundfile.info`` per file);
* ``e2v-manifest --workers 1`` and ``--workers 2`` (header + last-frame read per file, see
  ``manifests/audio_info.py``).

Prints files/second for each and the ratios to fairseq; checks that both list the same lengths.

    python recipes/benchmark/manifest_speed.py --files 5000 --work /tmp/manifest_bench
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def synthesise(root: Path, n: int, seed: int = 0) -> None:
    marker = root / f".done_{n}"
    if marker.exists():
        return
    rng = np.random.default_rng(seed)
    for i in range(n):
        d = root / f"spk{i % 50:02d}" / f"sess{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        x = (0.1 * rng.standard_normal(int(rng.integers(1600, 8000)))).astype(np.float32)
        sf.write(d / f"utt{i:05d}.wav", x, 16000, subtype="PCM_16")
    marker.touch()


def timed(cmd) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def read_lengths(tsv_dir: Path) -> dict:
    out = {}
    for split in ("train", "valid"):
        lines = (tsv_dir / f"{split}.tsv").read_text().splitlines()
        root = lines[0]
        for line in lines[1:]:
            rel, n = line.split("\t")
            out[os.path.normpath(os.path.join(root, rel))] = int(n)
    return out


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=5000)
    p.add_argument("--work", default="/tmp/manifest_bench")
    p.add_argument("--repeats", type=int, default=2, help="best of N for each tool")
    return p


def main(args):
    import fairseq

    work = Path(args.work)
    audio = work / "audio"
    synthesise(audio, args.files)
    fairseq_script = Path(fairseq.__file__).parent / "examples" / "wav2vec" / "wav2vec_manifest.py"
    bin_dir = Path(sys.executable).parent
    runs = {
        "fairseq wav2vec_manifest.py": [sys.executable, str(fairseq_script), str(audio), "--dest", str(work / "fairseq"),
                                        "--ext", "wav", "--valid-percent", "0.01"],
        "e2v-manifest --workers 1": [str(bin_dir / "e2v-manifest"), str(audio), "--dest", str(work / "e2v1"),
                                     "--ext", "wav", "--valid-percent", "0.01", "--workers", "1", "--quiet"],
        "e2v-manifest --workers 2": [str(bin_dir / "e2v-manifest"), str(audio), "--dest", str(work / "e2v2"),
                                     "--ext", "wav", "--valid-percent", "0.01", "--workers", "2", "--quiet"],
    }
    seconds = {name: min(timed(cmd) for _ in range(args.repeats)) for name, cmd in runs.items()}
    base = seconds["fairseq wav2vec_manifest.py"]
    print(f"{args.files} files, best of {args.repeats}, start-up included")
    for name, s in seconds.items():
        print(f"  {name:<30} {s:6.2f} s  {args.files / s:8.0f} files/s  x{base / s:.2f} vs fairseq")
    same = read_lengths(work / "fairseq") == read_lengths(work / "e2v1") == read_lengths(work / "e2v2")
    print(f"  same files and lengths listed by all three: {same}")
    return seconds


if __name__ == "__main__":
    main(get_parser().parse_args())
