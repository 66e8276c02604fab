"""The advice an out-of-memory failure during training gives: which settings need less memory."""

from __future__ import annotations

from pathlib import Path

import torch

from crossdiff_core.errors import NotEnoughMemoryError
from crossdiff_core.training.config import TrainConfig


def _out_of_memory_error(
    error: BaseException, config, train_config: TrainConfig, device, out_dir: Path
) -> NotEnoughMemoryError:
    """Return the `NotEnoughMemoryError` for an allocation failure during training, listing settings that need less."""
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    on_gpu = torch.device(device).type == "cuda"
    batch = (
        f"a smaller batch size (--batch-size, or 'Batch size' in the app's Train tab; now {train_config.batch_size}; "
        "the step holds batch_size x dict_size activations)"
    )
    options = [
        batch,
        f"a smaller dictionary size (--dict-size, or 'Dictionary size' in the app's Train tab; now {config.dict_size})",
    ]
    if on_gpu:
        options.append("training on the CPU (hide the GPU with CUDA_VISIBLE_DEVICES=, or TrainConfig(device='cpu'))")
    else:
        options.append("closing other programs that use memory, or a machine with more RAM or a GPU")
    options.append(
        "4-bit models when train also harvests (--quant nf4 with --model-a/--model-b, or Quantization "
        "'4-bit (nf4)' in the app's Models & crosscoder tab)"
    )
    return NotEnoughMemoryError(
        f"out of memory while training on {device} ({reason}); try {'; '.join(options)}. Changing batch or dictionary "
        f"size starts a new run: on the CLI use a new --out folder or --no-resume (the checkpoint in {out_dir} belongs "
        "to these settings); in the app the automatic job folder changes with them"
    )
