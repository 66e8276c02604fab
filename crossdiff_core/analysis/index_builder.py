"""The feature index, build side: measure what every latent of a crosscoder does, once.

`build_index(crosscoder, pair, IndexConfig(...))` re-runs both models over corpus windows (the
harvest's stores keep no text), encodes the paired activations, and records per latent: firing
frequency, mean and max activation, an activation histogram, decoder norms, top contexts as each
model tokenized them (with per-token activations for highlighting), the tokens its decoder direction
promotes and suppresses through the owning model's final norm and unembedding (both models for shared
latents), transfer R², Latent Scaling ratios, the tokenizer split share, the one-model components of
shared latents (`components`), the ranking scores of `scores`, and a label. The same crosscoder, models
and config give the same index, bit for bit. The result is a `crossdiff_core.analysis.index.FeatureIndex`
(its files are described there).

Windows are taken in corpus order: `skip_windows` windows are skipped, then `n_windows` are used.
Skip the windows a harvest consumed (its store's `windows_done`) to index held-out text; the CLI does
this when given `--store`. Every `test_every`-th window is the test split of the transfer regression.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from crossdiff_core.activations.paired import ModelPair, display_strings, run_paired
from crossdiff_core.alignment import align_batch
from crossdiff_core.analysis import blocks
from crossdiff_core.analysis.config import IndexConfig
from crossdiff_core.analysis.evidence import Evidence, first_content, split_flags
from crossdiff_core.analysis.index import (
    INDEX_FORMAT,
    INDEX_VERSION,
    FeatureIndex,
    crosscoder_fingerprint,
    has_index,
    index_dir,
    read_index_json,
)
from crossdiff_core.analysis.labels import heuristic_label, word_at
from crossdiff_core.analysis.logit_lens import top_tokens
from crossdiff_core.analysis.presented import component_arrays
from crossdiff_core.analysis.scores import SCORE_DOCS, ranking_scores
from crossdiff_core.analysis.stats import ActivationStats
from crossdiff_core.corpus.sources import iter_windows
from crossdiff_core.crosscoder import CrossCoder, check_models
from crossdiff_core.errors import Cancelled, CorpusError, CrossDiffError
from crossdiff_core.models import cancellable

log = logging.getLogger(__name__)


@dataclass
class IndexProgress:
    """What the progress callback receives while an index is built."""

    stage: str
    """"windows" (running the models), "tokens" (promoted tokens) or "done"."""
    done: int
    total: int


def load_or_build_index(
    crosscoder_dir,
    crosscoder: CrossCoder,
    pair: ModelPair,
    config: IndexConfig | None = None,
    progress: Callable[[IndexProgress], None] | None = None,
    show_tqdm: bool = False,
) -> FeatureIndex:
    """Return the crosscoder's feature index, building and saving it first when there is none or it is stale
    (built for other weights, or in another format version)."""
    if has_index(crosscoder_dir):
        try:
            meta = read_index_json(index_dir(crosscoder_dir) / "index.json")
        except CrossDiffError as exc:
            log.warning("%s; rebuilding it", exc)
            meta = None
        if not isinstance(meta, dict):
            meta = {"version": None}
        if meta.get("version") != INDEX_VERSION:
            log.info(
                "the feature index of %s has format version %s; rebuilding it as version %d",
                crosscoder_dir,
                meta.get("version"),
                INDEX_VERSION,
            )
        elif meta.get("crosscoder_sha256") == crosscoder_fingerprint(crosscoder):
            return FeatureIndex.load(index_dir(crosscoder_dir))
        else:
            log.info("the feature index of %s is stale (other weights); rebuilding it", crosscoder_dir)
    out_dir = index_dir(crosscoder_dir)
    return build_index(crosscoder, pair, config, out_dir=out_dir, progress=progress, show_tqdm=show_tqdm)


@torch.no_grad()
def build_index(
    crosscoder: CrossCoder,
    pair: ModelPair,
    config: IndexConfig | None = None,
    out_dir=None,
    progress: Callable[[IndexProgress], None] | None = None,
    show_tqdm: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> FeatureIndex:
    """Return the feature index of `crosscoder` on the windows of `config`, saved to `out_dir` when given.

    `should_stop()` is asked before each batch of windows, before each transformer block of the models' forward
    passes and between chunks of promoted tokens; once it returns True, `Cancelled` is raised and nothing is saved.
    """
    from tqdm.auto import tqdm

    stop = should_stop or (lambda: False)

    def report(p: IndexProgress) -> None:
        if stop():
            raise Cancelled
        if progress is not None:
            progress(p)

    config = config or IndexConfig()
    config.validate()
    model_a, model_b = pair
    check_models(crosscoder, model_a, model_b)
    crosscoder = crosscoder.eval()
    texts = list(
        itertools.islice(
            iter_windows(config.corpus, model_a.tokenizer, config.ctx_len),
            config.skip_windows,
            config.skip_windows + config.n_windows,
        )
    )
    if not texts:
        raise CorpusError(
            f"corpus {config.corpus!r} has no windows left after skipping {config.skip_windows}; "
            "skip fewer windows (--skip-windows on the command line, IndexConfig.skip_windows in Python) or use a "
            "larger corpus"
        )
    evidence = Evidence(crosscoder, config.top_contexts, config.test_every, config.ridge_alpha)
    windows: list[dict] = []
    row_start: list[int] = []
    n_outliers = 0
    bar = tqdm(total=len(texts), desc="feature index", unit="window", disable=not show_tqdm)
    with cancellable(pair, should_stop):
        for first in range(0, len(texts), config.batch_windows):
            if stop():
                raise Cancelled
            batch = texts[first : first + config.batch_windows]
            aligned = align_batch(
                model_a.tokenizer, model_b.tokenizer, batch, max_tokens=config.ctx_len, max_tokens_b=2 * config.ctx_len
            )
            runs = run_paired(model_a, model_b, aligned, config.outlier_factor)
            window_ids, splits = [], []
            for offset, ((tok_a, tok_b, _), run) in enumerate(zip(aligned, runs)):
                row_start.append(evidence.stats.n_rows + sum(len(ids) for ids in window_ids))
                windows.append({
                    "text": tok_a.text,
                    "a": _token_records(model_a.tokenizer, tok_a),
                    "b": _token_records(model_b.tokenizer, tok_b),
                    "pairs": [[int(p), int(q), int(e)] for p, q, e in zip(run.pos_a, run.pos_b, run.char_end)],
                })  # fmt: skip
                window_ids.append(torch.full((len(run.pos_a),), first + offset, dtype=torch.int64))
                splits.append(
                    torch.as_tensor(split_flags(run.pos_a, run.pos_b, first_content(tok_a), first_content(tok_b)))
                )
                n_outliers += run.n_outliers
            window_N = torch.cat(window_ids)
            if len(window_N):
                evidence.add(
                    torch.cat([run.x_a_PD for run in runs]),
                    torch.cat([run.x_b_PD for run in runs]),
                    window_N,
                    torch.cat(splits),
                )
            bar.update(len(batch))
            report(IndexProgress("windows", len(windows), len(texts)))
    bar.close()
    stats = evidence.stats
    if stats.n_rows == 0:
        raise CorpusError(
            f"the {len(texts)} windows of {config.corpus!r} gave no paired tokens; use a larger or different corpus"
        )

    arrays = evidence.arrays()
    arrays.update(_context_arrays(stats, row_start, windows, config))
    vocab = {}
    for side, model in (("a", model_a), ("b", model_b)):
        token_arrays, vocab[side] = _token_arrays(crosscoder, model, side, config.top_tokens, report)
        arrays.update(token_arrays)
    arrays.update(ranking_scores(arrays, config.top_contexts))
    components, component_typical = component_arrays(crosscoder, arrays["n_fires"] > 0)
    arrays.update(components)
    labels = _labels(arrays, windows, vocab)
    meta = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "crosscoder_sha256": crosscoder_fingerprint(crosscoder),
        "config": asdict(config),
        "models": {
            side: {
                "model_id": m.model_id,
                "revision": m.revision,
                "layer": m.layer,
                "tokenizer": m.tokenizer_fingerprint,
            }
            for side, m in (("a", model_a), ("b", model_b))
        },
        "dict_size": crosscoder.dict_size,
        "n_exclusive_a": crosscoder.n_a,
        "n_shared": crosscoder.n_shared,
        "n_exclusive_b": crosscoder.n_b,
        "standard": blocks.is_standard(crosscoder),
        "sparsity": crosscoder.config.sparsity,
        "n_windows": len(windows),
        "n_rows": stats.n_rows,
        "n_outliers": n_outliers,
        "split_base_rate": evidence.split_base_rate,
        "component_typical": component_typical,
        "scores": SCORE_DOCS,
    }
    index = FeatureIndex(meta, arrays, labels, {}, windows=windows, vocab=vocab)
    if out_dir is not None:
        index.save(out_dir)
    if progress is not None:
        progress(IndexProgress("done", len(windows), len(texts)))
    return index


def _token_records(tokenizer, tok) -> list[list]:
    """Return a window's tokens as `[shown, start, end, special]` records."""
    shown = display_strings(tokenizer, tok)
    return [[s, int(a), int(b), int(sp)] for s, (a, b), sp in zip(shown, tok.offsets, tok.special)]


def _context_arrays(
    stats: ActivationStats, row_start: list[int], windows: list[dict], config: IndexConfig
) -> dict[str, np.ndarray]:
    """Return the top-context arrays: peak activation, window, peak pair, crop start and the crop's activations."""
    top_window_FN = stats.top_window_NF.T.numpy()
    top_row_FN = stats.top_row_NF.T.numpy()
    valid_FN = top_window_FN >= 0
    starts = np.asarray(row_start, dtype=np.int64)
    n_pairs = np.asarray([len(w["pairs"]) for w in windows], dtype=np.int64)
    safe_window_FN = np.where(valid_FN, top_window_FN, 0)
    peak_FN = np.where(valid_FN, top_row_FN - starts[safe_window_FN], -1)
    crop_start_FN = np.where(valid_FN, np.maximum(peak_FN - config.context_before, 0), -1)
    width = config.context_before + 1 + config.context_after
    offsets_C = np.arange(width)
    local_FNC = crop_start_FN[..., None] + offsets_C
    inside_FNC = valid_FN[..., None] & (local_FNC < n_pairs[safe_window_FN][..., None])
    rows_FNC = starts[safe_window_FN][..., None] + local_FNC
    n_rows = max(stats.n_rows, 1)
    sparse_rows, sparse_latents, sparse_values = (t.numpy() for t in stats.sparse())
    keys = sparse_latents * n_rows + sparse_rows
    latent_FNC = np.broadcast_to(np.arange(len(top_window_FN))[:, None, None], rows_FNC.shape)
    queries = latent_FNC * n_rows + rows_FNC
    found = np.minimum(np.searchsorted(keys, queries), max(len(keys) - 1, 0))
    hit_FNC = inside_FNC & (keys[found] == queries) if len(keys) else np.zeros_like(inside_FNC)
    ctx_acts = np.where(hit_FNC, sparse_values[found] if len(keys) else 0.0, 0.0).astype(np.float16)
    return {
        "top_window": top_window_FN.astype(np.int32),
        "top_pair": peak_FN.astype(np.int32),
        "ctx_start": crop_start_FN.astype(np.int32),
        "ctx_acts": ctx_acts,
    }


def _token_arrays(
    crosscoder: CrossCoder, model, side: str, k: int, progress
) -> tuple[dict[str, np.ndarray], dict[int, str]]:
    """Return the promoted/suppressed token arrays `[F, k]` of model `side` (-1 without a decoder) and their texts."""
    F = crosscoder.dict_size
    own = blocks.model_slice(crosscoder, side)
    directions_LD = blocks.decoder_rows(crosscoder, side).float()
    report = (lambda n: progress(IndexProgress("tokens", n, len(directions_LD)))) if progress is not None else None
    found = top_tokens(model, directions_LD, k, progress=report)
    kk = found.promote_ids_LK.shape[1] if len(found.promote_ids_LK) else k
    out = {}
    for kind, ids_LK, logits_LK in (
        ("promote", found.promote_ids_LK, found.promote_logits_LK),
        ("suppress", found.suppress_ids_LK, found.suppress_logits_LK),
    ):
        ids_FK = np.full((F, kk), -1, dtype=np.int64)
        logits_FK = np.full((F, kk), np.nan, dtype=np.float32)
        ids_FK[own] = ids_LK.numpy()
        logits_FK[own] = logits_LK.numpy()
        out[f"{kind}_ids_{side}"] = ids_FK
        out[f"{kind}_logits_{side}"] = logits_FK
    used = sorted({int(i) for kind in ("promote", "suppress") for i in out[f"{kind}_ids_{side}"].ravel() if i >= 0})
    texts = model.tokenizer.batch_decode([[i] for i in used]) if used else []
    return out, dict(zip(used, texts))


def _labels(arrays: dict[str, np.ndarray], windows: list[dict], vocab: dict[str, dict[int, str]]) -> list[str]:
    """Return a heuristic label per latent from its top contexts (owner model's words) and promoted tokens."""
    labels = []
    for latent in range(len(arrays["block"])):
        side = "a" if arrays["owner"][latent] == 0 else "b"
        column = 0 if side == "a" else 1
        words = []
        for window, peak in zip(arrays["top_window"][latent], arrays["top_pair"][latent]):
            if window < 0:
                break
            record = windows[window]
            position = record["pairs"][peak][column]
            _, start, end, _ = record[side][position]
            words.append(word_at(record["text"], start, end))
        promoted = [vocab[side][int(i)] for i in arrays[f"promote_ids_{side}"][latent] if i >= 0]
        labels.append(heuristic_label(words, promoted, int(arrays["n_fires"][latent])))
    return labels
