"""Memory of a process as Linux accounts it: USS, PSS and RSS from ``/proc/<pid>/smaps_rollup``.

* RSS counts every resident page the process maps, shared or not;
* PSS divides each shared page by the number of processes sharing it;
* USS (``Private_Clean + Private_Dirty``) counts only pages no other process maps: what the
  process would give back if it ended. A forked loader worker starts with USS near zero (all
  its pages are shared copy-on-write with the trainer); pages it writes, including reference
  counts of Python objects it merely reads, become private and raise its USS.

Used by ``recipes/benchmark/large_manifest.py`` and the copy-on-read test. Linux only.
"""

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
