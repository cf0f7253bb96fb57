"""Real fairseq-hydra-train runs of the plugin on synthesised audio (the CPU tier of the README)."""

import math
import re
import subprocess
from pathlib import Path

import pytest
import torch

from tests.helpers import RECIPES, hydra_train, venv_bin

pytestmark = pytest.mark.slow


LOGGED = ("loss", "loss_frame", "loss_utt", "target_var", "pred_var", "ema_decay", "mask_frac", "num_updates")


def load_model_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def train_log_rows(log: str) -> list:
    """The per-update training log lines (fairseq's ``train_inner`` logger, ``log_format: simple``,
    ``log_interval: 1``) as dicts of floats; not the config dump or any other line."""
    rows = []
    for line in log.splitlines():
        if "[train_inner]" in line:
            fields = dict(kv.split("=", 1) for kv in re.findall(r"(\w+=[^,\s]+)", line.split(" - ", 1)[1]))
            rows.append({k: float(v) for k, v in fields.items()})
    return rows


def check_logged_rows(rows: list, max_update: int, alpha: float = 1.0) -> None:
    from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecConfig
    from emotion2vec_plugin.modules.ema import ema_decay_at

    assert [int(r["num_updates"]) for r in rows] == list(range(1, max_update + 1))
    for r in rows:
        missing = [k for k in LOGGED if k not in r]
        assert not missing, (missing, r)
        assert all(math.isfinite(r[k]) for k in LOGGED), r
        # values are rounded to 4 decimals in the log
        assert r["loss"] == pytest.approx(r["loss_frame"] + alpha * r["loss_utt"], abs=2e-4), r
        assert r["target_var"] > 0 and r["pred_var"] > 0, r
        # exactly int(T / 2) of every row's T frames are masked: T >= 12 frames here, so 5/11 <= frac <= 1/2
        assert 5 / 11 <= r["mask_frac"] <= 0.5, r
        # the forward of update n runs with tau(n - 1) (arch/tiny: 0.999 -> 0.99999 over 100 updates)
        d = Emotion2vecConfig()
        assert r["ema_decay"] == pytest.approx(ema_decay_at(int(r["num_updates"]) - 1, d.ema_decay, d.ema_end_decay, 100),
                                               abs=1e-6), r


@pytest.mark.parametrize(
    "mode_overrides",
    [
        ["model.utterance_mode=token", "model.num_utterance_tokens=1"],
        ["model.utterance_mode=chunk"],
        ["model.utterance_mode=global", "model.num_utterance_tokens=0", "task.precompute_mask=true"],
    ],
    ids=["token", "chunk", "global"],
)
def test_hydra_train_each_utterance_mode(tmp_path, corpus, mode_overrides):
    log = hydra_train(tmp_path / "run", corpus, "optimization.max_update=4", *mode_overrides)
    assert "done training" in log
    check_logged_rows(train_log_rows(log), max_update=4)
    state = load_model_state(tmp_path / "run" / "checkpoints" / "checkpoint_last.pt")
    teacher = {k for k in state if k.startswith("_ema.")}
    assert "_ema.blocks.0.mlp.fc1.weight" in teacher
    # EMA steps happen before each forward: after 4 updates the teacher has folded in 3 of them
    assert int(state["_ema_step"]) == 3
    # the teacher moved (EMA) but is not the student
    w_s, w_t = state["blocks.0.mlp.fc1.weight"], state["_ema.blocks.0.mlp.fc1.weight"]
    assert not torch.equal(w_s, w_t)
    assert (tmp_path / "run" / "tb").is_dir()


def test_short_run_lowers_the_loss_on_a_learnable_corpus(tmp_path, corpus):
    """40 updates of the tiny recipe on synthetic harmonic speech-like audio (structure the
    masked-prediction task can learn): measured loss 37 -> 6 and frame loss 6.8 -> 4.9."""
    log = hydra_train(tmp_path / "run", corpus, "optimization.max_update=40")
    rows = train_log_rows(log)
    check_logged_rows(rows, max_update=40)

    def mean(key, part):
        return sum(r[key] for r in part) / len(part)

    first, last = rows[:8], rows[-8:]
    assert mean("loss", last) < 0.5 * mean("loss", first)
    assert mean("loss_frame", last) < 0.85 * mean("loss_frame", first)


def test_resume_continues_student_and_teacher_exactly(tmp_path, corpus):
    common = ["optimization.max_update=6", "checkpoint.save_interval_updates=3", "dataset.validate_interval_updates=0"]
    hydra_train(tmp_path / "full", corpus, *common)
    hydra_train(tmp_path / "part", corpus, *common[1:], "optimization.max_update=3")
    first = load_model_state(tmp_path / "part" / "checkpoints" / "checkpoint_last.pt")
    assert int(first["_ema_step"]) == 2
    log = hydra_train(
        tmp_path / "resumed", corpus, *common,
        f"checkpoint.restore_file={tmp_path / 'part' / 'checkpoints' / 'checkpoint_last.pt'}",
    )
    assert "Loaded checkpoint" in log and "@ 3 updates" in log  # it really started from update 3
    full = load_model_state(tmp_path / "full" / "checkpoints" / "checkpoint_last.pt")
    resumed = load_model_state(tmp_path / "resumed" / "checkpoints" / "checkpoint_last.pt")
    assert set(full) == set(resumed)
    for key in full:
        # same ops in the same order on CPU: identical to the bit
        assert torch.equal(full[key], resumed[key]), key
    assert int(resumed["_ema_step"]) == 5


def composed_config(config: str, *overrides: str) -> dict:
    """The job config fairseq-hydra-train would run (``--cfg job``), as a dict."""
    import yaml

    proc = subprocess.run([venv_bin("fairseq-hydra-train"), "--config-dir", str(RECIPES), "--config-name", config,
                           "task.data=/data", *overrides, "--cfg", "job"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return yaml.safe_load(proc.stdout)  # stdout only: the log lines go to stderr


@pytest.mark.parametrize("config", ["emotion2vec_base", "emotion2vec_tiny", "emotion2vec_demo"])
def test_every_config_field_is_listed_so_overrides_need_no_plus(config):
    from dataclasses import fields

    from emotion2vec_plugin.criterions.emotion2vec_criterion import Emotion2vecCriterionConfig
    from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecConfig
    from emotion2vec_plugin.tasks.emotion2vec_pretraining import Emotion2vecPretrainingConfig

    cfg = composed_config(config, "model.init_from=null")
    for section, cls in (("model", Emotion2vecConfig), ("task", Emotion2vecPretrainingConfig),
                         ("criterion", Emotion2vecCriterionConfig)):
        # fields interpolated from elsewhere (${model.mask_prob}, ${common.seed}) are not user settings
        wanted = {f.name for f in fields(cls) if not str(f.default).startswith("${")}
        assert wanted - set(cfg[section]) == set(), section


def test_base_recipe_is_the_released_configuration():
    from dataclasses import fields

    from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecConfig

    cfg = composed_config("emotion2vec_base", "model.init_from=null")
    defaults = Emotion2vecConfig()
    for f in fields(Emotion2vecConfig):
        if f.name in cfg["model"] and f.name != "_name":
            assert cfg["model"][f.name] == getattr(defaults, f.name), f.name
    assert cfg["optimization"]["lr"] == [7.5e-5] and cfg["optimization"]["max_update"] == 100000
    assert cfg["optimizer"]["groups"]["default"]["lr_scheduler"]["warmup_updates"] == 5000  # 5% of 100k
    assert cfg["dataset"]["max_tokens"] == 1_000_000
    assert cfg["model"]["ema_anneal_end_step"] == 20000


def test_demo_recipe_keeps_its_batch_and_schedule():
    cfg = composed_config("emotion2vec_demo")
    assert cfg["dataset"]["max_tokens"] == 160000 and cfg["common"]["log_interval"] == 50
    assert cfg["model"]["embed_dim"] == 192 and cfg["optimization"]["max_update"] == 1500
    assert cfg["task"]["min_sample_size"] == 16000 and cfg["common"]["cpu"] is True
