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

A second labelled task, **contour** (``OUT/contour/<speaker>/*.wav``, ``OUT/contour.csv``), whose
classes differ only in *where the pitch moves*: every word of the sentence gets its own SSML
``<prosody pitch="+N%">`` (``espeak-ng -m``), N following one of four shapes over the sentence,
each scaled to zero mean and unit spread over the words (weighted by duration,
:func:`contour_offsets`), so the classes share their mean pitch and pitch spread and differ in
the order of the offsets:

=========  ============================================
class      pitch offset of word i of n, t = (i+0.5)/n
=========  ============================================
rise       t - 0.5           (low to high)
fall       0.5 - t           (high to low)
peak       -cos(2 pi t)      (low, high in the middle, low)
dip        cos(2 pi t)       (high, low in the middle, high)
=========  ============================================

Base pitch, rate, loudness and the contour's depth are drawn from one distribution for all four
classes (``CONTOUR_GLOBAL``), and espeak's own intonation range is narrowed
(``<prosody range=...>``) so that the word offsets dominate. Global statistics are thus matched
by construction; :func:`measure_prosody` (autocorrelation F0 and RMS) checks it on the audio,
and ``OUT/contour_stats.json`` lists the measured per-class means. The contour voices
(``CONTOUR_VOICES``) are other espeak-ng accents and variants than the first task's, and
unlabelled utterances come from both tasks and all voices.

Without espeak-ng (or with ``--force-fallback``) a numpy fallback makes both tasks: one harmonic tone
burst per syllable, whose pitch, rate, loudness and pauses follow the first table, and for the contour
task whose per-syllable pitch follows the same contour offsets. It is announced loudly, recorded as
``"engine": "numpy-fallback"`` in ``OUT/corpus.json``, and the demo report states it.
"""

import argparse
import csv
import json
import logging
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Dict, List, Optional, Tuple

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

# the contour task: the shape of the per-word pitch offsets over t in (0, 1)
CONTOURS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rise": lambda t: t - 0.5,
    "fall": lambda t: 0.5 - t,
    "peak": lambda t: -np.cos(2 * np.pi * t),
    "dip": lambda t: np.cos(2 * np.pi * t),
}
# every contour class draws its global settings from these uniform ranges: pitch -p, rate -s,
# amplitude -a, and the contour depth (semitones per unit of the normalised shape)
CONTOUR_GLOBAL = {"pitch": (35, 65), "rate": (140, 185), "amplitude": (80, 130), "depth": (5, 7)}
CONTOUR_RANGE = "20%"  # espeak's own intonation range inside the sentence (<prosody range>)
CONTOUR_VOICES = ["en-029+m2", "en-gb-x-gbclan+f3", "en-us-nyc+m4", "en-gb-x-gbcwmd+f1", "en-gb-scotland+m6",
                  "en-us+f4", "en-gb-x-rp+m8", "en-gb+f5"]


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def jittered(label: str, rng: np.random.Generator) -> Dict[str, int]:
    base = CLASSES[label]
    return {k: int(round(v + rng.uniform(-JITTER[k], JITTER[k]))) for k, v in base.items()}


def contour_offsets(contour: str, words: List[str], depth: float) -> np.ndarray:
    """Pitch offsets (%) of the words: the contour's shape at the word centres, ``depth`` semitones per
    unit. [len(words)] ints.

    The shape is centred and scaled to unit std with every word weighted by its expected duration
    (letters, the last word x1.6 for espeak's final lengthening), so that the duration-weighted mean
    log pitch, which is what the audio's mean F0 sees, is the same for every class: with equal
    weights the classes ending high came out 0.1 octave higher than those ending low (measured on
    64 utterances per class; 0.03 octave with these weights). Semitones make the offsets symmetric
    in log pitch (+40% and -40% are not).
    """
    n = len(words)
    shape = CONTOURS[contour]((np.arange(n) + 0.5) / n)
    w = np.array([max(1, len(x.strip(".,;:!?"))) for x in words], dtype=float)
    w[-1] *= 1.6
    shape = shape - (w * shape).sum() / w.sum()
    shape = shape / np.sqrt((w * shape * shape).sum() / w.sum())
    return np.round(100 * (2 ** (depth * shape / 12) - 1)).astype(int)


def contour_ssml(text: str, contour: str, depth: float) -> str:
    """SSML for ``espeak-ng -m``: every word in its own ``<prosody pitch>``, the sentence in a narrowed range."""
    words = text.split()
    body = " ".join(f'<prosody pitch="{o:+d}%">{w}</prosody>' for o, w in zip(contour_offsets(contour, words, depth), words))
    return f'<speak><prosody range="{CONTOUR_RANGE}">{body}</prosody></speak>'


def contour_prosody(contour: str, rng: np.random.Generator) -> Dict[str, object]:
    """Global settings of one contour utterance: the same distribution for every class."""
    out: Dict[str, object] = {k: int(round(rng.uniform(lo, hi))) for k, (lo, hi) in CONTOUR_GLOBAL.items()}
    out.update(gap=0, contour=contour)
    return out


def clamped(prosody: Dict[str, int]) -> Dict[str, int]:
    """The jittered settings inside espeak-ng's ranges (pitch 0..99, rate >= 80 wpm, amplitude 10..200,
    word gap >= 0, in 10 ms units); both engines use these, so a jitter below 0 (the gap of happy and
    angry is 0 +- 2) is a gap of 0 for either."""
    return {**prosody, "pitch": max(0, min(99, prosody["pitch"])), "rate": max(80, prosody["rate"]),
            "amplitude": max(10, min(200, prosody["amplitude"])), "gap": max(0, prosody["gap"])}


def speak(text: str, voice: str, prosody: Dict[str, int]) -> np.ndarray:
    """espeak-ng -> 16 kHz mono float32 (SSML per word when ``prosody`` names a contour)."""
    contour = prosody.get("contour")
    if contour is not None:
        text = contour_ssml(text, contour, prosody["depth"])
    p = clamped(prosody)
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        cmd = ["espeak-ng", *(["-m"] if contour is not None else []), "-v", voice, "-p", str(p["pitch"]),
               "-s", str(p["rate"]), "-a", str(p["amplitude"]), "-g", str(p["gap"]), "-w", tmp.name, text]
        subprocess.run(cmd, check=True, capture_output=True)
        wav, sr = sf.read(tmp.name, dtype="float32")
    wav = torchaudio.functional.resample(torch.from_numpy(wav), sr, SAMPLE_RATE).numpy()
    return wav


def fallback_syllables(text: str) -> int:
    """Tone bursts of the fallback for a sentence: one per 4 characters, at least 4."""
    return max(4, len(text) // 4)


def fallback_syllable_samples(rate: int, last: bool = False) -> int:
    """Samples of one fallback syllable at ``rate`` words per minute (2.2 syllables a word); the last
    of a sentence is 1.6x as long."""
    return int(SAMPLE_RATE * 60 / rate / 2.2 * (1.6 if last else 1.0))


def synth_fallback(text: str, voice: str, prosody: Dict[str, int], seed: int) -> np.ndarray:
    """numpy stand-in with the same prosody knobs: syllable-like tone bursts."""
    rng = np.random.default_rng(seed)
    prosody = clamped(prosody)
    voices = VOICES + CONTOUR_VOICES
    f0 = 80 + 2.2 * prosody["pitch"] + 40 * (voices.index(voice) % 4 if voice in voices else 0)
    syllables = fallback_syllables(text)
    contour = prosody.get("contour")
    offsets = (contour_offsets(contour, ["syl"] * syllables, prosody["depth"]) / 100 if contour
               else np.zeros(syllables))
    gap = int(SAMPLE_RATE * 0.01 * prosody["gap"])
    parts = []
    for i in range(syllables):
        # the last syllable 1.6x as long: the final lengthening contour_offsets weights its words by
        syl_len = fallback_syllable_samples(prosody["rate"], last=i == syllables - 1)
        t = np.arange(syl_len) / SAMPLE_RATE
        f = f0 * (1 + offsets[i]) * (1 + (0.03 if contour else 0.15) * rng.standard_normal()) * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))
        phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
        env = np.sin(np.pi * np.arange(syl_len) / syl_len)
        parts.append(env * sum(np.sin(k * phase) / k for k in range(1, 6)))
        parts.append(np.zeros(gap))
    wav = np.concatenate(parts) * prosody["amplitude"] / 400 + 0.003 * rng.standard_normal(sum(map(len, parts)))
    return wav.astype(np.float32)


def _render(job: Tuple[str, str, str, Dict[str, int], int, bool, bool]) -> Tuple[str, int, Optional[dict]]:
    """Write one utterance; its :func:`measure_prosody` when the job asks (the labelled contour set)."""
    path, text, voice, prosody, seed, use_espeak, measure = job
    wav = speak(text, voice, prosody) if use_espeak else synth_fallback(text, voice, prosody, seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, wav, SAMPLE_RATE, subtype="PCM_16")
    return path, len(wav), measure_prosody(wav) if measure else None


CONTOUR_PROSODY = "contour_prosody.json"  # {path under the corpus folder: measure_prosody of that file}
CORPUS_SUMMARY = "corpus.json"  # engine ("espeak-ng" or "numpy-fallback"), utterance counts, hours


def load_summary(corpus_dir: str) -> Optional[dict]:
    """``corpus.json`` of a corpus folder; None for a folder made before it was written."""
    path = os.path.join(corpus_dir, CORPUS_SUMMARY)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def class_stats(measured: List[Tuple[str, dict]]) -> Dict[str, Dict[str, float]]:
    """Per class, the mean of every scalar of :func:`measure_prosody` (and of its quarters)."""
    out: Dict[str, Dict[str, float]] = {}
    for label in sorted({lab for lab, _ in measured}):
        ms = [m for lab, m in measured if lab == label]
        out[label] = {k: float(np.mean([m[k] for m in ms], axis=0)) for k in ms[0] if k != "quarters"}
        out[label]["quarters"] = [float(v) for v in np.mean([m["quarters"] for m in ms], axis=0)]
        out[label]["n"] = len(ms)
    return out


def plan(out: str, speakers: int, labelled_per_class: int, unlabelled: int, seed: int, contour_speakers: int = 0,
         contour_per_class: int = 0, contour_unlabelled: int = 0):
    """Jobs of every part, and the rows of ``labelled.csv`` and ``contour.csv``; deterministic for a seed
    (the first task's jobs do not depend on the contour arguments)."""
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
    crng = np.random.default_rng([seed, 1])  # its own stream: the first task stays as it was
    contour_rows = []
    for s, voice in enumerate(CONTOUR_VOICES[:contour_speakers]):
        for label in CONTOURS:
            for k in range(contour_per_class):
                text = SENTENCES[(k + 3 * s) % len(SENTENCES)]
                path = os.path.join(out, "contour", f"cspk{s}", f"cspk{s}_{label}_{k:03d}.wav")
                jobs.append((path, text, voice, contour_prosody(label, crng), seed + n, None))
                contour_rows.append((os.path.relpath(path, out), label, f"cspk{s}"))
                n += 1
    all_voices = VOICES[:speakers] + CONTOUR_VOICES
    for k in range(contour_unlabelled):
        voice, label = all_voices[int(crng.integers(len(all_voices)))], list(CONTOURS)[int(crng.integers(len(CONTOURS)))]
        path = os.path.join(out, "unlabelled", f"cutt{k:05d}.wav")
        jobs.append((path, SENTENCES[int(crng.integers(len(SENTENCES)))], voice, contour_prosody(label, crng),
                     seed + n, None))
        n += 1
    return jobs, rows, contour_rows


def f0_track(wav: np.ndarray, sr: int = SAMPLE_RATE, hop: float = 0.01, win: float = 0.04, fmin: float = 60.0,
             fmax: float = 400.0, voicing: float = 0.7) -> np.ndarray:
    """F0 (Hz) every ``hop`` seconds by normalised autocorrelation, NaN where unvoiced or silent. [frames]

    Per frame of ``win`` s: the correlation of the frame with its copy shifted by every lag of
    [sr/fmax, sr/fmin], normalised by both parts' energies; voiced when the best is above
    ``voicing``; the first lag within 90% of the best (which avoids the subharmonics that a plain
    argmax picks) moved up to its local maximum gives F0 = sr / lag.
    """
    n, h = int(win * sr), int(hop * sr)
    lo, hi = int(sr / fmax), int(sr / fmin)
    starts = np.arange(0, len(wav) - n - hi, h)
    if len(starts) == 0:
        return np.zeros(0)
    span = np.lib.stride_tricks.sliding_window_view(wav.astype(np.float64), n + hi)[starts]
    span = span - span.mean(1, keepdims=True)  # [F, n + hi]
    a = span[:, :n]
    lags = np.arange(lo, hi)
    # correlation of a with span[k:k+n] for every k, by FFT; energies of the shifted windows by cumsum
    size = 1 << int(np.ceil(np.log2(2 * (n + hi))))
    num = np.fft.irfft(np.conj(np.fft.rfft(a, size)) * np.fft.rfft(span, size), size)[:, lags]
    c = np.concatenate([np.zeros((len(starts), 1)), np.cumsum(span * span, 1)], 1)
    den = np.sqrt((a * a).sum(1, keepdims=True) * (c[:, lags + n] - c[:, lags])) + 1e-12
    r = num / den
    best = r.max(1)
    f0 = np.full(len(starts), np.nan)
    for i in np.where((best > voicing) & ((a * a).mean(1) > 1e-6))[0]:
        k = int(np.argmax(r[i] > 0.9 * best[i]))
        while k + 1 < len(lags) and r[i, k + 1] > r[i, k]:
            k += 1
        f0[i] = sr / lags[k]
    return f0


def measure_prosody(wav: np.ndarray, sr: int = SAMPLE_RATE) -> Dict[str, float]:
    """What the contour classes must share and where they differ, measured on the audio.

    Global: ``duration`` (s), ``rms`` (of the samples above -40 dB of the peak frame), ``f0_median`` and
    ``logf0_mean`` (voiced frames). Shape: ``slope`` (octaves per second, least squares of log2 F0 on
    time), ``quarters`` (median log2 F0 of each quarter of the voiced frames minus their median) and
    ``middle`` (the middle half's median minus the two outer quarters', octaves).
    """
    f0 = f0_track(wav, sr)
    voiced = np.where(~np.isnan(f0))[0]
    if len(voiced) < 8:
        raise ValueError(f"only {len(voiced)} voiced frames: too short or unvoiced to measure a contour")
    frame_rms = np.sqrt(np.convolve(wav.astype(np.float64) ** 2, np.ones(400) / 400, mode="valid")[::160])
    loud = frame_rms[frame_rms > frame_rms.max() * 0.01]
    lf = np.log2(f0[voiced])
    t = voiced * 0.01
    q = [float(np.median(lf[idx])) for idx in np.array_split(np.arange(len(lf)), 4)]
    med = float(np.median(lf))
    return {"duration": len(wav) / sr, "rms": float(np.sqrt((loud ** 2).mean())), "f0_median": float(2 ** med),
            "logf0_mean": float(lf.mean()), "slope": float(np.polyfit(t, lf, 1)[0]),
            "quarters": [v - med for v in q], "middle": (q[1] + q[2]) / 2 - (q[0] + q[3]) / 2}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Synthesise the demo's emotional-speech corpus with espeak-ng.")
    p.add_argument("out", help="output folder")
    p.add_argument("--speakers", type=int, default=6, help=f"voices, at most {len(VOICES)}")
    p.add_argument("--labelled-per-class", type=int, default=12, help="labelled utterances per speaker and class")
    p.add_argument("--unlabelled", type=int, default=1200, help="unlabelled utterances for pretraining")
    p.add_argument("--contour-speakers", type=int, default=8,
                   help=f"voices of the contour task (0: no contour task), at most {len(CONTOUR_VOICES)}")
    p.add_argument("--contour-per-class", type=int, default=8, help="contour utterances per speaker and class")
    p.add_argument("--contour-unlabelled", type=int, default=600,
                   help="unlabelled contour utterances added to the pretraining set (all voices)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--force-fallback", action="store_true", help="use the numpy fallback even if espeak-ng exists")
    p.add_argument("--quiet", action="store_true")
    return p


def main(args) -> Dict[str, object]:
    if not 1 < args.speakers <= len(VOICES):
        raise ValueError(f"--speakers {args.speakers}: need 2..{len(VOICES)} (leave-one-speaker-out folds)")
    if args.contour_speakers == 1 or not 0 <= args.contour_speakers <= len(CONTOUR_VOICES):
        raise ValueError(f"--contour-speakers {args.contour_speakers}: need 0 (no contour task) or "
                         f"2..{len(CONTOUR_VOICES)} (leave-one-speaker-out folds)")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"{args.out}: is a file, expected the output folder")
    use_espeak = espeak_available() and not args.force_fallback
    if not use_espeak:
        logger.warning("espeak-ng not found (or --force-fallback): using the NUMPY FALLBACK corpus of tone bursts; "
                       "install espeak-ng (apt-get install espeak-ng) for synthetic speech")
    jobs, rows, contour_rows = plan(args.out, args.speakers, args.labelled_per_class, args.unlabelled, args.seed,
                                    args.contour_speakers, args.contour_per_class, args.contour_unlabelled)
    contour_label = {os.path.join(args.out, r[0]): r[1] for r in contour_rows}
    jobs = [j[:5] + (use_espeak, j[0] in contour_label) for j in jobs]
    lengths: List[int] = []
    measured: Dict[str, dict] = {}  # contour utterance (its path) -> its measure_prosody, in job order
    with ProcessPoolExecutor(args.workers) as pool:
        for path, n, stats in tqdm(pool.map(_render, jobs, chunksize=16), total=len(jobs), desc="corpus",
                                   disable=args.quiet):
            lengths.append(n)
            if stats is not None:
                measured[path] = stats
    for name, table in (("labelled", rows), ("contour", contour_rows)):
        if not table:
            continue
        with open(os.path.join(args.out, f"{name}.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "group"])
            writer.writerows(table)
    summary = {"engine": "espeak-ng" if use_espeak else "numpy-fallback", "utterances": len(jobs),
               "labelled": len(rows), "contour": len(contour_rows), "hours": sum(lengths) / SAMPLE_RATE / 3600}
    with open(os.path.join(args.out, CORPUS_SUMMARY), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)  # the report says which engine made the corpus (demo/report.py)
    if measured:
        summary["contour_stats"] = class_stats([(contour_label[path], m) for path, m in measured.items()])
        with open(os.path.join(args.out, "contour_stats.json"), "w", encoding="utf-8") as f:
            json.dump(summary["contour_stats"], f, indent=2)
        # per utterance too: the report's reference probe on the measured F0 shape (demo/report.py)
        with open(os.path.join(args.out, CONTOUR_PROSODY), "w", encoding="utf-8") as f:
            json.dump({os.path.relpath(path, args.out): m for path, m in measured.items()}, f, indent=1)
    return summary


def cli_main(argv: Optional[List[str]] = None) -> None:
    # force: importing fairseq already configured the root logger at DEBUG
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)
    args = get_parser().parse_args(argv)
    summary = run_main("e2v-demo-corpus", main, args, (ValueError,))
    print(f"e2v-demo-corpus: {summary['utterances']} utterances ({summary['labelled']} labelled, "
          f"{summary['contour']} in the contour task, "
          f"{summary['hours'] * 60:.1f} min of audio) with {summary['engine']} in {args.out}")


if __name__ == "__main__":
    cli_main()
