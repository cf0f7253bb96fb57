"""The main job, shortened: recipes/demo.sh --quick runs every stage the README's first command runs."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO, run_logged

pytestmark = pytest.mark.slow


def demo(work: Path, *extra: str) -> str:
    return run_logged(["bash", REPO / "recipes" / "demo.sh", "--work", work, "--quick", *extra], timeout=900)


def test_quick_demo_end_to_end_and_resumable(tmp_path):
    work = tmp_path / "demo"
    log = demo(work)
    for i, stage in enumerate(("corpus", "manifest", "pretrain", "export", "extract", "probe", "finetune", "report"),
                              start=1):
        assert f"== stage {i} {stage}" in log and (work / f".done.{stage}").exists(), stage
    report = json.loads((work / "report.json").read_text())
    assert [r["features"] for r in report["rows"]] == ["pretrained", "random", "fbank"]
    for row in report["rows"]:
        probe = json.loads((work / "probe" / f"{row['features']}.json").read_text())
        folds = probe["folds"]
        assert row["folds"] == len(folds) == 3  # 3 speakers: leave-one-speaker-out
        # the report's UA is the mean over folds of the probe's per-fold UA
        assert row["UA"] == pytest.approx(sum(f["UA"] for f in folds) / 3, abs=1e-9)
        # every labelled utterance is tested exactly once per probe seed (confusions summed over folds)
        seeds = len(probe.get("seed_runs", [])) or 1
        matrix = np.asarray(probe["confusion_total"]["matrix"])
        assert matrix.sum() == probe["num_utterances"] * seeds
        for f in folds if seeds == 1 else []:
            # UA = mean recall over the classes present in the fold, recomputed from its confusion
            m = np.asarray(f["confusion"]["matrix"], dtype=float)
            present = m.sum(1) > 0
            assert f["UA"] == pytest.approx((np.diag(m)[present] / m.sum(1)[present]).mean(), abs=1e-9)
    assert report["verdict"] and "random weights" in report["verdict"]
    # paired verdicts over the same speaker folds, raw and per-speaker normalised; the learning curve
    # of the in-training probe (update 0, both validations) with its log-mel reference
    for variant in ("raw", "spknorm"):
        assert [(p["b"], p["n_folds"]) for p in report["paired"][variant]] == [("random", 3), ("fbank", 3)]
    assert [r["features"] for r in report["rows_spknorm"]] == ["pretrained", "random", "fbank"]
    # the aim of issue 14, per variant, from the same paired comparisons: one clause per reference
    for variant in ("raw", "spknorm"):
        assert report["aim"][variant]["text"].count(" of 3 folds") == 2
    assert "**Aim**" in (work / "report.md").read_text() and "aim:" in log
    assert sorted(report["curve"]["probe_ua"]["last"]) == ["0", "10", "20"] and "fbank" in report["curve"]["log_mel"]
    assert "![learning curves](curves.png)" in (work / "report.md").read_text()
    # every stage before the report is timed in it (the report's own time is appended after it ran)
    assert set(report["timings_s"]) == {"corpus", "manifest", "pretrain", "export", "extract", "probe", "finetune"}
    # stage 7: fine-tuned on spk0 + spk1 (2 x 4 classes x 4 utterances) for 6 updates, scored on spk2, the last
    # speaker, against the linear probe's spk2 fold (trained on the same two speakers)
    ft = report["finetune"]
    assert (ft["held_out"], ft["train_utterances"], ft["held_out_utterances"]) == ("spk2", 32, 16)
    assert "num_updates 6 " in (work / "finetune" / "run" / "hydra_train.log").read_text()
    held = json.loads((work / "finetune" / "heldout.json").read_text())
    assert {p["key"].split("/")[0] for p in held["predictions"]} == {"spk2"} and len(held["predictions"]) == 16
    m = np.asarray(held["metrics"]["confusion"]["matrix"], dtype=float)
    assert m.sum() == 16 and ft["finetuned"]["UA"] == pytest.approx((np.diag(m) / m.sum(1)).mean(), abs=1e-9)
    linear = json.loads((work / "finetune" / "linear_probe.json").read_text())
    assert [f["group"] for f in linear["folds"]] == ["spk0", "spk1", "spk2"]
    assert ft["linear_probe"]["UA"] == linear["folds"][2]["UA"] and ft["linear_probe"]["n_test"] == 16
    assert "## Fine-tuning, speaker spk2 held out" in (work / "report.md").read_text()
    # the same fine-tuned classifier exported to ONNX (fp32, int8) and run by onnxruntime on spk2
    onnx = ft["onnx"]
    assert onnx["fp32"]["labels_equal_torch"] and onnx["fp32"]["max_abs_score_diff_vs_torch"] < 1e-4
    assert onnx["fp32"]["UA"] == ft["finetuned"]["UA"] and 0 < onnx["int8"]["MiB"] < onnx["fp32"]["MiB"]
    assert len(json.loads((work / "finetune" / "heldout_onnx_int8.json").read_text())["predictions"]) == 16
    assert "the same fine-tuned model as ONNX, onnxruntime fp32" in (work / "report.md").read_text()
    assert "verdict:" in log and "| features | WA | UA | macro-F1 | weighted-F1 |" in log
    # the second task (pitch contours, 2 speakers in --quick): probed and reported beside the first
    contour = report["contour"]
    assert [r["features"] for r in contour["rows"]] == ["pretrained", "random", "fbank"]
    assert all(r["folds"] == 2 for r in contour["rows"] + contour["rows_spknorm"])
    for variant in ("raw", "spknorm"):
        assert [(p["b"], p["n_folds"]) for p in contour["paired"][variant]] == [("random", 2), ("fbank", 2)]
    assert sorted(contour["corpus_stats"]) == ["dip", "fall", "peak", "rise"]
    assert contour["corpus_stats"]["rise"]["slope"] > 0 > contour["corpus_stats"]["fall"]["slope"]
    # the reference probe on the corpus stage's per-utterance F0 measurements: one per contour utterance
    measured = json.loads((work / "corpus" / "contour_prosody.json").read_text())
    assert len(measured) == 16 and all(k.startswith("contour/") for k in measured)
    assert sorted(contour["f0_shape"]["fold_UA"]) == ["cspk0", "cspk1"] and 0 <= contour["f0_shape"]["UA"] <= 1
    assert "Reference, not a representation" in (work / "report.md").read_text()
    assert "## Second task: pitch contours" in (work / "report.md").read_text() and "contour raw:" in log
    assert sorted(contour["curve"]["probe_ua"]["last"]) == ["0", "10", "20"]  # e2v-curves on the kept checkpoints
    for png in ("probe_scores.png", "curves.png", "probe/tsne_pretrained.png", "probe/confusion_pretrained.png",
                "curves_contour.png", "probe/contour/tsne_pretrained.png"):
        assert (work / png).stat().st_size > 1000, png
    # finished stages are skipped on a re-run; one stage can be redone on its own
    again = demo(work)
    assert again.count("done before, skipping") == 8
    (work / ".done.report").unlink()
    redo = demo(work, "--stage", "8")
    assert "== stage 8 report" in redo and "verdict:" in redo


def test_quick_demo_without_espeak_uses_the_numpy_fallback_and_says_so(tmp_path):
    """What a user without espeak-ng (no root) gets: every stage runs on the fallback corpus, the verdicts
    are computed, and the report states plainly that the corpus was tone bursts."""
    work = tmp_path / "demo"
    log = demo(work, "--force-fallback")
    for i, stage in enumerate(("corpus", "manifest", "pretrain", "export", "extract", "probe", "finetune", "report"),
                              start=1):
        assert f"== stage {i} {stage}" in log and (work / f".done.{stage}").exists(), stage
    assert "NUMPY FALLBACK" in log
    report = json.loads((work / "report.json").read_text())
    assert report["corpus"]["engine"] == "numpy-fallback" and report["corpus"]["utterances"] == 144
    md = (work / "report.md").read_text()
    assert md.startswith("# Demo report\n\n**Corpus: the NUMPY FALLBACK (harmonic tone bursts, not speech)")
    assert "Corpus: the NUMPY FALLBACK" in log.split("verdict:")[0]  # printed before the results
    assert "random weights" in report["verdict"] and report["contour"]["paired"]["raw"]
    assert [r["features"] for r in report["rows"] + report["contour"]["rows"]] == ["pretrained", "random", "fbank"] * 2
    assert report["finetune"]["held_out"] == "spk2"
