"""Shared test helpers: the tiny model config, read from the recipe itself so the two cannot drift."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from emotion2vec_plugin.data.synthetic import write_corpus  # noqa: F401  (re-exported for the tests)

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


def run_logged(cmd, cwd=None, timeout: int = 600, **env) -> str:
    """Run ``cmd`` (one thread per process, plus ``env``); return stdout+stderr, failing the test on error."""
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                          capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    return log


def venv_bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def hydra_train(workdir: Path, data: Path, *overrides: str, config: str = "emotion2vec_tiny") -> str:
    """Run fairseq-hydra-train in ``workdir``; return its combined log (fails the test on error)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return run_logged([venv_bin("fairseq-hydra-train"), "--config-dir", RECIPES, "--config-name", config,
                       f"task.data={data}", f"common.user_dir={PLUGIN_DIR}", *overrides], cwd=workdir)
