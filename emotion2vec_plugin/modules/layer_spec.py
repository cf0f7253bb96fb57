"""Which encoder blocks to read features from (``e2v-extract --layers``, ``task.probe_layers``).

Blocks are numbered 1..L (the transformer blocks of the encoder) or -1..-L from the end, the
convention of both; a spec such as ``"last,mean,3,-2"`` names several feature sets at once.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import Emotion2vecError


class LayerSpecError(Emotion2vecError, ValueError):
    """A layer spec that does not fit the model; says what was expected."""


def block_index(k: int, num_layers: int) -> Optional[int]:
    """Block ``k`` (1-based, or negative from the end) -> its 0-based index; None when ``k`` is 0
    or outside -L..L."""
    i = k - 1 if k > 0 else num_layers + k
    return i if k != 0 and 0 <= i < num_layers else None


def select_layers(num_layers: int, layers: Optional[Sequence[int]]) -> List[int]:
    """0-based block indices from user indices (``--layers`` of e2v-extract and e2v-export: 1-based,
    or negative from the end; default: the last block)."""
    if not layers:
        return [num_layers - 1]
    out = []
    for layer in layers:
        i = block_index(layer, num_layers)
        if i is None:
            raise LayerSpecError(f"--layers {layer}: the model has blocks 1..{num_layers} (or -1..-{num_layers})")
        out.append(i)
    return out


def parse_layer_specs(spec: str, num_layers: int) -> List[Tuple[str, List[int]]]:
    """``"last,mean,3,-2"`` -> [(name, 0-based block indices averaged)].

    ``last``: the final block (what ``e2v-extract`` writes by default); ``mean``: the average of
    every block's output; an integer: that block, 1-based or negative from the end (name ``l<k>``,
    1-based).
    """
    out = []
    for item in [s.strip() for s in str(spec).split(",") if s.strip()]:
        if item == "last":
            out.append(("last", [num_layers - 1]))
        elif item == "mean":
            out.append(("mean", list(range(num_layers))))
        else:
            try:
                k = int(item)
            except ValueError:
                k = 0
            i = block_index(k, num_layers)
            if i is None:
                raise LayerSpecError(f"probe layer {item!r}: expected 'last', 'mean' or a block 1..{num_layers} "
                                     f"(or -1..-{num_layers})")
            out.append((f"l{i + 1}", [i]))
    if not out:
        raise LayerSpecError(f"probe layers {spec!r}: expected a comma-separated list such as 'last,mean'")
    return out


def combine_layers(pooled: np.ndarray, specs: Sequence[Tuple[str, List[int]]]) -> Dict[str, np.ndarray]:
    """Per-block utterance means [N, L, D] -> {spec name: [N, D]} (averages of the chosen blocks;
    the time mean and the block average commute, so this equals pooling block-averaged frames)."""
    return {name: pooled[:, idx].mean(axis=1) for name, idx in specs}
