"""Errors that CrossDiff shows to users: each message says what went wrong and what to do next."""


class CrossDiffError(Exception):
    """A user-facing error. The CLI prints its message as one line; the app shows it in a dialog."""


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
