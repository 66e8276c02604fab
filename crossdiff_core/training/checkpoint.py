"""Training checkpoints and logs: the resumable state in `out_dir/checkpoint/`, `metrics.jsonl` and the summary.

Every `checkpoint_every` steps a training loop (`loop.train` for two models, `multi.train_multi` for N)
writes the full training state (model, Adam moments, firing statistics, history) atomically to
`out_dir/checkpoint/`, with a checksum; a later call with the same arguments continues from there and
ends with the same weights as an uninterrupted run. At the end (or when stopped) `metrics.jsonl` and
`training.json` (`SUMMARY_FILE`) are written next to it, and the finished crosscoder with its own
`save_pretrained`. The helpers take the loop's crosscoder (anything with `state_dict`, `named_parameters`,
`dict_size` and `save_pretrained`), its Adam optimizer and its config (anything with `to_dict`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from crossdiff_core.crosscoder.model import SUMMARY_FILE
from crossdiff_core.errors import CheckpointError, disk_full_error, is_disk_full
from crossdiff_core.files import file_sha256, usual_permissions, write_text_atomically
from crossdiff_core.training.config import LEGACY_DEAD_AFTER_TOKENS, TrainConfig

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_STATE_FILE = "state.safetensors"
CHECKPOINT_META_FILE = "checkpoint.json"
METRICS_FILE = "metrics.jsonl"

_PREVIOUS_CHECKPOINT_DIR = ".checkpoint-previous"
_PARTIAL_CHECKPOINT_PREFIX = ".checkpoint-partial-"
_CHECKPOINT_FORMAT = 1
_START_OVER = "delete {folder} and train again to start over (the same command, or Start training in the app)"
"""What to do about a damaged checkpoint, in words for the command line and the app alike."""
# Train-config fields that may change between a run and its resumption.
_RESUMABLE_CHANGES = ("checkpoint_every", "log_every", "device")


@dataclass
class _RunState:
    """Mutable training state beyond the model and optimizer."""

    tokens_since_fired_F: torch.Tensor
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    elapsed_s: float = 0.0
    relocated: int | None = None
    """Latents relocated so far, where the loop logs that count (the N-model loop); None where it does not."""


def _start_run(
    out_dir: Path | None, model, optimizer, config, train_config: TrainConfig, device, resume: bool
) -> tuple[_RunState, int | None]:
    """Return the run state to train from and the step it resumes from (None for a fresh start).

    With `resume` and a checkpoint in `out_dir`, the model and optimizer are restored from it
    (`_load_checkpoint`, which refuses another run's checkpoint); otherwise no step is done yet and
    no latent has fired. Without `out_dir` the run always starts fresh.
    """
    checkpoint_dir = _existing_checkpoint(out_dir) if resume and out_dir is not None else None
    if checkpoint_dir is None:
        return _RunState(tokens_since_fired_F=torch.zeros(model.dict_size, dtype=torch.int64, device=device)), None
    run = _load_checkpoint(checkpoint_dir, model, optimizer, config, train_config, device)
    return run, run.step


def _existing_checkpoint(out_dir: Path) -> Path | None:
    """Return the newest complete checkpoint folder in `out_dir`, or None."""
    for name in (CHECKPOINT_DIR, _PREVIOUS_CHECKPOINT_DIR):
        if (out_dir / name).is_dir():
            return out_dir / name
    return None


def _remove_partial_checkpoints(out_dir: Path) -> None:
    """Delete half-written checkpoint folders left by a crash."""
    for partial in out_dir.glob(_PARTIAL_CHECKPOINT_PREFIX + "*"):
        shutil.rmtree(partial, ignore_errors=True)


def _save_checkpoint(out_dir: Path, model, optimizer, run: _RunState, config, train_config: TrainConfig) -> None:
    """Write the training state to `out_dir/checkpoint/` atomically; the old one stays until the new is complete."""
    tensors = {f"model.{name}": value for name, value in model.state_dict().items()}
    for name, param in model.named_parameters():
        for key, value in optimizer.state.get(param, {}).items():
            tensors[f"adam.{name}.{key}"] = value
    tensors["stats.tokens_since_fired"] = run.tokens_since_fired_F
    meta = {
        "format": _CHECKPOINT_FORMAT,
        "step": run.step,
        "tokens_seen": run.step * train_config.batch_size,
        "elapsed_s": run.elapsed_s,
        "crosscoder_config": config.to_dict(),
        "train_config": train_config.to_dict(),
        "history": run.history,
    }
    if run.relocated is not None:
        meta["relocated"] = run.relocated
    final, previous = out_dir / CHECKPOINT_DIR, out_dir / _PREVIOUS_CHECKPOINT_DIR
    partial = None
    try:
        partial = Path(tempfile.mkdtemp(prefix=_PARTIAL_CHECKPOINT_PREFIX, dir=out_dir))
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(partial / CHECKPOINT_STATE_FILE))
        usual_permissions(partial, partial / CHECKPOINT_STATE_FILE)
        meta["state_sha256"] = file_sha256(partial / CHECKPOINT_STATE_FILE)
        (partial / CHECKPOINT_META_FILE).write_text(json.dumps(meta, indent=1))
        for name in (CHECKPOINT_STATE_FILE, CHECKPOINT_META_FILE):
            with open(partial / name, "rb") as handle:
                os.fsync(handle.fileno())
    except (OSError, SafetensorError) as error:
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        if not is_disk_full(error):
            raise
        kept = f"the last checkpoint in {final} is intact" if final.is_dir() else "no checkpoint was written yet"
        raise disk_full_error(
            final, error, f"{kept}; free space on that disk and run the same command again to resume from it"
        ) from error
    shutil.rmtree(previous, ignore_errors=True)
    if final.exists():
        os.replace(final, previous)
    os.replace(partial, final)
    shutil.rmtree(previous, ignore_errors=True)


def _load_checkpoint(checkpoint_dir: Path, model, optimizer, config, train_config: TrainConfig, device) -> _RunState:
    """Restore model, optimizer and run state from `checkpoint_dir`; return the run state.

    Raises `CheckpointError` naming the file when it is corrupt, or saying what differs when the
    checkpoint belongs to another run.
    """
    meta_file, state_file = checkpoint_dir / CHECKPOINT_META_FILE, checkpoint_dir / CHECKPOINT_STATE_FILE
    try:
        meta = json.loads(meta_file.read_text())
        step, history = int(meta["step"]), list(meta["history"])
        saved_config, saved_train = meta["crosscoder_config"], meta["train_config"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{meta_file} is missing or corrupt ({error}); {_START_OVER.format(folder=checkpoint_dir)}"
        ) from error
    if train_config.dead_after_tokens is None and saved_train.get("dead_after_tokens") == LEGACY_DEAD_AFTER_TOKENS:
        # Written before the automatic window, when 10M was the default: finish the run as it started.
        train_config.dead_after_tokens = LEGACY_DEAD_AFTER_TOKENS
    _check_same_run(checkpoint_dir, saved_config, config.to_dict(), saved_train, train_config.to_dict())
    try:
        if meta.get("state_sha256") and file_sha256(state_file) != meta["state_sha256"]:
            raise ValueError(f"its SHA-256 differs from the one {CHECKPOINT_META_FILE} records")
        tensors = load_file(str(state_file))
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(
            f"{state_file} is missing, corrupt or truncated ({error}); {_START_OVER.format(folder=checkpoint_dir)}"
        ) from error
    try:
        state = {name: tensors.pop(f"model.{name}") for name in model.state_dict()}
        model.load_state_dict(state)
        names = [name for name, _ in model.named_parameters()]
        adam_state = {}
        for index, name in enumerate(names):
            entries = {
                key.rsplit(".", 1)[1]: tensors.pop(key) for key in list(tensors) if key.startswith(f"adam.{name}.")
            }
            if entries:
                adam_state[index] = entries
        optimizer.load_state_dict({"state": adam_state, "param_groups": optimizer.state_dict()["param_groups"]})
        tokens_since_fired_F = tensors.pop("stats.tokens_since_fired").to(device)
        if tokens_since_fired_F.shape != (model.dict_size,):
            raise ValueError(f"firing statistics have shape {tuple(tokens_since_fired_F.shape)}")
    except (KeyError, RuntimeError, ValueError) as error:
        raise CheckpointError(
            f"{state_file} does not hold a complete training state for this crosscoder ({error}); "
            f"{_START_OVER.format(folder=checkpoint_dir)}"
        ) from error
    return _RunState(
        tokens_since_fired_F=tokens_since_fired_F,
        step=step,
        history=history,
        elapsed_s=float(meta.get("elapsed_s", 0)),
        relocated=meta.get("relocated"),
    )


def _check_same_run(checkpoint_dir: Path, saved_config: dict, config: dict, saved_train: dict, train: dict) -> None:
    """Raise `CheckpointError` listing the differences if the checkpoint was written by a different run."""
    differences = [
        f"{key}: checkpoint has {saved_config.get(key)!r}, now {value!r}"
        for key, value in config.items()
        if saved_config.get(key) != value
    ]
    differences += [
        f"{key}: checkpoint has {saved_train.get(key)!r}, now {value!r}"
        for key, value in train.items()
        if key not in _RESUMABLE_CHANGES and saved_train.get(key) != value
    ]
    if differences:
        raise CheckpointError(
            f"{checkpoint_dir} was written by a different training run ({'; '.join(differences)}); to continue it, "
            "train with its settings; to start over, train into a new folder (--out on the command line, "
            "'Job folder' in the app) or delete this one"
        )


def _write_results(
    out_dir: Path, model, run: _RunState, config, train_config, resumed_from, finished: bool, elapsed_s: float
) -> None:
    """Write the crosscoder (`model.save_pretrained`, only when `finished`), `metrics.jsonl` (one line per logged
    step) and the `training.json` summary."""
    if finished:
        model.save_pretrained(out_dir)
    write_text_atomically(out_dir / METRICS_FILE, "".join(json.dumps(metrics) + "\n" for metrics in run.history))
    summary = {
        "finished": finished,
        "steps_done": run.step,
        "total_steps": train_config.steps,
        "tokens_seen": run.step * train_config.batch_size,
        "resumed_from": resumed_from,
        "elapsed_s": elapsed_s,
        "final_metrics": run.history[-1] if run.history else {},
        "crosscoder_config": config.to_dict(),
        "train_config": train_config.to_dict(),
        "dead_after_tokens_used": train_config.dead_after(),
    }
    write_text_atomically(out_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
