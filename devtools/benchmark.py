"""What the scripts in ``recipes/benchmark/`` share: the architecture recipes, timing, FLOP counting,
one plain training step of ours, and reading losses back from fairseq's log.

The scripts put the repository root on ``sys.path`` and import this module; the tests import it
too (``tests/test_gpu_check_smoke.py`` checks :func:`train_log_losses`).
"""

import json
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
ARCH_DIR = REPO / "recipes" / "pretrain" / "arch"
# a JSON object holding "loss" in one of fairseq's log lines (common.log_format=json)
LOSS_LINE = re.compile(r"(\{.*\"loss\".*\})")


def arch_fields(arch: str) -> Dict[str, object]:
    """The model fields of ``recipes/pretrain/arch/<arch>.yaml`` (tiny/small inherit base's defaults,
    which are Emotion2vecConfig's own)."""
    fields = yaml.safe_load((ARCH_DIR / f"{arch}.yaml").read_text())["model"]
    fields.pop("_name", None)
    return fields


def build_model(arch: str, device: torch.device, dtype: torch.dtype):
    """Our pretraining model (student + EMA teacher) of ``recipes/pretrain/arch/<arch>.yaml``, seed 1,
    in training mode."""
    from emotion2vec_plugin.models.emotion2vec_model import Emotion2vecConfig, Emotion2vecModel

    return Emotion2vecModel(Emotion2vecConfig(**arch_fields(arch), seed=1)).to(device=device, dtype=dtype).train()


def train_step(model, optimizer, source: torch.Tensor, ids: torch.Tensor, update: int) -> None:
    """One update without fairseq: EMA step, forward on ``source`` [B, S], the data2vec-reduced loss
    (frame + utterance, per masked frame), backward, AdamW step."""
    from emotion2vec_plugin.modules.losses import frame_loss_sum, utterance_loss

    model.set_num_updates(update)  # EMA step, as fairseq does before each forward
    out = model(source, id=ids)
    n = out["sample_size"]
    loss = (frame_loss_sum(out["frame_pred"], out["frame_target"], "data2vec")
            + utterance_loss(out["utt_pred"], out["utt_target"], "data2vec") * n) / n
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@contextmanager
def attention_impl(name: str) -> Iterator[None]:
    """Force one attention kernel for the duration (AltAttention.impl is a class attribute)."""
    from emotion2vec_plugin.modules import transformer

    original = transformer.AltAttention.impl
    transformer.AltAttention.impl = name
    try:
        yield
    finally:
        transformer.AltAttention.impl = original


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work (timings on CUDA are otherwise launch times)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> Tuple[float, float]:
    """Wall seconds and CPU seconds of this process (all its threads) for ``fn()``."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def count_step_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one step (matmuls, convs, attention; forward and backward) by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def train_log_losses(log: str) -> List[float]:
    """Per-interval training losses from fairseq's json log lines (``train_inner`` and ``train``)."""
    losses = []
    for line in log.splitlines():
        if "train_inner" not in line and "| train |" not in line:
            continue
        m = LOSS_LINE.search(line)
        if m:
            losses.append(float(json.loads(m.group(1))["loss"]))
    return losses
