"""Harvest paired activations of two models (or more: `harvest_many`) over a corpus into an on-disk store.

Each corpus window is tokenized by both tokenizers, aligned at shared token boundaries
(`crossdiff_core.alignment`), run through both models up to their read layers, and the paired rows
are appended to a `StoreWriter`. Positions whose activation norm is an outlier (attention sinks) are
dropped and counted. A harvest that stops midway resumes where its last shard ended.

Speed without changing a stored value: the models run in `crossdiff_core.activations.paired`'s
length-sorted passes (`rows_at_positions`: windows cut after their last paired token, regrouped into
forward passes of at most `max_batch_tokens` tokens that waste little on padding, right padding without
an attention mask). Rows are stored in corpus-window order.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from crossdiff_core.activations.config import HarvestConfig
from crossdiff_core.activations.paired import model_rows, paired_rows
from crossdiff_core.activations.store import PAIR_SIDES, PARTS_DIR, StoreWriter, merge_parts, multi_sides, read_meta
from crossdiff_core.alignment import align_batch, align_many_texts
from crossdiff_core.corpus.sources import iter_windows
from crossdiff_core.distributed import Dist
from crossdiff_core.errors import Cancelled, StoreError
from crossdiff_core.models import LoadedModel, cancellable

log = logging.getLogger(__name__)


@dataclass
class HarvestProgress:
    """What a harvest reports after each batch of windows."""

    tokens: int
    target: int
    windows: int
    coverage: tuple[float, ...]
    """Per model, the share of its tokens paired so far."""
    elapsed_s: float
    resumed_tokens: int = 0
    """Tokens the store already held when this harvest started (a resumed one)."""

    @property
    def seconds_left(self) -> float | None:
        """Return the estimated seconds until `target` at this harvest's pace so far, or None before any token."""
        new = self.tokens - self.resumed_tokens
        if new <= 0 or self.elapsed_s <= 0:
            return None
        return max(self.target - self.tokens, 0) * self.elapsed_s / new


def paired_activations(
    model_a: LoadedModel,
    model_b: LoadedModel,
    texts: list[str],
    ctx_len: int,
    outlier_factor: float,
    max_batch_tokens: int = 8192,
):
    """Return `(x_a_ND, x_b_ND, counts)` for a batch of texts: paired rows in text order, coverage/outlier counts."""
    aligned = align_batch(model_a.tokenizer, model_b.tokenizer, texts, max_tokens=ctx_len, max_tokens_b=2 * ctx_len)
    x_a, x_b, ok = paired_rows(model_a, model_b, aligned, outlier_factor, max_batch_tokens)
    counts = _counts(texts, PAIR_SIDES, [[al.n_tokens_a, al.n_tokens_b] for _, _, al in aligned], ok)
    return x_a[ok], x_b[ok], counts


def multi_activations(
    models: list[LoadedModel], texts: list[str], ctx_len: int, outlier_factor: float, max_batch_tokens: int = 8192
) -> tuple[list[torch.Tensor], dict]:
    """Return `(xs, counts)` for a batch of texts: per model, its rows at the positions where every tokenizer splits
    the text cleanly (`align_many`), in text order, and coverage/outlier counts. The first model's windows are
    `ctx_len` tokens; the others get twice that, as model B does in `paired_activations`."""
    limits = [ctx_len] + [2 * ctx_len] * (len(models) - 1)
    aligned = align_many_texts([m.tokenizer for m in models], texts, limits)
    xs, ok = model_rows(
        models,
        [[toks[m].input_ids for toks, _ in aligned] for m in range(len(models))],
        [[al.positions[m] for _, al in aligned] for m in range(len(models))],
        outlier_factor,
        max_batch_tokens,
    )
    counts = _counts(texts, multi_sides(len(models)), [al.n_tokens for _, al in aligned], ok)
    return [x[ok] for x in xs], counts


def _counts(texts: list[str], sides: tuple[str, ...], tokens: list[list[int]], ok) -> dict:
    """Return a batch's counts for the store: windows, tokens per model (`tokens[text][model]`), paired, outliers."""
    per_side = [sum(t[m] for t in tokens) for m in range(len(sides))]
    return {
        "windows": len(texts),
        **{f"tokens_{side}": n for side, n in zip(sides, per_side)},
        "paired": int(ok.numel()),
        "outliers": int((~ok).sum()),
    }


def harvest(
    model_a: LoadedModel,
    model_b: LoadedModel,
    corpus: str,
    out_dir,
    config: HarvestConfig | None = None,
    progress: Callable[[HarvestProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    show_tqdm: bool = False,
    group: Dist | None = None,
    windows_of: tuple[int, int] | None = None,
) -> dict:
    """Harvest `config.n_tokens` paired activations into `out_dir` and return the store's metadata.

    Resumes an interrupted harvest of the same models, layers and corpus in `out_dir`. Raises
    StoreError when the corpus yields no paired tokens. `should_stop()` is asked before each batch of windows and
    before each transformer block of the models' forward passes; once it returns True the batch under way is
    dropped and the metadata of the incomplete store is returned (what earlier batches wrote stays; a rerun resumes).

    With a data-parallel `group` (under torchrun), rank r reads the corpus windows i ≡ r (mod world)
    into its own part, `out_dir/parts/rank-r-of-world/`, with its share of `n_tokens`; when every
    part is complete, rank 0 lists all their shards in `out_dir/meta.json` (`merge_parts`), so
    training reads it as one store. Each part resumes on its own. `windows_of=(r, world)` reads
    only those windows in a single process (what rank r of a data-parallel harvest stores).
    """
    config = config or HarvestConfig()
    if group is not None:
        return _harvest_parallel(model_a, model_b, corpus, Path(out_dir), config, progress, should_stop, show_tqdm,
                                 group)  # fmt: skip
    header = {"model_a": model_a.info(), "model_b": model_b.info(), "d_a": model_a.d_model, "d_b": model_b.d_model}

    def rows(batch: list[str]):
        x_a, x_b, counts = paired_activations(
            model_a, model_b, batch, config.ctx_len, config.outlier_factor, config.max_batch_tokens
        )
        return [x_a, x_b], counts

    return _harvest_rows((model_a, model_b), header, PAIR_SIDES, rows, corpus, out_dir, config, progress,
                         should_stop, show_tqdm, windows_of)  # fmt: skip


def harvest_many(
    models: list[LoadedModel],
    corpus: str,
    out_dir,
    config: HarvestConfig | None = None,
    progress: Callable[[HarvestProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    show_tqdm: bool = False,
) -> dict:
    """Harvest the activations of N models at the positions all their tokenizers share into `out_dir` (a two-model
    store for two models, as `harvest` writes; an N-model store otherwise) and return the store's metadata.

    Windows are cut in the first model's tokens. Resuming, cancelling and errors are as in `harvest`.
    """
    config = config or HarvestConfig()
    if len(models) < 2:
        raise StoreError(f"a harvest needs at least two models, got {len(models)}")
    if len(models) == 2:
        return harvest(*models, corpus, out_dir, config, progress, should_stop, show_tqdm)
    header = {"models": [m.info() for m in models], "d": [m.d_model for m in models]}

    def rows(batch: list[str]):
        return multi_activations(models, batch, config.ctx_len, config.outlier_factor, config.max_batch_tokens)

    return _harvest_rows(models, header, multi_sides(len(models)), rows, corpus, out_dir, config, progress,
                         should_stop, show_tqdm, None)  # fmt: skip


def _harvest_rows(models, header, sides, rows, corpus, out_dir, config, progress, should_stop, show_tqdm, windows_of):
    """Run `rows(batch of windows) -> (xs, counts)` over the corpus windows into the store in `out_dir`."""
    header = {**header, "corpus": corpus, "ctx_len": config.ctx_len, "outlier_factor": config.outlier_factor,
              "target_tokens": config.n_tokens}  # fmt: skip
    writer = StoreWriter(out_dir, header, dtype=config.dtype, shard_tokens=config.shard_tokens, sides=sides)
    if writer.meta["complete"]:
        log.info("store %s is already complete", out_dir)
        return writer.meta
    done = writer.n_rows
    skip = writer.windows_done
    if done:
        log.info("resuming harvest at %d tokens (%d windows done)", done, skip)
    bar = None
    if show_tqdm:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.n_tokens, initial=min(done, config.n_tokens), unit="tok", desc="harvest")
    start = time.perf_counter()
    resumed_tokens = min(done, config.n_tokens)
    counts_total = _counts([], sides, [], torch.zeros(0, dtype=torch.bool))
    windows = iter_windows(corpus, models[0].tokenizer, config.ctx_len)
    if windows_of is not None:
        windows = itertools.islice(windows, windows_of[0], None, windows_of[1])
    stop = should_stop or (lambda: False)

    def add(batch: list[str], done: int) -> int:
        xs, counts = rows(batch)
        need = config.n_tokens - done
        xs = [x[:need] for x in xs]
        for key, value in counts.items():
            counts_total[key] += value
        writer.add(xs, counts)
        return done + int(xs[0].shape[0])

    def coverage() -> tuple[float, ...]:
        return tuple(_cov(counts_total, side) for side in sides)

    batch: list[str] = []
    seen = 0
    exhausted = True
    try:
        with cancellable(models, should_stop):
            for text in windows:
                seen += 1
                if seen <= skip:
                    continue
                batch.append(text)
                if len(batch) < config.batch_windows:
                    continue
                if stop():
                    raise Cancelled
                done = add(batch, done)
                batch = []
                if bar is not None:
                    bar.n = min(done, config.n_tokens)
                    bar.set_postfix(coverage=" ".join(f"{c:.2f}" for c in coverage()))
                    bar.refresh()
                if progress is not None:
                    progress(HarvestProgress(min(done, config.n_tokens), config.n_tokens, seen, coverage(),
                                             time.perf_counter() - start, resumed_tokens))  # fmt: skip
                if done >= config.n_tokens:
                    exhausted = False
                    break
            if batch:
                if stop():
                    raise Cancelled
                done = add(batch, done)
    except Cancelled:  # the batch under way is dropped; the shards written so far stay, and a rerun resumes there
        writer.flush()
        return writer.meta
    finally:
        if bar is not None:
            bar.close()
    if done == 0:
        writer.flush()
        raise StoreError(
            f"corpus {corpus!r} produced no paired tokens (is it empty, or do the tokenizers never "
            "end a token at the same place?); use a larger corpus or builtin:demo"
        )
    if exhausted and done < config.n_tokens:
        log.warning("corpus %s ran out after %d of %d paired tokens", corpus, done, config.n_tokens)
    meta = writer.finish(exhausted=exhausted and done < config.n_tokens)
    meta["tokens_per_s"] = counts_total["paired"] / max(time.perf_counter() - start, 1e-9)
    return meta


def part_dir(out_dir, rank: int, world: int) -> Path:
    """Return the folder rank `rank` of a `world`-process harvest into `out_dir` writes its part to."""
    return Path(out_dir) / PARTS_DIR / f"rank-{rank:03d}-of-{world:03d}"


def _harvest_parallel(model_a, model_b, corpus, out_dir: Path, config, progress, should_stop, show_tqdm, group: Dist):
    """Harvest this rank's share into its part; once all parts are complete, rank 0 merges them."""
    share = config.n_tokens // group.world + (group.rank < config.n_tokens % group.world)
    local = dataclasses.replace(config, n_tokens=share)
    meta = harvest(model_a, model_b, corpus, part_dir(out_dir, group.rank, group.world), local, progress, should_stop,
                   show_tqdm and group.is_main, windows_of=(group.rank, group.world))  # fmt: skip
    if not group.any(not meta["complete"]):  # every part finished (none stopped early)
        if group.is_main:
            merge_parts(out_dir, [part_dir(out_dir, r, group.world) for r in range(group.world)])
        group.barrier()
        return read_meta(out_dir)
    return meta


def _cov(counts: dict, side: str) -> float:
    total = counts[f"tokens_{side}"]
    return counts["paired"] / total if total else 0.0
