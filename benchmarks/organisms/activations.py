"""Each model's activations over the benchmark texts, computed once and paired for any model pair.

The organism benchmark diffs many pairs that share models (the base model meets every organism of
its family, and the other family). Every text is short enough that no tokenizer truncates it, so a
model's activations at its tokens do not depend on the partner: `ModelActivations` runs a model once
over all texts (its tokens, offsets and read-layer activations, fp16 on disk), and `paired_rows`
aligns two of them with the tool's own cross-tokenizer alignment, exactly as a harvest would, and
drops the same attention-sink outliers. `write_store` puts the pairs into a real paired-activation
store that `crossdiff_core.training.loop` reads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from crossdiff_core.activations.config import OUTLIER_FACTOR
from crossdiff_core.activations.paired import inlier_pairs, rows_at_positions
from crossdiff_core.activations.store import StoreWriter
from crossdiff_core.alignment import TokenizedText, align, tokenize_with_offsets
from crossdiff_core.analysis.evidence import first_content, split_flags
from crossdiff_core.models import LoadedModel

MAX_TOKENS = 256
"""No benchmark text is longer than this in any tokenizer (checked)."""


@dataclass
class ModelActivations:
    """One model's tokens and read-layer activations over a list of texts."""

    info: dict
    d_model: int
    tokens: list[TokenizedText]
    acts: list[torch.Tensor]
    """Per text `[tokens, d_model]` fp16 (all positions, specials included)."""


def texts_digest(texts: list[str]) -> str:
    """Return a short hash of the texts (part of a cache file's name)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def model_activations(
    model: LoadedModel, texts: list[str], cache: Path, max_batch_tokens: int = 4096, progress=None
) -> ModelActivations:
    """Return `model`'s activations over `texts`, read from `cache` when computed before, else computed and saved."""
    tokens = [tokenize_with_offsets(model.tokenizer, text) for text in texts]
    too_long = [i for i, tok in enumerate(tokens) if len(tok.input_ids) > MAX_TOKENS]
    if too_long:
        raise ValueError(
            f"{len(too_long)} benchmark texts exceed {MAX_TOKENS} tokens (first: {texts[too_long[0]][:60]!r})"
        )
    file = Path(cache)
    if file.exists():
        flat = load_file(file)["acts"]
    else:
        positions = [list(range(len(tok.input_ids))) for tok in tokens]
        parts = []
        step = 64
        for first in range(0, len(texts), step):
            ids = [tok.input_ids for tok in tokens[first : first + step]]
            parts.append(rows_at_positions(model, ids, positions[first : first + step], max_batch_tokens).half())
            if progress is not None:
                progress(min(first + step, len(texts)), len(texts))
        flat = torch.cat(parts)
        file.parent.mkdir(parents=True, exist_ok=True)
        save_file({"acts": flat.contiguous()}, str(file))
    lengths = [len(tok.input_ids) for tok in tokens]
    acts = list(torch.split(flat, lengths))
    return ModelActivations(model.info(), model.d_model, tokens, acts)


@dataclass
class PairedRows:
    """Paired rows of two models over the benchmark texts."""

    x_a_ND: torch.Tensor
    x_b_ND: torch.Tensor
    text_N: torch.Tensor
    """int64: the text each row comes from."""
    char_end_N: torch.Tensor
    """int64: character offset where both paired tokens end."""
    split_N: torch.Tensor
    """bool: the two tokenizers cut the text since the previous pair into different numbers of tokens."""
    coverage_a: float
    coverage_b: float


def paired_rows(a: ModelActivations, b: ModelActivations, texts: list[int] | None = None) -> PairedRows:
    """Return the paired, inlier rows of `a` and `b` over the chosen texts (all by default), in text order."""
    chosen = range(len(a.tokens)) if texts is None else texts
    xa, xb, text, ends, split = [], [], [], [], []
    n_a = n_b = 0
    for i in chosen:
        alignment = align(a.tokens[i], b.tokens[i])
        n_a += alignment.n_tokens_a
        n_b += alignment.n_tokens_b
        if not len(alignment.pos_a):
            continue
        pos_a = torch.as_tensor(alignment.pos_a, dtype=torch.long)
        pos_b = torch.as_tensor(alignment.pos_b, dtype=torch.long)
        xa.append(a.acts[i][pos_a].float())
        xb.append(b.acts[i][pos_b].float())
        text.append(torch.full((len(pos_a),), i, dtype=torch.long))
        ends.append(torch.as_tensor(alignment.char_end, dtype=torch.long))
        split.append(
            torch.as_tensor(
                split_flags(alignment.pos_a, alignment.pos_b, first_content(a.tokens[i]), first_content(b.tokens[i]))
            )
        )
    x_a, x_b = torch.cat(xa), torch.cat(xb)
    keep = inlier_pairs(x_a, x_b, OUTLIER_FACTOR)
    return PairedRows(
        x_a[keep],
        x_b[keep],
        torch.cat(text)[keep],
        torch.cat(ends)[keep],
        torch.cat(split)[keep],
        int(keep.sum()) / max(n_a, 1),
        int(keep.sum()) / max(n_b, 1),
    )


def write_store(
    rows: PairedRows, a: ModelActivations, b: ModelActivations, out_dir: Path, corpus: str, seed: int = 0
) -> Path:
    """Write the rows, shuffled with `seed`, as a paired-activation store in `out_dir`; return `out_dir`."""
    header = {
        "model_a": a.info,
        "model_b": b.info,
        "d_a": a.d_model,
        "d_b": b.d_model,
        "corpus": corpus,
        "ctx_len": MAX_TOKENS,
        "outlier_factor": OUTLIER_FACTOR,
        "target_tokens": len(rows.x_a_ND),
    }
    order = torch.randperm(len(rows.x_a_ND), generator=torch.Generator().manual_seed(seed))
    writer = StoreWriter(out_dir, header, dtype="fp16", shard_tokens=1 << 16)
    if writer.meta["complete"]:
        return Path(out_dir)
    counts = {"windows": 0, "tokens_a": 0, "tokens_b": 0, "paired": len(order), "outliers": 0}
    writer.add((rows.x_a_ND[order], rows.x_b_ND[order]), counts)
    writer.finish()
    return Path(out_dir)
