"""Keep a quantized model's embeddings in bf16 while it computes in fp32.

bitsandbytes quantizes only `nn.Linear` layers: the input embedding and the LM head (one matrix when they are
tied) stay unquantized, and with a large vocabulary they are much of a small model (Gemma-3-270M: 168M of its
268M parameters, 671 MB in fp32). So when a quantized model computes in fp32 (CPUs without bf16 instructions),
`models.load_model` loads it in bf16 (`STORAGE_DTYPE`): the quantized layers get their weights straight from the
checkpoint, and the embeddings stay bf16 (used in place from the memory-mapped checkpoint when it is stored in
bf16, as the converted demo models are). `compute_in(model, dtype)` then casts every other floating-point weight
and buffer to the compute dtype, casts the embedding lookup's output to it (a gather: bf16 costs nothing there),
and makes the LM head multiply in the compute dtype, a block of bf16 rows cast at a time (`HEAD_BLOCK_BYTES`):
no bf16 matmul runs, and no fp32 copy of the whole matrix is ever made.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

STORAGE_DTYPE = torch.bfloat16
"""The dtype a quantized model's embeddings and LM head are kept in when it computes in a wider dtype."""

HEAD_BLOCK_BYTES = 16 * 2**20
"""Bytes of the LM head's weight cast to the compute dtype at a time."""


class UpcastHead(nn.Module):
    """An LM head whose weight is stored in a narrow dtype and multiplied in `compute_dtype`, a block of rows at a
    time.

    It holds the very `weight` (and `bias`) parameter of the head it replaces, so a tied head stays tied.
    """

    def __init__(self, head: nn.Linear, dtype: torch.dtype):
        super().__init__()
        self.weight = head.weight
        self.bias = head.bias
        self.compute_dtype = dtype
        self.in_features, self.out_features = head.weight.shape[1], head.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.compute_dtype)
        out = x.new_empty(*x.shape[:-1], self.out_features)
        rows = max(1, HEAD_BLOCK_BYTES // (self.in_features * x.element_size()))
        for start in range(0, self.out_features, rows):
            block = slice(start, start + rows)
            bias = None if self.bias is None else self.bias[block].to(self.compute_dtype)
            out[..., block] = F.linear(x, self.weight[block].to(self.compute_dtype), bias)
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, stored in {self.weight.dtype}"


def compute_in(model: nn.Module, dtype: torch.dtype) -> None:
    """Make a model loaded in `STORAGE_DTYPE` compute in `dtype`, its input embedding and LM head staying stored as
    they are (see the module docstring). Quantized weights (integer tensors) are left alone."""
    embedding = model.get_input_embeddings()
    head = model.get_output_embeddings()
    kept = {id(embedding.weight)} | ({id(head.weight)} if head is not None else set())
    with torch.no_grad():
        for module in model.modules():
            for param in module.parameters(recurse=False):
                if param.is_floating_point() and param.dtype != dtype and id(param) not in kept:
                    param.data = param.data.to(dtype)
            for name, buffer in module.named_buffers(recurse=False):
                if buffer.is_floating_point() and buffer.dtype != dtype:
                    setattr(module, name, buffer.to(dtype))
    embedding.register_forward_hook(lambda _module, _inputs, output: output.to(dtype))
    if head is not None and head.weight.dtype != dtype:
        model.set_output_embeddings(UpcastHead(head, dtype))
