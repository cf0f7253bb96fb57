"""Explicit key mapping from released checkpoints to our student (docs/design.md §5).

Supported layouts:

* **emotion2vec** (released ``emotion2vec_base.pt``, FunASR ``model.pt``, and ours): keys are
  already ours; our checkpoints add the teacher under ``_ema.*``.
* **data2vec 2.0 audio** (``data2vec_multi`` base, no prenet): ``blocks.0-11`` become
  ``context_encoder.blocks.0-{P-1}`` (the first P = prenet_depth blocks) and ``blocks.0-{11-P}``.
  The computation is unchanged (the context encoder's LayerNorm precedes block 0 in both).
  Utterance tokens do not exist there and are initialised fresh (reported).

Anything else is an error naming the checkpoint and the key, except entries listed in
``IGNORED`` (the EMA copy inside data2vec 2.0 checkpoints, emotion2vec+'s classifier head).
"""

import logging
import re
from typing import Any, Dict, List, Tuple

import torch

from ..errors import Emotion2vecError
from .safe_load import load_checkpoint

logger = logging.getLogger(__name__)

PRENET = "modality_encoders.AUDIO.context_encoder.blocks."
# keys that may be present in a source checkpoint and are dropped on purpose
IGNORED = re.compile(r"^(_ema$|proj\.(weight|bias)$)")
# keys of ours that may be absent from a source checkpoint and keep their fresh initialisation
MAY_BE_FRESH = re.compile(r"^(modality_encoders\.AUDIO\.extra_tokens$|_ema\.|_ema_step$)")


class CheckpointMismatchError(Emotion2vecError, KeyError):
    """A source checkpoint has a weight we cannot place, or lacks one we need."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def read_state_dict(path: str, trust: bool = False) -> Dict[str, torch.Tensor]:
    """The model state dict of a fairseq checkpoint (``state['model']``), a FunASR ``model.pt`` or a bare dict.

    Read by :func:`~.safe_load.load_checkpoint` (``weights_only=True`` plus fairseq's config
    classes; ``trust=True`` unpickles everything after a warning).
    """
    return state_dict_of(load_checkpoint(path, trust=trust), path)


def state_dict_of(content: Any, path: str) -> Dict[str, torch.Tensor]:
    """The model state dict inside the loaded content of checkpoint file ``path`` (see :func:`read_state_dict`)."""
    state = content
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, (torch.Tensor, dict)) for v in state.values()):
        got = f"a dict with keys {sorted(map(str, state))[:5]}" if isinstance(state, dict) else type(state).__name__
        raise CheckpointMismatchError(f"{path}: no model state dict found (expected a fairseq checkpoint with a "
                                      f"'model' dict of tensors, or a dict of tensors; got {got})")
    return state


def map_state_dict(source: Dict[str, torch.Tensor], target_keys: List[str], prenet_depth: int,
                   origin: str = "checkpoint") -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename ``source`` keys to ours.

    Returns the mapped dict and the target keys left at their fresh initialisation. Raises
    :class:`CheckpointMismatchError` for an unexpected or a missing weight.
    """
    wanted = set(target_keys)
    has_prenet = any(k.startswith(PRENET) for k in source)
    mapped: Dict[str, torch.Tensor] = {}
    unexpected: List[str] = []
    for key, value in source.items():
        if IGNORED.match(key):
            logger.info("%s: ignoring %s", origin, key)
            continue
        new = key
        m = re.match(r"^blocks\.(\d+)\.(.*)$", key)
        if m and not has_prenet and prenet_depth > 0:  # data2vec 2.0: one flat stack of blocks
            i = int(m.group(1))
            new = f"{PRENET}{i}.{m.group(2)}" if i < prenet_depth else f"blocks.{i - prenet_depth}.{m.group(2)}"
        if new not in wanted:
            unexpected.append(key)
            continue
        mapped[new] = value
    missing = sorted(k for k in wanted - set(mapped) if not MAY_BE_FRESH.match(k))
    if unexpected or missing:
        raise CheckpointMismatchError(
            f"{origin}: cannot map weights onto this model: unexpected {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''}, missing {missing[:8]}{' ...' if len(missing) > 8 else ''}. "
            f"Check model.depth / model.prenet_depth / model.num_utterance_tokens against the checkpoint"
        )
    fresh = sorted(wanted - set(mapped))
    return mapped, fresh
