"""How CrossDiff writes files: atomically, with the usual permissions, and with a clear error on a full disk.

safetensors and `tempfile` create files and folders readable by their owner only (0600 / 0700);
files CrossDiff writes atomically through them get the permissions a plain `open()` or `mkdir()`
would give under the user's umask, so a crosscoder or store folder can be shared like any other.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from crossdiff_core.errors import disk_full_error, is_disk_full


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def cache_dir() -> Path:
    """Return CrossDiff's cache folder (`$CROSSDIFF_CACHE`, default `~/.cache/crossdiff`), created if missing."""
    path = Path(os.environ.get("CROSSDIFF_CACHE", Path.home() / ".cache" / "crossdiff"))
    path.mkdir(parents=True, exist_ok=True)
    return path


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


@contextlib.contextmanager
def folder_lock(target: os.PathLike | str) -> Iterator[None]:
    """Hold an exclusive lock on `target` (a sibling `.<name>.lock` file) for the `with` block, across processes.

    Two processes that fill the same cache folder (the app and the CLI, or two test workers) then do it one after
    the other: the second finds the folder done instead of replacing it while the first one reads it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


RERUN_ADVICE = "free space on that disk and run the same command again"


def write_text_atomically(path: os.PathLike | str, text: str, advice: str = RERUN_ADVICE, sync: bool = False) -> Path:
    """Write `text` (UTF-8) to `path` through a temporary sibling and a rename; return `path`.

    A crash never leaves half a file, and a full disk raises `DiskFullError` (saying `advice`) with the
    old file intact. `sync=True` also flushes the data to the disk before the rename.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    usual_permissions(tmp)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and is_disk_full(error):
            raise disk_full_error(path, error, f"{path.name} is unchanged; {advice}") from error
        raise
    return path
