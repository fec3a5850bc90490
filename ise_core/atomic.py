"""Atomic file writes, and the reaper of the temp files killed writers leave behind.

Every output goes through ``atomic_write_bytes``: a temp file in the same folder, fsync,
rename. Readers see the old file or the new one, never half of one. The temp file's name
carries the writer's host and pid (``.<name>.<host>.<pid>-XXXX.tmp``), so
``remove_stale_temp_files`` can tell a dead writer's leftover from a live one's file.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import socket
import tempfile
import time
from pathlib import Path

_TEMP_NAME = re.compile(r"^\..+\.([0-9a-f]{6})\.(\d+)-[^.]+\.tmp$")
STALE_TEMP_AGE_S = 3600.0


@functools.cache
def host_tag() -> str:
    """A short, stable tag of this host for temp-file names (asked once, when first needed)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` via a temp file and rename: readers never see half a file.

    ``durable=False`` skips the fsync: readers still see the whole file or none, but after a
    power loss the file may be empty. Only for files whose loss costs nothing but a redo
    (response-cache entries, which read as a miss when damaged).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The writer's host and pid in the name let a later run tell a dead writer's leftover
    # from a live one's file (remove_stale_temp_files).
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.{host_tag()}.{os.getpid()}-", suffix=".tmp", dir=target.parent
    )
    try:
        # mkstemp creates 0600; datasets and cards are meant to be shared like any output.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> Path:
    """Atomically write UTF-8 text (``\\n`` line endings, as given)."""
    return atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> int:
    """Remove the temp files that killed writers left in ``folder``; returns how many.

    A SIGKILL between an atomic write's temp file and its rename leaves
    ``.<name>.<host>.<pid>-*.tmp`` behind, inside an output folder that DVC tracks. One whose
    writer ran on this host and is gone is removed; so is any temp file older than an hour
    (no write takes that long). Another host's live writer is never touched.
    """
    removed = 0
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
            continue
        match = _TEMP_NAME.match(entry.name)
        try:
            stale = (
                match is not None
                and match.group(1) == host_tag()
                and not _process_exists(int(match.group(2)))
            ) or (now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_AGE_S)
            if stale and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue
    return removed


__all__ = [
    "STALE_TEMP_AGE_S",
    "atomic_write_bytes",
    "atomic_write_text",
    "host_tag",
    "remove_stale_temp_files",
]
