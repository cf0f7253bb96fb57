"""recipes/benchmark/gpu_check.py --smoke: the GPU day's script runs end to end on CPU (tiny arch).

It runs the same sections as on a GPU (train step of ours and fairseq's data2vec 2.0 interleaved,
a bf16 fairseq-hydra-train run, e2v-extract batched and one by one) and prints one JSON report;
the test checks the report's numbers against each other and against the files the run wrote.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from devtools.benchmark import train_log_losses
from tests.helpers import REPO, run_logged

SCRIPT = REPO / "recipes" / "benchmark" / "gpu_check.py"


def test_train_log_losses_reads_fairseq_json_lines():
    log = "\n".join([
        '2026-11-25 23:00:00 | INFO | train_inner | {"epoch": 1, "update": 0.5, "loss": "12.5", "ups": "1"}',
        '2026-11-25 23:00:01 | INFO | valid | {"epoch": 1, "valid_loss": "3.0", "loss": "3.0"}',
        '2026-11-25 23:00:02 | INFO | train | {"epoch": 1, "train_loss": "9.0", "loss": "nan"}',
        'INFO | something else {"loss": "1"}',
    ])
    losses = train_log_losses(log)
    assert losses[0] == 12.5 and math.isnan(losses[1]) and len(losses) == 2


@pytest.mark.slow
def test_gpu_check_smoke(tmp_path):
    out = tmp_path / "report.json"
    run_logged([sys.executable, SCRIPT, "--smoke", "--work", tmp_path / "work", "--out", out], cwd=REPO, timeout=600)
    r = json.loads(out.read_text())
    assert r["smoke"] is True and r["failed"] == [] and r["device"] == "cpu"

    step = r["train_step"]["eager"]
    assert step["arch"] == "tiny" and step["dtype"] == "fp32" and not step["compile"]
    t_o, t_d = step["step_s"]["ours"], step["step_s"]["data2vec"]
    assert t_o > 0 and t_d > 0
    # the report rounds step times to 0.1 ms (about 0.2% of a tiny step), hence rel=1e-2
    assert step["speedup_median_steps"] == pytest.approx(t_d / t_o, rel=1e-2)
    assert step["audio_s_per_s"]["ours"] == pytest.approx(step["batch"] * step["seconds"] / t_o, rel=1e-2)
    assert t_o == sorted(step["all_step_s"]["ours"])[0] and len(step["all_step_s"]["ours"]) == 1
    assert step["tflop_per_step"] > 0
    assert step["tflops"]["ours"] == pytest.approx(step["tflop_per_step"] / t_o, rel=1e-2)

    run = r["hydra_bf16"]
    assert run["ok"] and run["num_updates_saved"] == 2 and run["all_losses_finite"]
    assert run["losses_logged"] >= 2 and run["teacher_dtypes"] == ["torch.float32"]
    # the teacher in the checkpoint: every block of the tiny arch (3 blocks x 12 tensors) and more
    state = torch.load(run["checkpoint"], map_location="cpu", weights_only=False)["model"]
    assert run["teacher_tensors"] == sum(1 for k in state if k.startswith("_ema.") and state[k].is_floating_point())
    assert run["teacher_tensors"] > 3 * 12
    assert r["hydra_fp16"] == {"skipped": "fp16 training needs CUDA"}

    ex = r["extract_rtf"]
    lines = (tmp_path / "work" / "data" / "valid.tsv").read_text().splitlines()[1:]
    assert ex["utterances"] == len(lines) == 3
    assert ex["audio_s"] == pytest.approx(sum(int(l.split("\t")[1]) for l in lines) / 16000, abs=0.05)
    for mode in ("one_by_one", "batched"):
        assert ex[mode]["rtf"] == pytest.approx(ex[mode]["wall_s"] / ex["audio_s"], rel=0.02)
    # both modes wrote the same features (batched with padding == one by one)
    for line in lines:
        name = Path(line.split("\t")[0]).with_suffix(".npy")
        a = np.load(tmp_path / "work" / "extract_one_by_one" / "npy" / name)
        b = np.load(tmp_path / "work" / "extract_batched" / "npy" / name)
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-4
