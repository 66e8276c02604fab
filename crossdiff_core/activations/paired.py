"""Run both models on aligned text and return their activations at the paired positions.

Shared by the prompt diff, the feature index and the report: pad a batch of tokenized texts, run each
model up to its read layer, pick the paired positions, and drop attention-sink outliers with the
harvest's own rule (`crossdiff_core.activations.harvest.inliers`: a pair is dropped when either model's activation
is not finite or its norm exceeds `outlier_factor` × the batch median), so the crosscoder sees the kind
of rows it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from crossdiff_core.activations.harvest import inliers
from crossdiff_core.alignment import Alignment, TokenizedText
from crossdiff_core.models import LoadedModel

ModelPair = tuple[LoadedModel, LoadedModel]
"""Model A and model B, loaded with the layers the crosscoder was trained on."""

OUTLIER_FACTOR = 10.0
"""Drop a pair whose activation norm exceeds this multiple of the batch median (as the harvest does)."""


@dataclass
class PairedRun:
    """One text run through both models: its kept paired positions and the activations there."""

    pos_a: np.ndarray
    """int64 `[P]` token indices in A's input (outliers removed)."""
    pos_b: np.ndarray
    """int64 `[P]` token indices in B's input."""
    char_end: np.ndarray
    """int64 `[P]` character offset where both paired tokens end."""
    x_a_PD: torch.Tensor
    """Raw fp32 activations of model A at `pos_a`."""
    x_b_PD: torch.Tensor
    """Raw fp32 activations of model B at `pos_b`."""
    n_outliers: int
    """Paired positions dropped as attention-sink outliers."""


def display_strings(tokenizer, tok: TokenizedText) -> list[str]:
    """Return what each token shows: the characters it completes, or a special token's name.

    Pieces of one multi-byte character share offsets; the character is shown on the last piece (the one
    that completes it, which is also the one that can be paired) and the earlier pieces show "". Joined,
    the non-special tokens give the text they cover.
    """
    shown = [str(name) for name in tokenizer.convert_ids_to_tokens(tok.input_ids)]
    content = [i for i, (special, (start, end)) in enumerate(zip(tok.special, tok.offsets)) if not special and end > start]
    next_end = {i: tok.offsets[j][1] for i, j in zip(content, content[1:])}
    covered, group_start = 0, None
    for i, (special, (start, end)) in enumerate(zip(tok.special, tok.offsets)):
        if special or end <= start:
            covered = max(covered, end)  # a special token's own text (e.g. '<|im_start|>') is not shown twice
            continue
        group_start = start if group_start is None else min(group_start, start)
        if next_end.get(i, end + 1) > end:
            shown[i] = tok.text[max(covered, group_start) : end]
            covered, group_start = max(covered, end), None
        else:
            shown[i] = ""
    return shown


def pad_batch(token_lists: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return right-padded `(input_ids_BT, attention_mask_BT)` for token id lists."""
    length = max(len(ids) for ids in token_lists)
    ids_BT = torch.full((len(token_lists), length), pad_id, dtype=torch.long)
    mask_BT = torch.zeros((len(token_lists), length), dtype=torch.long)
    for row, ids in enumerate(token_lists):
        ids_BT[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask_BT[row, : len(ids)] = 1
    return ids_BT, mask_BT


def pad_id(tokenizer) -> int:
    """Return the id used to pad: the pad token, else EOS, else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


@torch.no_grad()
def run_paired(
    model_a: LoadedModel,
    model_b: LoadedModel,
    aligned: list[tuple[TokenizedText, TokenizedText, Alignment]],
    outlier_factor: float = OUTLIER_FACTOR,
) -> list[PairedRun]:
    """Return one `PairedRun` per aligned text, running each model once over the whole padded batch."""
    rows: dict[str, list[torch.Tensor]] = {"a": [], "b": []}
    for side, model in (("a", model_a), ("b", model_b)):
        index = 0 if side == "a" else 1
        ids_BT, mask_BT = pad_batch([item[index].input_ids for item in aligned], pad_id(model.tokenizer))
        acts_BTD = model.activations(ids_BT, mask_BT).cpu()
        for row, (_, _, alignment) in enumerate(aligned):
            positions = alignment.pos_a if side == "a" else alignment.pos_b
            rows[side].append(acts_BTD[row, torch.as_tensor(positions, dtype=torch.long)])
    all_a = torch.cat(rows["a"])
    all_b = torch.cat(rows["b"])
    keep_N = torch.zeros(0, dtype=torch.bool)
    if len(all_a):
        keep_N = inliers(all_a, outlier_factor) & inliers(all_b, outlier_factor)
    runs, start = [], 0
    for (_, _, alignment), x_a_PD, x_b_PD in zip(aligned, rows["a"], rows["b"]):
        keep_P = keep_N[start : start + len(x_a_PD)]
        start += len(x_a_PD)
        keep = keep_P.numpy()
        runs.append(PairedRun(
            pos_a=alignment.pos_a[keep], pos_b=alignment.pos_b[keep], char_end=alignment.char_end[keep],
            x_a_PD=x_a_PD[keep_P], x_b_PD=x_b_PD[keep_P], n_outliers=int((~keep_P).sum()),
        ))  # fmt: skip
    return runs
