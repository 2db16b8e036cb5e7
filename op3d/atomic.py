"""Atomic file output: write to a temporary name beside the target, rename on success, remove on failure, so an
interrupted run never leaves a truncated snapshot, volume, mesh or video under the final name. A process killed
mid-write leaves its temporary (`<name>.tmp-<pid><ext>`); `remove_stale_temporaries` clears those of dead
processes."""

from __future__ import annotations

import contextlib
import os
import re

TEMPORARY_NAME = re.compile(r"\.tmp-(\d+)(\.[^./]*)?$")  # what atomic_output appends to the stem


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike):
    """with atomic_output('out/a.mrc') as tmp: write tmp ('out/a.tmp-<pid>.mrc', same extension so format-sniffing
    writers still work); it becomes 'out/a.mrc' only if the block succeeds."""
    path = os.fspath(path)
    stem, ext = os.path.splitext(path)
    tmp = f"{stem}.tmp-{os.getpid()}{ext}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether `path` is named like an atomic_output temporary."""
    return TEMPORARY_NAME.search(os.path.basename(os.fspath(path))) is not None


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Remove the atomic_output temporaries in `folder` whose writing process no longer runs on this machine (a
    process killed while writing); returns their paths. Temporaries of live processes are left alone."""
    import psutil

    removed = []
    for name in sorted(os.listdir(folder)):
        match = TEMPORARY_NAME.search(name)
        path = os.path.join(folder, name)
        if match and os.path.isfile(path) and not psutil.pid_exists(int(match.group(1))):
            os.remove(path)
            removed.append(path)
    return removed
