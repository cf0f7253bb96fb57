"""Speed of ``e2v-manifest`` against fairseq's own ``examples/wav2vec/wav2vec_manifest.py``, one run.

Synthesises ``--files`` tiny 16 kHz mono wavs (0.1-0.5 s) in nested folders under
``--work/audio`` (kept there: a later run with the same count reuses them), then times, each
as a fresh subprocess so that start-up counts for every tool, on the same folder:

* fairseq's ``wav2vec_manifest.py`` (it ships inside the installed fairseq package), run with
  this Python and ``--ext wav --valid-percent 0.01``; it reads ``soundfile.info`` per file;
* ``e2v-manifest --workers 1`` and ``--workers 2`` with the same options (one header read per
  wav, see ``manifests/audio_info.py``).

One untimed pass first puts the folder in the page cache; then ``--repeats`` rounds run the
three tools in turn and the best time of each is kept. Prints seconds, files/second, the
ratio to fairseq, whether all three listed the same files with the same lengths, and the
machine's parallel headroom: how much faster two bare processes read the headers (half each)
than one, the ceiling for what a second worker can give.

    .venv/bin/python recipes/benchmark/manifest_speed.py --files 5000 --work /tmp/manifest_bench
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import soundfile as sf

FAIRSEQ = "fairseq wav2vec_manifest.py"


def synthesise(audio: Path, n_files: int, seed: int = 0) -> None:
    """``n_files`` wavs in ``audio/spkNN/sessN/uttNNNNN.wav``; skipped when a marker says they exist."""
    marker = audio / f".complete_{n_files}"
    if marker.exists():
        return
    rng = np.random.default_rng(seed)
    for i in range(n_files):
        folder = audio / f"spk{i % 50:02d}" / f"sess{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        x = (0.1 * rng.standard_normal(int(rng.integers(1600, 8000)))).astype(np.float32)
        sf.write(folder / f"utt{i:05d}.wav", x, 16000, subtype="PCM_16")
    marker.touch()


def commands(audio: Path, work: Path) -> Dict[str, List[str]]:
    """The three command lines, each writing into its own folder under ``work``."""
    import fairseq

    script = Path(fairseq.__file__).parent / "examples" / "wav2vec" / "wav2vec_manifest.py"
    if not script.is_file():
        raise SystemExit(f"{script} does not exist; this benchmark needs a fairseq install that ships its examples")
    e2v = str(Path(sys.executable).with_name("e2v-manifest"))
    common = ["--ext", "wav", "--valid-percent", "0.01"]
    return {
        FAIRSEQ: [sys.executable, str(script), str(audio), "--dest", str(work / "fairseq"), *common],
        "e2v-manifest --workers 1": [e2v, str(audio), "--dest", str(work / "e2v_w1"), *common, "--workers", "1",
                                     "--quiet"],
        "e2v-manifest --workers 2": [e2v, str(audio), "--dest", str(work / "e2v_w2"), *common, "--workers", "2",
                                     "--quiet"],
    }


def timed(cmd: List[str]) -> float:
    """Wall-clock seconds of one run (fails loudly with the tool's output when it fails)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return seconds


def listed_lengths(dest: Path) -> Dict[str, int]:
    """{absolute path: listed length} over train.tsv and valid.tsv."""
    out = {}
    for split in ("train.tsv", "valid.tsv"):
        lines = (dest / split).read_text(encoding="utf-8").splitlines()
        for line in lines[1:]:
            rel, n = line.split("\t")
            out[os.path.normpath(os.path.join(lines[0], rel))] = int(n)
    return out


_HALF_SCAN = """
import os, sys, time
import soundfile as sf
root, part = sys.argv[1], int(sys.argv[2])
paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".wav"))
start = time.perf_counter()
for p in paths[part::2] if part >= 0 else paths:
    sf.info(p)
print(time.perf_counter() - start)
"""


def parallel_headroom(audio: Path) -> float:
    """How much faster two processes read all headers (each half) than one process (all): the
    best a second worker can do on this machine, with no pool in the way."""
    def run(*parts: int) -> float:
        procs = [subprocess.Popen([sys.executable, "-c", _HALF_SCAN, str(audio), str(p)], stdout=subprocess.PIPE,
                                  text=True) for p in parts]
        return max(float(p.communicate()[0]) for p in procs)

    one = min(run(-1) for _ in range(3))
    two = min(run(0, 1) for _ in range(3))
    return one / two


def get_parser() -> argparse.ArgumentParser:
    """Command-line options of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=5000, help="wavs to synthesise (at least 5000 for the README numbers)")
    p.add_argument("--work", default="/tmp/manifest_bench", help="folder for the audio (cached) and the manifests")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds; the best of each tool is kept")
    return p


def main(args: argparse.Namespace) -> Dict[str, float]:
    """Run the benchmark; return {tool: best seconds} and print the table."""
    work = Path(args.work).resolve()
    audio = work / "audio"
    synthesise(audio, args.files)
    cmds = commands(audio, work)
    for cmd in cmds.values():  # warm-up: page cache, .pyc files
        timed(cmd)
    best = {name: float("inf") for name in cmds}
    for _ in range(args.repeats):
        for name, cmd in cmds.items():
            best[name] = min(best[name], timed(cmd))
    base = best[FAIRSEQ]
    print(f"{args.files} wavs (16 kHz mono, 0.1-0.5 s) in {audio}; best of {args.repeats}, "
          f"each a fresh process (start-up included), {os.cpu_count()} CPU(s)")
    print(f"| {'tool':<28} | seconds | files / s | vs fairseq |")
    print(f"|{'-' * 30}|---------|-----------|------------|")
    for name, seconds in best.items():
        print(f"| {name:<28} | {seconds:7.3f} | {args.files / seconds:9,.0f} | {base / seconds:9.2f}x |")
    lengths = [listed_lengths(work / d) for d in ("fairseq", "e2v_w1", "e2v_w2")]
    same = lengths[0] == lengths[1] == lengths[2] and len(lengths[0]) == args.files
    print(f"all three list the same {len(lengths[0])} files with the same lengths: {same}")
    print(f"parallel headroom of this machine: two processes reading half the headers each are "
          f"{parallel_headroom(audio):.2f}x as fast as one reading all (the ceiling for --workers 2)")
    return best


if __name__ == "__main__":
    main(get_parser().parse_args())
