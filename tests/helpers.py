"""Shared test helpers: the tiny model config, read from the recipe itself so the two cannot drift."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from emotion2vec_plugin.data.synthetic import synth_utterance, write_corpus  # noqa: F401  (re-exported)

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes" / "pretrain"
PLUGIN_DIR = REPO / "emotion2vec_plugin"


def tiny_model_cfg(**overrides):
    """Emotion2vecConfig with the fields of recipes/pretrain/arch/tiny.yaml (plus overrides)."""
    from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecConfig

    fields = yaml.safe_load((RECIPES / "arch" / "tiny.yaml").read_text())["model"]
    fields.pop("_name", None)
    fields.update(seed=1)
    fields.update(overrides)
    return Emotion2vecConfig(**fields)


def hydra_train(workdir: Path, data: Path, *overrides: str, config: str = "emotion2vec_tiny") -> str:
    """Run fairseq-hydra-train in ``workdir``; return its combined log (fails the test on error)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(Path(sys.executable).with_name("fairseq-hydra-train")),
        "--config-dir", str(RECIPES), "--config-name", config,
        f"task.data={data}", f"common.user_dir={PLUGIN_DIR}", *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log
