"""Repair a truncated ``checkpoint_last.pt`` before fairseq tries to resume from it.

fairseq writes the first checkpoint of a save atomically (``.tmp`` + rename) but creates
``checkpoint_last.pt`` as a plain *copy* of it; a job killed during that copy leaves a truncated
file and the restart dies in ``torch.load`` with ``EOFError``. torch checkpoints are zip files
whose directory sits at the end, so a truncated one fails ``zipfile.is_zipfile``: in that case
the newest intact checkpoint of the same folder replaces it (atomically) and a warning says so.
"""

import glob
import logging
import os
import shutil
from typing import Optional

from .safe_load import CheckpointReadError, check_checkpoint_file

logger = logging.getLogger(__name__)


def is_intact(path: str) -> bool:
    """A complete torch zip checkpoint (the file checks of :func:`.safe_load.check_checkpoint_file`)."""
    try:
        return check_checkpoint_file(path) == "zip"
    except CheckpointReadError:
        return False


def repair_last_checkpoint(save_dir: str, name: str = "checkpoint_last.pt") -> Optional[str]:
    """If ``save_dir/name`` exists but is truncated, replace it by the newest intact checkpoint.

    Returns the checkpoint copied in, or None when nothing needed doing.
    """
    last = os.path.join(save_dir, name)
    if not os.path.isfile(last) or is_intact(last):
        return None
    candidates = [p for p in glob.glob(os.path.join(save_dir, "checkpoint*.pt"))
                  if os.path.abspath(p) != os.path.abspath(last) and is_intact(p)]
    if not candidates:
        raise RuntimeError(
            f"{last} is truncated (the job was probably killed while writing it) and no intact checkpoint "
            f"is left in {save_dir}; delete it to start over or restore a copy"
        )
    newest = max(candidates, key=os.path.getmtime)
    shutil.copyfile(newest, last + ".repair.tmp")
    os.replace(last + ".repair.tmp", last)
    logger.warning("%s was truncated (killed during a save?): resuming from %s instead", last, newest)
    return newest
