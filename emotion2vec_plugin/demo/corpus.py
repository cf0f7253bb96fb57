"""``e2v-demo-corpus``: an embedded emotional-speech stand-in, synthesised on the spot.

espeak-ng speaks a fixed set of neutral sentences with several voices ("speakers") and four
prosody settings that stand for arousal/emotion classes, with per-utterance jitter so that the
classes overlap:

=========  =========  ===========  ============  ==========
class      pitch -p   rate -s wpm  amplitude -a  word gap -g
=========  =========  ===========  ============  ==========
neutral    50         165          100           2
happy      75         195          125           0
angry      60         210          180           0
sad        30         120          65            8
=========  =========  ===========  ============  ==========

Every sentence is spoken in every class, so the words carry no label. Output (16 kHz mono wav,
resampled from espeak's 22.05 kHz with torchaudio):

* ``OUT/unlabelled/*.wav``: for pretraining (speakers x classes x sentences, random subset);
* ``OUT/labelled/<speaker>/*.wav`` and ``OUT/labelled.csv`` (``path,label,group``, group =
  speaker), for the probe with leave-one-speaker-out folds.

Without espeak-ng a numpy fallback (harmonic tones whose pitch, rate and loudness follow the same
table) is used, and announced loudly.
"""

import argparse
import csv
import logging
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List, Optional, Tuple

import numpy as np
import soundfile as sf
import torch
import torchaudio
from tqdm import tqdm

from ..cli import run_main

logger = logging.getLogger(__name__)

CLASSES: Dict[str, Dict[str, float]] = {
    "neutral": {"pitch": 50, "rate": 165, "amplitude": 100, "gap": 2},
    "happy": {"pitch": 75, "rate": 195, "amplitude": 125, "gap": 0},
    "angry": {"pitch": 60, "rate": 210, "amplitude": 180, "gap": 0},
    "sad": {"pitch": 30, "rate": 120, "amplitude": 65, "gap": 8},
}
JITTER = {"pitch": 10, "rate": 20, "amplitude": 25, "gap": 2}
VOICES = ["en-us+m1", "en-us+f2", "en-gb+m3", "en-gb+f4", "en-gb-scotland+m5", "en-us+f1", "en-gb-x-rp+m7", "en-us+f5"]
SENTENCES = [
    "The meeting has been moved to Thursday afternoon.",
    "I left the keys on the kitchen table.",
    "We are taking the train to the coast tomorrow.",
    "She said the package would arrive before noon.",
    "There are seven chairs in the other room.",
    "He finally finished reading the long report.",
    "The weather will change again this weekend.",
    "Please put the boxes next to the door.",
    "They painted the fence a different color.",
    "My brother called me late last night.",
    "The results will be posted on the website.",
    "Nobody told me the store was closing early.",
    "We walked along the river for an hour.",
    "The old car needs new tires soon.",
    "I think the dog wants to go outside.",
    "You can pick up the tickets at the front desk.",
    "Our neighbors are moving to another city.",
    "The children built a castle out of sand.",
    "It took three days to fix the computer.",
    "The bus was late again this morning.",
]
SAMPLE_RATE = 16000


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def jittered(label: str, rng: np.random.Generator) -> Dict[str, int]:
    base = CLASSES[label]
    return {k: int(round(v + rng.uniform(-JITTER[k], JITTER[k]))) for k, v in base.items()}


def speak(text: str, voice: str, prosody: Dict[str, int]) -> np.ndarray:
    """espeak-ng -> 16 kHz mono float32."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        cmd = ["espeak-ng", "-v", voice, "-p", str(max(0, min(99, prosody["pitch"]))),
               "-s", str(max(80, prosody["rate"])), "-a", str(max(10, min(200, prosody["amplitude"]))),
               "-g", str(max(0, prosody["gap"])), "-w", tmp.name, text]
        subprocess.run(cmd, check=True, capture_output=True)
        wav, sr = sf.read(tmp.name, dtype="float32")
    wav = torchaudio.functional.resample(torch.from_numpy(wav), sr, SAMPLE_RATE).numpy()
    return wav


def synth_fallback(text: str, voice: str, prosody: Dict[str, int], seed: int) -> np.ndarray:
    """numpy stand-in with the same prosody knobs: syllable-like tone bursts."""
    rng = np.random.default_rng(seed)
    f0 = 80 + 2.2 * prosody["pitch"] + 40 * (VOICES.index(voice) % 4)
    syllables = max(4, len(text) // 4)
    syl_len = int(SAMPLE_RATE * 60 / max(80, prosody["rate"]) / 2.2)
    gap = int(SAMPLE_RATE * 0.01 * prosody["gap"])
    parts = []
    for _ in range(syllables):
        t = np.arange(syl_len) / SAMPLE_RATE
        f = f0 * (1 + 0.15 * rng.standard_normal()) * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))
        phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
        env = np.sin(np.pi * np.arange(syl_len) / syl_len)
        parts.append(env * sum(np.sin(k * phase) / k for k in range(1, 6)))
        parts.append(np.zeros(gap))
    wav = np.concatenate(parts) * prosody["amplitude"] / 400 + 0.003 * rng.standard_normal(sum(map(len, parts)))
    return wav.astype(np.float32)


def _render(job: Tuple[str, str, str, Dict[str, int], int, bool]) -> Tuple[str, int]:
    path, text, voice, prosody, seed, use_espeak = job
    wav = speak(text, voice, prosody) if use_espeak else synth_fallback(text, voice, prosody, seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, wav, SAMPLE_RATE, subtype="PCM_16")
    return path, len(wav)


def plan(out: str, speakers: int, labelled_per_class: int, unlabelled: int, seed: int):
    """Jobs for both parts; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    voices = VOICES[:speakers]
    jobs, rows = [], []
    n = 0
    for s, voice in enumerate(voices):
        for label in CLASSES:
            for k in range(labelled_per_class):
                text = SENTENCES[(k + s) % len(SENTENCES)]
                path = os.path.join(out, "labelled", f"spk{s}", f"spk{s}_{label}_{k:03d}.wav")
                jobs.append((path, text, voice, jittered(label, rng), seed + n, None))
                rows.append((os.path.relpath(path, out), label, f"spk{s}"))
                n += 1
    for k in range(unlabelled):
        voice, label = voices[int(rng.integers(len(voices)))], list(CLASSES)[int(rng.integers(len(CLASSES)))]
        text = SENTENCES[int(rng.integers(len(SENTENCES)))]
        path = os.path.join(out, "unlabelled", f"utt{k:05d}.wav")
        jobs.append((path, text, voice, jittered(label, rng), seed + n, None))
        n += 1
    return jobs, rows


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Synthesise the demo's emotional-speech corpus with espeak-ng.")
    p.add_argument("out", help="output folder")
    p.add_argument("--speakers", type=int, default=6, help=f"voices, at most {len(VOICES)}")
    p.add_argument("--labelled-per-class", type=int, default=12, help="labelled utterances per speaker and class")
    p.add_argument("--unlabelled", type=int, default=1200, help="unlabelled utterances for pretraining")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--force-fallback", action="store_true", help="use the numpy fallback even if espeak-ng exists")
    p.add_argument("--quiet", action="store_true")
    return p


def main(args) -> Dict[str, object]:
    if not 1 < args.speakers <= len(VOICES):
        raise ValueError(f"--speakers {args.speakers}: need 2..{len(VOICES)} (leave-one-speaker-out folds)")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"{args.out}: is a file, expected the output folder")
    use_espeak = espeak_available() and not args.force_fallback
    if not use_espeak:
        logger.warning("espeak-ng not found (or --force-fallback): using the NUMPY FALLBACK corpus of tone bursts; "
                       "install espeak-ng (apt-get install espeak-ng) for synthetic speech")
    jobs, rows = plan(args.out, args.speakers, args.labelled_per_class, args.unlabelled, args.seed)
    jobs = [j[:5] + (use_espeak,) for j in jobs]
    lengths: List[int] = []
    with ProcessPoolExecutor(args.workers) as pool:
        for _, n in tqdm(pool.map(_render, jobs, chunksize=16), total=len(jobs), desc="corpus", disable=args.quiet):
            lengths.append(n)
    with open(os.path.join(args.out, "labelled.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "group"])
        writer.writerows(rows)
    return {"engine": "espeak-ng" if use_espeak else "numpy-fallback", "utterances": len(jobs),
            "labelled": len(rows), "hours": sum(lengths) / SAMPLE_RATE / 3600}


def cli_main(argv: Optional[List[str]] = None) -> None:
    # force: importing fairseq already configured the root logger at DEBUG
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)
    args = get_parser().parse_args(argv)
    summary = run_main("e2v-demo-corpus", main, args, (ValueError,))
    print(f"e2v-demo-corpus: {summary['utterances']} utterances ({summary['labelled']} labelled, "
          f"{summary['hours'] * 60:.1f} min of audio) with {summary['engine']} in {args.out}")


if __name__ == "__main__":
    cli_main()
