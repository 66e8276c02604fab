"""The advice an out-of-memory failure during training gives: which settings need less memory."""

from __future__ import annotations

from pathlib import Path

import torch

from crossdiff_core.errors import NotEnoughMemoryError
from crossdiff_core.training.config import TrainConfig


def _out_of_memory_error(error: BaseException, config, train_config: TrainConfig, device, out_dir: Path) -> NotEnoughMemoryError:
    """Return the `NotEnoughMemoryError` for an allocation failure during training, listing settings that need less."""
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    on_gpu = torch.device(device).type == "cuda"
    options = [
        f"a smaller --batch-size (now {train_config.batch_size}; the step holds batch_size x dict_size activations)",
        f"a smaller --dict-size (now {config.dict_size})",
    ]
    if on_gpu:
        options.append("training on the CPU (hide the GPU with CUDA_VISIBLE_DEVICES=, or TrainConfig(device='cpu'))")
    else:
        options.append("closing other programs that use memory, or a machine with more RAM or a GPU")
    options.append("4-bit models (--quant nf4) when train also harvests (--model-a/--model-b)")
    return NotEnoughMemoryError(
        f"out of memory while training on {device} ({reason}); try {'; '.join(options)}. Changing batch or dict "
        f"size starts a new run: use a new --out folder or --no-resume (the checkpoint in {out_dir} belongs to these settings)"
    )
