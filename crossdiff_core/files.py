"""File permissions of what CrossDiff writes.

safetensors and `tempfile` create files and folders readable by their owner only (0600 / 0700);
files CrossDiff writes atomically through them get the permissions a plain `open()` or `mkdir()`
would give under the user's umask, so a crosscoder or store folder can be shared like any other.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def usual_permissions(*paths: os.PathLike | str) -> None:
    """Give each file 0666 and each folder 0777, less the umask (what open() and mkdir() would have given)."""
    for path in map(Path, paths):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_UMASK)


def file_sha256(path: os.PathLike | str) -> str:
    """Return the hex SHA-256 of a file's bytes, read in 1 MiB blocks (the checksums stores, checkpoints and
    feature indexes record)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_folder_atomically(target: os.PathLike | str, fill: Callable[[Path], None], prefix: str = ".writing-") -> Path:
    """Have `fill` write a folder in a temporary sibling, then move it to `target` (replacing it); return `target`.

    An interrupted or failed `fill` leaves no half-written `target`.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        fill(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
