"""The one reader of PyTorch checkpoint files: ``weights_only=True`` with an explicit allow-list.

``torch.load(weights_only=False)`` runs whatever the file's pickle says, and checkpoints come
from model hubs. Every checkpoint this package reads (``model.init_from``, ``e2v-export``,
``e2v-extract``, FunASR ``model.pt``) goes through :func:`load_checkpoint`, which unpickles with
``weights_only=True`` and allows, besides tensors and plain containers, only the classes that
fairseq checkpoints pickle (:data:`ALLOWED_GLOBALS`): omegaconf's config containers and nodes
and the few types their metadata holds. These were read off real files with
``torch.serialization.get_unsafe_globals_in_checkpoint``: our own ``checkpoint_last.pt``
(fairseq 0.12 stores ``cfg`` as a plain dict: nothing beyond torch's defaults) and a fairseq
``cfg`` stored as an omegaconf ``DictConfig`` (the released emotion2vec / data2vec 2.0 layout),
pickled by omegaconf 2.0.6 (the version fairseq 0.12 pins) and 2.3.1: the same ten globals.
fairseq's own ``ChoiceEnum`` classes cannot be pickled at all, so no enum is needed.

Any other class is refused before anything is unpickled, with an error naming the file and the
class. ``trust=True`` (``--trust-checkpoint``, ``model.trust_checkpoint=true``) falls back to a
full unpickle after a warning, for files whose origin the user vouches for.

File-level problems (missing, a directory, empty, truncated, not a torch file) raise
:class:`CheckpointReadError` saying which and how to fix it.
"""

import collections
import logging
import os
import pickle
import re
import typing
import zipfile
from typing import Any, List

import torch

from ..errors import Emotion2vecError

logger = logging.getLogger(__name__)

# torch.save's zip container starts with a local file header; the legacy (pre-1.6) format with
# a pickled magic number (protocol 2, long 0x1950a86a20f9469cfc6c)
ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
TRUST_HINT = ("if you trust where the file came from, load it anyway with --trust-checkpoint (e2v-export, "
              "e2v-extract) or model.trust_checkpoint=true (training)")


class CheckpointReadError(Emotion2vecError, ValueError):
    """A checkpoint file that cannot be read; the message names the file, the problem and the fix."""


class UntrustedCheckpointError(CheckpointReadError):
    """A checkpoint whose pickle refers to a class outside :data:`ALLOWED_GLOBALS` (it could run code)."""


def _allowed_globals() -> List[Any]:
    """The classes and types fairseq checkpoints pickle besides torch's defaults."""
    allowed: List[Any] = [dict, list, int, typing.Any, collections.defaultdict]
    try:
        from omegaconf import DictConfig, ListConfig
        from omegaconf.base import ContainerMetadata, Metadata
        from omegaconf.nodes import AnyNode, BooleanNode, FloatNode, IntegerNode, StringNode
    except ImportError:  # without omegaconf, a cfg stored as DictConfig is refused by name
        return allowed
    return allowed + [DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode, StringNode, IntegerNode,
                      FloatNode, BooleanNode]


ALLOWED_GLOBALS = _allowed_globals()
ALLOWED_NAMES = {f"{g.__module__}.{getattr(g, '__qualname__', getattr(g, '_name', str(g)))}" for g in ALLOWED_GLOBALS}
ALLOWED_NAMES.add("typing.Any")


def check_checkpoint_file(path: str) -> str:
    """Classify ``path`` without unpickling: returns ``"zip"`` or ``"legacy"`` (torch formats),
    or raises :class:`CheckpointReadError` for a missing path, a directory, an empty, truncated
    or foreign file."""
    if not os.path.exists(path):
        raise CheckpointReadError(f"{path}: no such file (expected a checkpoint .pt file); check the path")
    if os.path.isdir(path):
        raise CheckpointReadError(f"{path}: is a directory, expected a checkpoint file (e.g. "
                                  f"{os.path.join(path, 'checkpoint_last.pt')})")
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointReadError(f"{path}: is empty (0 bytes), expected a PyTorch checkpoint; an interrupted "
                                  f"download or copy? fetch the file again")
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_MAGIC))
    if head.startswith(ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            raise CheckpointReadError(f"{path}: is truncated ({size} bytes, a zip archive without its end); an "
                                      f"interrupted download or copy? fetch the file again or use an intact copy")
        return "zip"
    if head == LEGACY_MAGIC:
        return "legacy"
    raise CheckpointReadError(f"{path}: is not a PyTorch checkpoint (it starts with {head[:8]!r}; torch.save writes "
                              f"a zip archive starting with {ZIP_MAGIC!r}); check that this is the .pt file")


def refused_globals(path: str) -> List[str]:
    """Globals of a zip checkpoint's pickle outside the allow-list (read with pickletools: nothing runs)."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as e:  # noqa: BLE001  any failure to parse is reported as a broken file
        raise CheckpointReadError(f"{path}: cannot read the checkpoint's pickle ({_first_line(e)}); the file is "
                                  f"damaged or not a PyTorch checkpoint") from None
    return sorted(g for g in found if g not in ALLOWED_NAMES)


def load_checkpoint(path: str, trust: bool = False) -> Any:
    """``torch.load(path)`` on CPU, safely.

    Args:
        path: a file written by ``torch.save`` (fairseq checkpoint, FunASR ``model.pt``, ...).
        trust: unpickle everything (``weights_only=False``) after a warning; only for files the
            user vouches for.

    Raises:
        UntrustedCheckpointError: the pickle refers to a class outside :data:`ALLOWED_GLOBALS`.
        CheckpointReadError: missing, directory, empty, truncated or not a torch checkpoint.
    """
    kind = check_checkpoint_file(path)
    if trust:
        logger.warning("%s: trust_checkpoint is set: unpickling without restrictions, which runs any code the file "
                       "holds", path)
        return _torch_load(path, weights_only=False)
    if kind == "zip":
        refused = refused_globals(path)
        if refused:
            raise UntrustedCheckpointError(
                f"{path}: refused to load: its pickle refers to {', '.join(refused)}, which a checkpoint does not need "
                f"(allowed: tensors, containers and omegaconf configs) and which could run code; {TRUST_HINT}")
    with torch.serialization.safe_globals(ALLOWED_GLOBALS):
        return _torch_load(path, weights_only=True)


def _torch_load(path: str, weights_only: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as e:
        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if m:  # legacy-format files are not pre-scanned: the restricted unpickler stopped here
            raise UntrustedCheckpointError(
                f"{path}: refused to load: its pickle refers to {m.group(1)}, which a checkpoint does not need and "
                f"which could run code; {TRUST_HINT}") from None
        raise CheckpointReadError(f"{path}: cannot be unpickled as a checkpoint ({_weights_only_reason(e)}); the "
                                  f"file is damaged or not a PyTorch checkpoint") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, zipfile.BadZipFile, AttributeError,
            IndexError, TypeError) as e:
        raise CheckpointReadError(f"{path}: cannot be read as a PyTorch checkpoint ({_first_line(e)}); the file is "
                                  f"damaged or truncated: fetch it again") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _weights_only_reason(e: BaseException) -> str:
    m = re.search(r"WeightsUnpickler error: ([^\n]*)", str(e))
    return m.group(1).strip() if m else _first_line(e)
