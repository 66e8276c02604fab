"""Run both models on aligned text and return their activations at the paired positions.

Shared by the harvest (corpus → store), the prompt diff, the feature index and the report: pad a batch
of tokenized texts, run each model up to its read layer, pick the paired positions, and drop
attention-sink outliers with one rule (`inlier_pairs`: a pair is dropped when either model's activation
is not finite or its norm exceeds `outlier_factor` × the batch median), so the crosscoder sees the kind
of rows it was trained on. `paired_rows` does all of it, in one of two ways of running a model:

- one right-padded pass with an attention mask over every text (`max_batch_tokens=None`: a prompt,
  or the few windows of an index batch);
- the harvest's fast path (`rows_at_positions`), same values without changing a stored one: each
  window is cut after its last paired token (later tokens cannot change earlier activations in a
  causal model), each model's windows are sorted by length and regrouped into forward passes of at
  most `max_batch_tokens` tokens that waste little on padding, and padding goes on the right without
  an attention mask (causal attention never lets a real token see the pads after it, and the unmasked
  causal path is the fastest). Rows come back in text order.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from crossdiff_core.activations.config import OUTLIER_FACTOR
from crossdiff_core.alignment import Alignment, TokenizedText
from crossdiff_core.models import LoadedModel

ModelPair = tuple[LoadedModel, LoadedModel]
"""Model A and model B, loaded with the layers the crosscoder was trained on."""


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
    content = [
        i for i, (special, (start, end)) in enumerate(zip(tok.special, tok.offsets)) if not special and end > start
    ]
    next_end = {i: tok.offsets[j][1] for i, j in itertools.pairwise(content)}
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


def pad_id(tokenizer) -> int:
    """Return the id used to pad: the pad token, else EOS, else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def pad_batch(token_lists: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return right-padded `(input_ids_BT, attention_mask_BT)` for token id lists."""
    length = max(len(ids) for ids in token_lists)
    ids_BT = torch.full((len(token_lists), length), pad_id, dtype=torch.long)
    mask_BT = torch.zeros((len(token_lists), length), dtype=torch.long)
    for row, ids in enumerate(token_lists):
        ids_BT[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        mask_BT[row, : len(ids)] = 1
    return ids_BT, mask_BT


PASS_OVERHEAD_TOKENS = 256
"""What one more forward pass costs, in padded tokens: windows share a pass unless splitting saves more padding."""


def length_sorted_chunks(lengths: list[int], max_batch_tokens: int) -> list[list[int]]:
    """Return window indices grouped into forward passes, longest first, with the least padding plus pass overhead.

    Each pass holds at most `max_batch_tokens` tokens, padding included (a longer window gets a pass
    of its own); windows of length 0 are left out. Cuts of the length-sorted list are chosen by
    dynamic programming over `rows × width + PASS_OVERHEAD_TOKENS` per pass.
    """
    order = sorted((i for i in range(len(lengths)) if lengths[i] > 0), key=lambda i: (-lengths[i], i))
    cost = [0] + [float("inf")] * len(order)
    start_of = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for start in range(end - 1, -1, -1):
            padded = (end - start) * lengths[order[start]]
            if padded > max_batch_tokens and end - start > 1:
                break
            if cost[start] + padded + PASS_OVERHEAD_TOKENS < cost[end]:
                cost[end], start_of[end] = cost[start] + padded + PASS_OVERHEAD_TOKENS, start
    chunks, end = [], len(order)
    while end > 0:
        chunks.append(order[start_of[end] : end])
        end = start_of[end]
    return chunks[::-1]


def rows_at_positions(
    model: LoadedModel, input_ids: list[list[int]], positions: list, max_batch_tokens: int
) -> torch.Tensor:
    """Return `[sum of len(positions[i]), d_model]` fp32: model activations at each window's positions, in window order.

    Windows are cut after their last requested position, sorted by length and run in right-padded
    passes of at most `max_batch_tokens` tokens, without an attention mask (see the module docstring).
    """
    pad = pad_id(model.tokenizer)
    pos_W = [torch.as_tensor(p, dtype=torch.long) for p in positions]
    lengths = [int(p[-1]) + 1 if len(p) else 0 for p in pos_W]
    n_rows_W = torch.tensor([len(p) for p in pos_W], dtype=torch.long)
    first_row_W = torch.cumsum(n_rows_W, 0) - n_rows_W
    out_ND = torch.empty(int(n_rows_W.sum()), model.d_model)
    for chunk in length_sorted_chunks(lengths, max_batch_tokens):
        width = lengths[chunk[0]]
        ids_BT, _ = pad_batch([input_ids[w][: lengths[w]] for w in chunk], pad)  # chunk[0] is the longest
        source = [pos_W[w] + row * width for row, w in enumerate(chunk)]
        target = [torch.arange(len(pos_W[w])) + first_row_W[w] for w in chunk]
        acts_ND = model.activations(ids_BT).flatten(0, 1)
        out_ND.index_copy_(0, torch.cat(target), acts_ND[torch.cat(source).to(acts_ND.device)].cpu())
    return out_ND


def _rows_in_one_pass(model: LoadedModel, input_ids: list[list[int]], positions: list) -> torch.Tensor:
    """Return `[sum of len(positions[i]), d_model]` fp32: activations at each text's positions from one masked pass."""
    ids_BT, mask_BT = pad_batch(input_ids, pad_id(model.tokenizer))
    acts_BTD = model.activations(ids_BT, mask_BT).cpu()
    return torch.cat([acts_BTD[row, torch.as_tensor(pos, dtype=torch.long)] for row, pos in enumerate(positions)])


def inliers(x_ND: torch.Tensor, factor: float) -> torch.Tensor:
    """Return a bool `[N]` mask of finite rows whose norm is at most `factor` × the median norm of finite rows."""
    norms = x_ND.norm(dim=-1)
    finite = torch.isfinite(x_ND).all(-1) & (x_ND.abs().amax(-1) < 60_000)  # fits fp16
    if not finite.any():
        return finite
    return finite & (norms <= factor * norms[finite].median())


def inlier_pairs(x_a_ND: torch.Tensor, x_b_ND: torch.Tensor, factor: float = OUTLIER_FACTOR) -> torch.Tensor:
    """Return the bool `[N]` mask of the pairs to keep: rows that are `inliers` in both models (`model_rows` applies
    the same rule to N models)."""
    return inliers(x_a_ND, factor) & inliers(x_b_ND, factor)


def model_rows(
    models: list[LoadedModel] | tuple[LoadedModel, ...],
    input_ids: list[list[list[int]]],
    positions: list[list],
    outlier_factor: float = OUTLIER_FACTOR,
    max_batch_tokens: int | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Return `(xs, keep_N)`: per model, its fp32 activations at `positions[m][i]` of its tokens `input_ids[m][i]` of
    every text i, in text order (row n is the same paired position in every model), and the mask of the rows that are
    `inliers` in every model.

    `max_batch_tokens=None` runs each model once over all texts (right-padded, with an attention mask); a number
    runs the harvest's length-sorted passes of at most that many tokens (`rows_at_positions`).
    """
    xs = []
    for model, ids, pos in zip(models, input_ids, positions, strict=True):
        if max_batch_tokens is None:
            xs.append(_rows_in_one_pass(model, ids, pos))
        else:
            xs.append(rows_at_positions(model, ids, pos, max_batch_tokens))
    return xs, torch.stack([inliers(x_ND, outlier_factor) for x_ND in xs]).all(0)


def paired_rows(
    model_a: LoadedModel,
    model_b: LoadedModel,
    aligned: list[tuple[TokenizedText, TokenizedText, Alignment]],
    outlier_factor: float = OUTLIER_FACTOR,
    max_batch_tokens: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return `(x_a_ND, x_b_ND, keep_N)`: both models' fp32 activations at every paired position, in text order, and
    the `inlier_pairs` mask of the pairs to keep (`model_rows` for two models)."""
    (x_a_ND, x_b_ND), keep_N = model_rows(
        (model_a, model_b),
        [[a.input_ids for a, _, _ in aligned], [b.input_ids for _, b, _ in aligned]],
        [[al.pos_a for _, _, al in aligned], [al.pos_b for _, _, al in aligned]],
        outlier_factor,
        max_batch_tokens,
    )
    return x_a_ND, x_b_ND, keep_N


@torch.no_grad()
def run_paired(
    model_a: LoadedModel,
    model_b: LoadedModel,
    aligned: list[tuple[TokenizedText, TokenizedText, Alignment]],
    outlier_factor: float = OUTLIER_FACTOR,
) -> list[PairedRun]:
    """Return one `PairedRun` per aligned text, running each model once over the whole padded batch."""
    x_a_ND, x_b_ND, keep_N = paired_rows(model_a, model_b, aligned, outlier_factor)
    runs, start = [], 0
    for _, _, alignment in aligned:
        end = start + len(alignment.pos_a)
        keep_P = keep_N[start:end]
        keep = keep_P.numpy()
        runs.append(PairedRun(
            pos_a=alignment.pos_a[keep], pos_b=alignment.pos_b[keep], char_end=alignment.char_end[keep],
            x_a_PD=x_a_ND[start:end][keep_P], x_b_PD=x_b_ND[start:end][keep_P], n_outliers=int((~keep_P).sum()),
        ))  # fmt: skip
        start = end
    return runs
