"""Atomic file output: write to a temporary name beside the target, rename on success, remove on failure, so an
interrupted run never leaves a truncated snapshot, volume, mesh or video under the final name."""

from __future__ import annotations

import contextlib
import os


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
