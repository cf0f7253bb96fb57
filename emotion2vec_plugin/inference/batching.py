"""Length-sorted batches of utterances, without torch (shared by the torch and ONNX Runtime paths)."""

from typing import Iterable, List, Sequence


def plan_batches(sizes: Sequence[int], todo: Iterable[int], batch_size: int, max_samples: int) -> List[List[int]]:
    """Indices of ``todo``, longest first; a batch grows while count <= batch_size and
    count * longest <= max_samples."""
    order = sorted(todo, key=lambda i: -sizes[i])
    batches, current = [], []
    for i in order:
        if current and (len(current) + 1 > batch_size or (len(current) + 1) * sizes[current[0]] > max_samples):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
