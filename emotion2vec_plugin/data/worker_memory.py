"""Memory of a process as Linux accounts it: USS, PSS and RSS from ``/proc/<pid>/smaps_rollup``.

* RSS counts every resident page the process maps, shared or not;
* PSS divides each shared page by the number of processes sharing it;
* USS (``Private_Clean + Private_Dirty``) counts only pages no other process maps: what the
  process would give back if it ended. A forked loader worker starts with USS near zero (all
  its pages are shared copy-on-write with the trainer); pages it writes, including reference
  counts of Python objects it merely reads, become private and raise its USS.

Used by ``recipes/benchmark/large_manifest.py`` and the copy-on-read test. Linux only.

:func:`freeze_gc_before_fork` keeps the garbage collector from copying the trainer's Python
heap into every worker; both emotion2vec tasks turn it on in ``setup_task``.
"""

import gc
import os
from typing import Dict, List, Optional

FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty")


def memory_kib(pid: Optional[int] = None) -> Dict[str, int]:
    """``{"rss", "pss", "uss"}`` of ``pid`` (default: this process) in KiB.

    Raises:
        FileNotFoundError: the process ended (or this is not Linux).
    """
    values = {}
    with open(f"/proc/{pid or os.getpid()}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in FIELDS:
                values[key] = int(rest.split()[0])
    return {"rss": values.get("Rss", 0), "pss": values.get("Pss", 0),
            "uss": values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)}


def child_pids(pid: int) -> List[int]:
    """Direct children of ``pid`` (loader workers of a trainer), from ``/proc/<pid>/task/*/children``."""
    kids: List[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(x) for x in f.read().split())
        except FileNotFoundError:
            continue
    return sorted(set(kids))


# ---------------------------------------------------------------- the garbage collector and fork
# A forked worker shares the trainer's pages until one side writes them. A full (generation 2)
# collection writes the header of every container object it examines, so the first one in a
# worker copies every page of the trainer's Python heap into it (measured: 65 MB at once per
# worker of a bare torch + fairseq process, more with a model and a hydra config), and one in
# the trainer makes every worker's copy of those pages private to it. gc.freeze() right before
# the fork moves all objects to a permanent generation that no collection visits, in the parent
# and (inherited) in the child; the collection before it keeps garbage out of that generation.
# This is what the Python documentation of gc.freeze() recommends for fork without exec.
_FREEZE_BEFORE_FORK = False
_HOOK_REGISTERED = False


def _before_fork() -> None:
    if _FREEZE_BEFORE_FORK:
        gc.collect()
        gc.freeze()


def freeze_gc_before_fork(enable: bool = True) -> None:
    """From now on (``enable``), every ``os.fork`` of this process (the loader workers of a
    DataLoader with the fork context) first collects and then freezes its objects, so that no
    collection in the trainer or a worker copies the shared Python heap (comment above).
    ``enable=False`` stops it (objects already frozen stay so; ``gc.unfreeze()`` returns them)."""
    global _FREEZE_BEFORE_FORK, _HOOK_REGISTERED
    _FREEZE_BEFORE_FORK = enable
    if enable and not _HOOK_REGISTERED and hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_before_fork)
        _HOOK_REGISTERED = True


def release_free_heap() -> None:
    """Give freed heap memory back to the system (glibc ``malloc_trim``; elsewhere nothing).

    Parsing a manifest of millions of lines frees tens of megabytes of block-sized temporaries;
    glibc keeps such chunks in the heap once its mmap threshold has risen, where they stay
    resident in the trainer and in the pages its forked workers start from (measured: 89 instead
    of 63 bytes per utterance after loading a 1,000,000-line manifest and its dataset)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
