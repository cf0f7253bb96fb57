"""The demo corpus' contour task (demo/corpus.py): classes differ in where the pitch moves, not in
global pitch, loudness or duration; checked on the offsets, on a known chirp and on espeak-ng audio."""

import os

import numpy as np
import pytest

from emotion2vec_plugin.demo import corpus
from emotion2vec_plugin.demo.corpus import CONTOURS, contour_offsets, measure_prosody

WORDS = "We are taking the train to the coast tomorrow.".split()


def weights(words):
    w = np.array([len(x.strip(".")) for x in words], dtype=float)
    w[-1] *= 1.6
    return w


def test_contour_offsets_share_mean_and_spread_and_differ_in_order():
    w = weights(WORDS)
    logs = {}
    for name in CONTOURS:
        off = contour_offsets(name, WORDS, 6.0)
        st = 12 * np.log2(1 + off / 100)  # back to semitones (rounding to 1% is < 0.18 st)
        logs[name] = st
        assert abs((w * st).sum() / w.sum()) < 0.1, name  # duration-weighted mean log pitch: 0
        assert np.sqrt((w * st * st).sum() / w.sum()) == pytest.approx(6.0, abs=0.1), name
    n = len(WORDS)
    assert np.all(np.diff(logs["rise"]) > 0) and np.all(np.diff(logs["fall"]) < 0)
    mid = slice(n // 3, n - n // 3)
    assert logs["peak"][mid].min() > max(logs["peak"][0], logs["peak"][-1])
    assert logs["dip"][mid].max() < min(logs["dip"][0], logs["dip"][-1])
    # global settings come from one distribution whatever the class
    a = corpus.contour_prosody("rise", np.random.default_rng(3))
    b = corpus.contour_prosody("dip", np.random.default_rng(3))
    assert {k: v for k, v in a.items() if k != "contour"} == {k: v for k, v in b.items() if k != "contour"}


def test_f0_of_a_chirp():
    sr = corpus.SAMPLE_RATE
    t = np.arange(int(2.5 * sr)) / sr
    f = 120 * 2 ** (t / 2.5)  # one octave up in 2.5 s: 0.4 octave/s, median 120 * sqrt(2) Hz
    phase = 2 * np.pi * np.cumsum(f) / sr
    wav = (0.3 * np.sin(phase) + 0.6 * np.sin(2 * phase)).astype(np.float32)  # 2nd harmonic louder
    m = measure_prosody(wav)
    assert m["slope"] == pytest.approx(0.4, abs=0.01)
    assert m["f0_median"] == pytest.approx(120 * 2 ** 0.5, rel=0.02)
    assert m["middle"] == pytest.approx(0.0, abs=0.02) and m["quarters"][0] < m["quarters"][3]


def test_plan_keeps_the_first_task_and_speaks_every_sentence_in_every_contour(tmp_path):
    first, rows, none = corpus.plan(str(tmp_path), 2, 2, 5, seed=0)
    jobs, rows2, contour_rows = corpus.plan(str(tmp_path), 2, 2, 5, seed=0, contour_speakers=3,
                                            contour_per_class=2, contour_unlabelled=4)
    assert none == [] and rows2 == rows and jobs[:len(first)] == first
    assert len(contour_rows) == 3 * 4 * 2 and len(jobs) == len(first) + 3 * 4 * 2 + 4
    by_label = {}
    for job, (path, label, group) in zip(jobs[len(first):], contour_rows):
        assert job[3]["contour"] == label and os.path.join(str(tmp_path), path) == job[0]
        by_label.setdefault((group, label), []).append(job[1])
    for group in ("cspk0", "cspk1", "cspk2"):  # the words carry no label
        assert len({tuple(by_label[(group, label)]) for label in CONTOURS}) == 1


@pytest.mark.skipif(not corpus.espeak_available(), reason="espeak-ng not installed")
def test_espeak_contours_differ_in_shape_with_matched_global_statistics():
    """The same voice, sentence, base pitch, rate, loudness and depth; only the contour differs."""
    measured = {name: [] for name in CONTOURS}
    for voice in ("en-029+m2", "en-gb+f5"):
        for text in corpus.SENTENCES[:2]:
            for name in CONTOURS:
                prosody = {"pitch": 50, "rate": 160, "amplitude": 100, "depth": 6, "gap": 0, "contour": name}
                measured[name].append(measure_prosody(corpus.speak(text, voice, prosody)))
    mean = {name: {k: np.mean([m[k] for m in ms]) for k in ("logf0_mean", "rms", "duration", "slope", "middle")}
            for name, ms in measured.items()}
    for key, tol in (("logf0_mean", 0.08), ("rms", 0.1), ("duration", 0.05)):  # octaves; relative; relative
        values = [m[key] for m in mean.values()]
        spread = max(values) - min(values) if key == "logf0_mean" else max(values) / min(values) - 1
        assert spread < tol, (key, values)
    # shape: rise and fall by their slope, peak and dip by the middle against the ends (octaves)
    assert mean["rise"]["slope"] > 0.15 and mean["fall"]["slope"] < -0.15
    assert mean["peak"]["middle"] > 0.2 and mean["dip"]["middle"] < -0.2
    assert abs(mean["rise"]["middle"]) < 0.15 and abs(mean["fall"]["middle"]) < 0.15


# the quick demo's corpus stage (recipes/demo.sh --quick): 3 speakers x 4 classes x 4, 60 unlabelled, and
# 2 contour speakers x 4 contours x 2, 20 unlabelled
QUICK_CORPUS = ["--speakers", "3", "--labelled-per-class", "4", "--unlabelled", "60", "--contour-speakers", "2",
                "--contour-per-class", "2", "--contour-unlabelled", "20"]


def fallback_samples(text: str, prosody: dict) -> int:
    """Length of a fallback utterance, by hand: syllables x (syllable + gap), the last syllable 1.6x."""
    p = corpus.clamped(prosody)
    n = corpus.fallback_syllables(text)
    syllable, last = (int(corpus.SAMPLE_RATE * 60 / p["rate"] / 2.2 * k) for k in (1.0, 1.6))
    return (n - 1) * syllable + last + n * int(corpus.SAMPLE_RATE * 0.01 * p["gap"])


def test_numpy_fallback_makes_both_tasks_of_the_quick_demo(tmp_path):
    """Without espeak-ng (--force-fallback): every file, its length and its label, for both tasks."""
    import csv
    import json

    import soundfile as sf

    out = tmp_path / "corpus"
    corpus.cli_main([str(out), *QUICK_CORPUS, "--force-fallback", "--quiet", "--workers", "1"])
    summary = json.loads((out / "corpus.json").read_text())
    assert summary["engine"] == "numpy-fallback"
    assert (summary["utterances"], summary["labelled"], summary["contour"]) == (48 + 60 + 16 + 20, 48, 16)
    jobs, rows, contour_rows = corpus.plan(str(out), 3, 4, 60, 0, 2, 2, 20)
    # the jitter puts some word gaps below 0 (happy/angry: 0 +- 2): the case that used to crash
    assert any(job[3]["gap"] < 0 for job in jobs)
    for name, table, classes, groups in (("labelled", rows, list(corpus.CLASSES), ["spk0", "spk1", "spk2"]),
                                         ("contour", contour_rows, list(corpus.CONTOURS), ["cspk0", "cspk1"])):
        with open(out / f"{name}.csv", encoding="utf-8") as f:
            read = [tuple(r) for r in csv.reader(f)]
        assert read[0] == ("path", "label", "group") and read[1:] == table
        per = len(table) // (len(classes) * len(groups))
        for g in groups:  # balanced: every class for every speaker
            assert sorted(lab for _, lab, grp in table if grp == g) == sorted(classes * per)
        assert all(os.path.basename(path).startswith(f"{grp}_{lab}_") for path, lab, grp in table)
    lengths = {}
    for path, text, voice, prosody, seed, _ in jobs:
        wav, sr = sf.read(path, dtype="float32")
        assert sr == corpus.SAMPLE_RATE and wav.ndim == 1, path
        assert len(wav) == fallback_samples(text, prosody), path
        assert 0.01 < np.abs(wav).max() < 1.0, path  # audible, not clipped
        lengths[path] = len(wav)
    assert sorted(lengths) == sorted(str(p) for p in out.rglob("*.wav"))
    # the first task's classes are in the audio: sad (slow, long pauses) outlasts angry (fast, none)
    mean_len = {lab: np.mean([lengths[str(out / p)] for p, la, _ in rows if la == lab]) for lab in corpus.CLASSES}
    assert mean_len["sad"] > mean_len["neutral"] > mean_len["angry"]
    # the contour task: the pitch moves as the class says, with the global pitch matched across classes
    stats = json.loads((out / "contour_stats.json").read_text())
    assert stats["rise"]["slope"] > 0.3 > -0.3 > stats["fall"]["slope"]
    assert stats["peak"]["middle"] > 0.3 > -0.3 > stats["dip"]["middle"]
    logf0 = [stats[c]["logf0_mean"] for c in corpus.CONTOURS]
    assert max(logf0) - min(logf0) < 0.1  # octaves (measured 0.036)
    assert len(json.loads((out / corpus.CONTOUR_PROSODY).read_text())) == 16
