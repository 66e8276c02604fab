"""Errors that CrossDiff shows to users: each message says what went wrong and what to do next."""

import errno
import re


class CrossDiffError(Exception):
    """A user-facing error. The CLI prints its message as one line; the app shows it in a dialog."""


class Cancelled(Exception):
    """A job stopped because its user cancelled it; what it finished is kept, so running it again resumes."""


class ModelLoadError(CrossDiffError):
    """A model or tokenizer could not be loaded (unknown id, bad file, unsupported architecture)."""


class AlignmentError(CrossDiffError):
    """Two tokenizers cannot be aligned (for example, a tokenizer without character offsets)."""


class CorpusError(CrossDiffError):
    """A corpus spec is malformed, unreachable, or yields no usable text."""


class StoreError(CrossDiffError):
    """An activation store is missing, corrupt, truncated, or does not match the request."""


class CrossCoderError(CrossDiffError):
    """A crosscoder config or file is invalid, or does not match the models it is used with."""


class CheckpointError(CrossDiffError):
    """A training checkpoint is corrupt or does not match the training run."""


class DiskFullError(CrossDiffError):
    """A file could not be written for lack of space (full disk, quota, or file-size limit); what was there before is intact."""


class NotEnoughMemoryError(CrossDiffError):
    """A computation ran out of (CPU or GPU) memory; the message lists settings that need less."""


_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def is_disk_full(error: BaseException) -> bool:
    """Return True when `error` says a write failed for lack of space (ENOSPC, EDQUOT or EFBIG).

    Recognizes OSErrors and the `SafetensorError`s of safetensors, which carry the errno only in
    their text ("... (os error 28)").
    """
    if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
        return True
    match = re.search(r"os error (\d+)", str(error))
    return match is not None and int(match.group(1)) in _DISK_FULL_ERRNOS


def disk_full_error(path, error: BaseException, advice: str) -> DiskFullError:
    """Return the `DiskFullError` to raise when writing `path` failed with the disk-full `error`; `advice` says what to do."""
    return DiskFullError(f"the disk is full: writing {path} failed ({error}); {advice}")


def is_out_of_memory(error: BaseException) -> bool:
    """Return True when `error` is an allocation failure: `MemoryError`, `torch.OutOfMemoryError` (CUDA), or the
    `RuntimeError` torch's CPU allocator raises ("DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    if isinstance(error, OSError) and error.errno == errno.ENOMEM:
        return True
    text = str(error).lower()
    if "cannot allocate memory" in text or f"os error {errno.ENOMEM})" in text:  # mmap / safetensors
        return True
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)
