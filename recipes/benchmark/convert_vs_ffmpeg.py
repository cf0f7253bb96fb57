"""Conversion throughput to 16 kHz mono wav: our PyAV path against one ``ffmpeg`` subprocess per file.

The reference is what FunASR's audio loader falls back to for formats torchaudio cannot read:
one ``ffmpeg -nostdin -threads 0 -i FILE -f s16le -ac 1 -acodec pcm_s16le -ar 16000 -`` per
file, its stdout read into Python (here then written as a wav with soundfile, so both paths
end with the same kind of file). Ours is :func:`manifests.audio_info.convert` (PyAV decode,
mean of the channels, ``torchaudio.functional.resample``, atomic wav write), in this process.

Both run on one worker (one process, sequential files) over the same synthetic corpus, written
first with PyAV: ``--kind mp4`` MELD-like clips (AAC, 48 kHz stereo, 1-6 s) or ``--kind m4a``
MEAD-like clips (AAC in m4a, 48 kHz stereo, 2-5 s). Each path converts one file untimed first
(imports, ffmpeg's page cache). Reported: audio hours converted per minute of wall time and per
minute of CPU time (this process plus its children), and our speed-up. Needs the ``ffmpeg``
program (Debian: ``apt-get install ffmpeg``) for the reference only.

    python recipes/benchmark/convert_vs_ffmpeg.py --kind mp4 --files 200 --work /tmp/conv_bench
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from manifests.audio_info import convert, inspect  # noqa: E402


def write_corpus(folder: Path, kind: str, files: int, seed: int) -> List[Path]:
    """``files`` AAC clips of a harmonic tone with noise, 48 kHz stereo, MELD-like (mp4) or MEAD-like (m4a)."""
    import av

    rng = np.random.default_rng(seed)
    low, high = (1.0, 6.0) if kind == "mp4" else (2.0, 5.0)
    paths = []
    for i in range(files):
        path = folder / f"dia{i // 10}_utt{i % 10}.{kind}"
        if path.exists():
            paths.append(path)
            continue
        n = int(rng.uniform(low, high) * 48000)
        t = np.arange(n) / 48000
        f0 = rng.uniform(100, 250)
        x = sum(0.1 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 6)) + 0.01 * rng.standard_normal(n)
        stereo = np.stack([x, 0.8 * x]).astype(np.float32)
        folder.mkdir(parents=True, exist_ok=True)
        with av.open(str(path), "w", format="ipod" if kind == "m4a" else "mp4") as c:
            s = c.add_stream("aac", rate=48000, layout="stereo")
            for j in range(0, n, 1024):
                fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo[:, j:j + 1024]), format="fltp",
                                                layout="stereo")
                fr.sample_rate, fr.pts = 48000, j
                for p in s.encode(fr):
                    c.mux(p)
            for p in s.encode(None):
                c.mux(p)
        paths.append(path)
    return paths


def ffmpeg_one(src: Path, dest: Path) -> int:
    """FunASR's fallback: one ffmpeg per file, s16le 16 kHz mono on stdout; written as a wav."""
    cmd = ["ffmpeg", "-nostdin", "-threads", "0", "-i", str(src), "-f", "s16le", "-ac", "1", "-acodec", "pcm_s16le",
           "-ar", "16000", "-"]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    audio = np.frombuffer(out, np.int16)
    sf.write(dest, audio, 16000, subtype="PCM_16")
    return len(audio)


def pyav_one(src: Path, dest: Path) -> int:
    written = convert(str(src), str(dest), inspect(str(src)), reuse=False)
    if not written.ok:
        raise RuntimeError(f"{src}: {written.detail}")
    return written.frames


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn, paths: List[Path], out: Path) -> Dict[str, float]:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    fn(paths[0], out / "warmup.wav")
    wall, cpu = time.perf_counter(), cpu_seconds()
    frames = sum(fn(p, out / (p.stem + ".wav")) for p in paths)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    hours = frames / 16000 / 3600
    return {"files": len(paths), "audio_hours": hours, "wall_s": wall, "cpu_s": cpu,
            "hours_per_wall_minute": hours / (wall / 60), "hours_per_cpu_minute": hours / (cpu / 60)}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=("mp4", "m4a"), default="mp4", help="MELD-like mp4 or MEAD-like m4a clips")
    p.add_argument("--files", type=int, default=200, help="number of clips (default: %(default)s)")
    p.add_argument("--work", default="/tmp/conv_bench", help="folder for the clips and both outputs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the numbers here")
    return p


def main(args: argparse.Namespace) -> Dict[str, object]:
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg is not installed (Debian: apt-get install ffmpeg); it is the reference here only")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)  # one worker = one core
    work = Path(args.work)
    paths = write_corpus(work / f"corpus_{args.kind}", args.kind, args.files, args.seed)
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    result = {"kind": args.kind, "ffmpeg": version, "ffmpeg_per_file": timed(ffmpeg_one, paths, work / "out_ffmpeg"),
              "pyav": timed(pyav_one, paths, work / "out_pyav")}
    ref, ours = result["ffmpeg_per_file"], result["pyav"]
    result["speedup_wall"] = ours["hours_per_wall_minute"] / ref["hours_per_wall_minute"]
    result["speedup_cpu"] = ours["hours_per_cpu_minute"] / ref["hours_per_cpu_minute"]
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    r = main(get_parser().parse_args())
    for name in ("ffmpeg_per_file", "pyav"):
        m = r[name]
        print(f"{name:16s} {m['files']} files, {m['audio_hours'] * 60:.1f} audio min: wall {m['wall_s']:.1f} s "
              f"({m['hours_per_wall_minute']:.3f} h/min), cpu {m['cpu_s']:.1f} s ({m['hours_per_cpu_minute']:.3f} h/min)")
    print(f"PyAV vs one ffmpeg per file ({r['kind']}, {r['ffmpeg']}): {r['speedup_wall']:.2f}x wall, "
          f"{r['speedup_cpu']:.2f}x CPU")
