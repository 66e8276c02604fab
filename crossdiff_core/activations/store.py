"""On-disk store of paired activations: sharded safetensors plus a `meta.json` that says what they are.

Layout of a store folder of two models:

```
meta.json                     format, both models (id, revision, layer, tokenizer fingerprint),
                              corpus spec, dtype, counts, coverage, outliers dropped, shard list
shards/shard_00000.safetensors  tensors "a" [n, d_a] and "b" [n, d_b] (fp16 or bf16), row i paired
```

A store of N ≥ 3 models (`MULTI_STORE_FORMAT`) lists `models` and widths `d` in `meta.json`, and each shard holds
tensors "0" … "N−1"; row i of every tensor comes from the same character position of the same text.

Every shard is written to a temporary name and renamed, then `meta.json` is replaced atomically, so
an interrupted harvest leaves a consistent store that the next harvest resumes. Each shard's
SHA-256, row count and sums of squared norms are recorded, so damage is detected and normalization
statistics stay exact across resumes.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from crossdiff_core.errors import StoreError, disk_full_error, is_disk_full
from crossdiff_core.files import file_sha256, usual_permissions, write_text_atomically

STORE_FORMAT = "crossdiff-paired-activations"
MULTI_STORE_FORMAT = "crossdiff-multi-activations"
PAIR_SIDES = ("a", "b")
"""The tensor names of a two-model store's shards, and the suffixes of its per-model counts."""
STORE_VERSION = 1
STORE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
_DISK_FULL_ADVICE = (
    "the store keeps its {shards} complete shards ({rows} rows); free space on that disk and run "
    "the same harvest command again to resume"
)


def multi_sides(n_models: int) -> tuple[str, ...]:
    """Return the tensor names of an N-model store's shards: "0" … "N−1"."""
    return tuple(str(m) for m in range(n_models))


def store_sides(meta: dict) -> tuple[str, ...]:
    """Return the tensor names of the shards of the store `meta` describes."""
    return multi_sides(len(meta["models"])) if meta.get("format") == MULTI_STORE_FORMAT else PAIR_SIDES


def is_store(path) -> bool:
    """Return True when `path` is a folder holding an activation store (of two models or of more)."""
    meta = Path(path) / "meta.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") in (STORE_FORMAT, MULTI_STORE_FORMAT)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def read_meta(path) -> dict:
    """Return a store's metadata, or raise StoreError saying what is wrong with the folder."""
    meta_path = Path(path) / "meta.json"
    if not meta_path.is_file():
        raise StoreError(
            f"{path} is not an activation store (no meta.json); run `python -m crossdiff_core harvest` to make one"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{meta_path} is corrupt ({exc}); delete the store folder and harvest again") from exc
    if meta.get("format") not in (STORE_FORMAT, MULTI_STORE_FORMAT):
        raise StoreError(
            f"{meta_path} is not a CrossDiff activation store; harvest one with `python -m crossdiff_core harvest`"
        )
    if meta.get("version", 0) > STORE_VERSION:
        raise StoreError(
            f"{path} was written by a newer CrossDiff (store version {meta['version']}); upgrade crossdiff"
        )
    return meta


class StoreWriter:
    """Append paired activation rows to a store, one atomically written shard at a time.

    `sides` names the models' tensors: `PAIR_SIDES` for two models (the header has `model_a`, `model_b`, `d_a`,
    `d_b`), `multi_sides(N)` for more (the header has `models` and `d`).
    """

    def __init__(
        self, out_dir, header: dict, dtype: str = "fp16", shard_tokens: int = 32768, sides: tuple = PAIR_SIDES
    ):
        if dtype not in STORE_DTYPES:
            raise StoreError(f"unknown store dtype {dtype!r}: choose one of {', '.join(STORE_DTYPES)}")
        self.out_dir = Path(out_dir)
        self.shard_dir = self.out_dir / "shards"
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype
        self.shard_tokens = shard_tokens
        self.sides = tuple(sides)
        self._buffers: list[list[torch.Tensor]] = [[] for _ in self.sides]
        self._pending = _empty_counts(self.sides)
        if (self.out_dir / "meta.json").exists():
            self.meta = read_meta(self.out_dir)
            if store_sides(self.meta) != self.sides:
                raise StoreError(
                    f"{self.out_dir} already holds a store of {len(store_sides(self.meta))} models, not "
                    f"{len(self.sides)}; choose a new folder (--out on the command line, 'Job folder' in the app) "
                    "or delete this one"
                )
            self._check_same_harvest(header)
            self._drop_unlisted_shards()
        else:
            self.meta = {
                "format": STORE_FORMAT if self.sides == PAIR_SIDES else MULTI_STORE_FORMAT,
                "version": STORE_VERSION,
                **header,
                "dtype": dtype,
                "windows_done": 0,
                "complete": False,
                "shards": [],
            }
            self._write_meta()

    def _check_same_harvest(self, header: dict) -> None:
        for key, value in header.items():
            if key in ("target_tokens",):
                continue
            if json.dumps(self.meta.get(key), sort_keys=True) != json.dumps(value, sort_keys=True):
                raise StoreError(
                    f"{self.out_dir} already holds a store from a different harvest ({key} differs: "
                    f"{self.meta.get(key)!r} vs {value!r}); choose a new folder (--out on the command line, "
                    "'Job folder' in the app) or delete this one"
                )
        self.meta["target_tokens"] = header.get("target_tokens", self.meta.get("target_tokens"))
        self.meta["complete"] = self.n_rows >= self.meta["target_tokens"] and self.meta["complete"]

    def _drop_unlisted_shards(self) -> None:
        listed = {s["file"] for s in self.meta["shards"]}
        for path in self.shard_dir.glob("*"):
            if f"shards/{path.name}" not in listed:
                path.unlink()
        for path in self.out_dir.glob(".meta.json.*"):  # temporary files of a meta.json write that was killed
            path.unlink(missing_ok=True)

    @property
    def n_rows(self) -> int:
        """Return the number of rows already written to shards."""
        return sum(s["n"] for s in self.meta["shards"])

    @property
    def n_buffered(self) -> int:
        """Return the number of rows waiting in memory for the next shard."""
        return sum(t.shape[0] for t in self._buffers[0])

    @property
    def windows_done(self) -> int:
        """Return how many corpus windows the written shards cover (where a resumed harvest restarts)."""
        return self.meta["windows_done"]

    def add(self, xs: list[torch.Tensor] | tuple[torch.Tensor, ...], counts: dict) -> None:
        """Buffer rows (one `[n, d]` tensor per side, row i paired across them) and the per-window counts they came
        with (windows, tokens per side, paired, outliers)."""
        for buffer, x_ND in zip(self._buffers, xs, strict=True):
            buffer.append(x_ND.to(STORE_DTYPES[self.dtype]).cpu())
        for key, value in counts.items():
            self._pending[key] += value
        if self.n_buffered >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows as one shard and record it in meta.json (both atomically)."""
        if not self.n_buffered and self._pending["windows"] == 0:
            return
        record = {"file": None, "n": self.n_buffered, **self._pending}
        if self.n_buffered:
            tensors = {side: torch.cat(buffer).contiguous() for side, buffer in zip(self.sides, self._buffers)}
            name = f"shard_{len(self.meta['shards']):05d}.safetensors"
            tmp = self.shard_dir / f".{name}.tmp"
            try:
                save_file(tensors, str(tmp))
                usual_permissions(tmp)
                os.replace(tmp, self.shard_dir / name)
            except (OSError, SafetensorError) as exc:
                tmp.unlink(missing_ok=True)
                if not is_disk_full(exc):
                    raise
                raise disk_full_error(
                    self.shard_dir / name,
                    exc,
                    _DISK_FULL_ADVICE.format(rows=self.n_rows, shards=len(self.meta["shards"])),
                ) from exc
            record["file"] = f"shards/{name}"
            record["sha256"] = file_sha256(self.shard_dir / name)
            for side, x_ND in tensors.items():
                record[f"sum_sq_norm_{side}"] = float(x_ND.double().pow(2).sum())
            self.meta["shards"].append(record)
        else:
            self.meta.setdefault("empty_windows", 0)
            self.meta["empty_windows"] += self._pending["windows"]
        self.meta["windows_done"] += self._pending["windows"]
        self._buffers, self._pending = [[] for _ in self.sides], _empty_counts(self.sides)
        self._write_meta()

    def finish(self, exhausted: bool = False) -> dict:
        """Flush, mark the store complete, and return its metadata."""
        self.flush()
        self.meta["complete"] = True
        self.meta["corpus_exhausted"] = exhausted
        self._write_meta()
        return self.meta

    def _write_meta(self) -> None:
        self.meta["counts"] = summarize_counts(self.meta["shards"], self.meta.get("empty_windows", 0), self.sides)
        write_text_atomically(self.out_dir / "meta.json", json.dumps(self.meta, indent=2), sync=True)


PARTS_DIR = "parts"
"""Subfolder of a store harvested by several processes: one complete store per rank."""


def merge_parts(out_dir, part_dirs: list) -> dict:
    """Write `out_dir/meta.json` listing the shards of the complete stores `part_dirs` (one per rank); return it.

    Shards are listed round-robin over the parts, so that `PairedActivationStore.for_rank(r, n)`
    of n processes gives rank r the shards its own harvest wrote (when the parts have equally
    many shards; otherwise the leftovers go round-robin too). The shard files stay where they are.
    """
    out_dir = Path(out_dir)
    metas = [read_meta(part) for part in part_dirs]
    for part, meta in zip(part_dirs, metas, strict=True):
        if not meta.get("complete"):
            raise StoreError(f"{part} is not complete: run the same harvest command again to finish it")
    listed = []
    for i in range(max(len(m["shards"]) for m in metas)):
        for part, meta in zip(part_dirs, metas, strict=True):
            if i < len(meta["shards"]):
                record = dict(meta["shards"][i])
                record["file"] = Path(part).relative_to(out_dir).joinpath(record["file"]).as_posix()
                listed.append(record)
    merged = {key: value for key, value in metas[0].items() if key not in ("shards", "counts", "tokens_per_s")}
    merged.update(
        shards=listed,
        parts=[Path(part).relative_to(out_dir).as_posix() for part in part_dirs],
        target_tokens=sum(m["target_tokens"] for m in metas),
        windows_done=sum(m["windows_done"] for m in metas),
        empty_windows=sum(m.get("empty_windows", 0) for m in metas),
        corpus_exhausted=any(m.get("corpus_exhausted") for m in metas),
        complete=True,
    )
    merged["counts"] = summarize_counts(listed, merged["empty_windows"], store_sides(merged))
    write_text_atomically(out_dir / "meta.json", json.dumps(merged, indent=2), sync=True)
    return merged


def _empty_counts(sides: tuple = PAIR_SIDES) -> dict:
    return {"windows": 0, **{f"tokens_{side}": 0 for side in sides}, "paired": 0, "outliers": 0}


def summarize_counts(shards: list[dict], empty_windows: int = 0, sides: tuple = PAIR_SIDES) -> dict:
    """Return totals over shard records: rows, windows, tokens and coverage per model, outliers dropped."""
    total = _empty_counts(sides)
    for shard in shards:
        for key in total:
            total[key] += shard.get(key, 0)
    total["windows"] += empty_windows
    tokens = {f"tokens_{side}": total[f"tokens_{side}"] for side in sides}
    return {
        "rows": sum(s["n"] for s in shards),
        "windows": total["windows"],
        **tokens,
        "paired": total["paired"],
        "outliers_dropped": total["outliers"],
        **{f"coverage_{side}": total["paired"] / n if n else 0.0 for side, n in zip(sides, tokens.values())},
    }


@dataclass
class _Shard:
    file: Path
    n: int
    sha256: str | None


class ActivationStore:
    """Read a store of any number of models: metadata, normalization statistics, shuffled training batches,
    held-out rows. Rows come as tuples with one tensor per model, in the store's model order.

    The last `holdout_fraction` of each shard's rows are held out from training batches and served by `held_out()`.
    """

    def __init__(self, path, holdout_fraction: float = 0.05, verify: bool = True, allow_incomplete: bool = False):
        self.path = Path(path)
        self.meta = read_meta(self.path)
        self._check_kind()
        if not self.meta.get("complete") and not allow_incomplete:
            raise StoreError(
                f"{self.path} is incomplete (its harvest was interrupted at {self.meta['counts']['rows']} rows); "
                "run the same harvest command again to finish it"
            )
        if not self.meta["shards"]:
            raise StoreError(f"{self.path} holds no paired activations; harvest with a larger or different corpus")
        self.sides = store_sides(self.meta)
        self.d = [int(w) for w in self.meta["d"]] if "d" in self.meta else [self.meta["d_a"], self.meta["d_b"]]
        self.holdout_fraction = holdout_fraction
        self.verify = verify
        self._verified: set[str] = set()
        self.shards = []
        for record in self.meta["shards"]:
            file = self.path / record["file"]
            if not file.is_file():
                raise StoreError(f"shard {file} is missing; the store is damaged: harvest again into a new folder")
            self.shards.append(_Shard(file, int(record["n"]), record.get("sha256")))

    def _check_kind(self) -> None:
        """Raise StoreError when this class cannot read the store (every store, here)."""

    def __len__(self) -> int:
        return sum(s.n for s in self.shards)

    @property
    def n_train_rows(self) -> int:
        """Rows that training reads: every shard's rows before its held-out tail."""
        return sum(self._split_rows(s.n) for s in self.shards)

    def for_rank(self, rank: int, world: int) -> ActivationStore:
        """Return the view of this store that rank `rank` of `world` data-parallel ranks reads: shards i ≡ rank (mod world).

        Raises `StoreError` when the store has fewer shards than ranks.
        """
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in 0..{world - 1}")
        if len(self.shards) < world:
            raise StoreError(
                f"{self.path} has {len(self.shards)} shards, fewer than the {world} processes that would each read "
                "their own: run fewer processes, or harvest more tokens (or a smaller shard size)"
            )
        view = copy.copy(self)
        view.shards = self.shards[rank::world]
        view.meta = {**self.meta, "shards": self.meta["shards"][rank::world]}
        view._verified = self._verified
        return view

    def mean_sq_norms(self) -> tuple[float, ...]:
        """Return the mean squared L2 norm of each model's stored activations."""
        n = len(self)
        return tuple(sum(s[f"sum_sq_norm_{side}"] for s in self.meta["shards"]) / n for side in self.sides)

    def load_shard(self, index: int) -> tuple[torch.Tensor, ...]:
        """Return one shard's tensors (`[n, d]` per model, in the stored dtype), checking its checksum."""
        shard = self.shards[index]
        if self.verify and shard.sha256 and shard.file.name not in self._verified:
            if file_sha256(shard.file) != shard.sha256:
                raise StoreError(
                    f"shard {shard.file} is corrupt (checksum mismatch); delete the store folder and harvest again"
                )
            self._verified.add(shard.file.name)
        try:
            tensors = load_file(str(shard.file))
        except (SafetensorError, OSError, ValueError) as exc:
            raise StoreError(
                f"shard {shard.file} cannot be read ({exc}); delete the store folder and harvest again"
            ) from exc
        xs = tuple(tensors.get(side) for side in self.sides)
        if any(x is None or x.shape != (shard.n, d) for x, d in zip(xs, self.d, strict=True)):
            raise StoreError(f"shard {shard.file} does not have the shapes meta.json records; harvest again")
        return xs

    def _split_rows(self, n: int) -> int:
        return n - round(n * self.holdout_fraction) if n > 1 else n

    def held_out(self, max_rows: int | None = None) -> tuple[torch.Tensor, ...]:
        """Return the held-out rows (the tail of each shard) as fp32, one tensor per model, at most `max_rows`."""
        parts, total = [], 0
        for index, shard in enumerate(self.shards):
            start = self._split_rows(shard.n)
            if start >= shard.n:
                continue
            parts.append([x[start:].float() for x in self.load_shard(index)])
            total += shard.n - start
            if max_rows is not None and total >= max_rows:
                break
        if not parts:
            raise StoreError(f"{self.path} has no held-out rows; harvest more tokens")
        return tuple(torch.cat(side)[:max_rows] if max_rows else torch.cat(side) for side in zip(*parts))

    def iter_batches(
        self, batch_size: int, seed: int, start_batch: int = 0, group_shards: int = 2
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        """Yield shuffled fp32 training batches (one tensor per model) forever, deterministic in `(batch_size, seed)`.

        Each epoch visits the shards in a seeded order, `group_shards` at a time, and shuffles the
        rows of a group in memory: RAM stays bounded by a group, never the whole store. Batches
        before `start_batch` are skipped without loading their shards.
        """
        train_rows = [self._split_rows(s.n) for s in self.shards]
        if sum(train_rows) < batch_size:
            raise StoreError(
                f"{self.path} has {sum(train_rows)} training rows, fewer than one batch of {batch_size}; "
                "harvest more tokens ('Token budget' in the app's Train tab) or lower the batch size (--batch-size; "
                "'Batch size' in the app)"
            )
        # A group must hold a batch whatever the order, or an epoch could yield none and the loop never end:
        # widen the groups until their smallest possible first group (the smallest shards) holds one.
        smallest = sorted(train_rows)
        while group_shards < len(smallest) and sum(smallest[:group_shards]) < batch_size:
            group_shards += 1
        epoch, skip = 0, start_batch
        while True:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.shards), generator=gen).tolist()
            groups = [order[i : i + group_shards] for i in range(0, len(order), group_shards)]
            for g, group in enumerate(groups):
                n_rows = sum(train_rows[i] for i in group)
                n_batches = n_rows // batch_size
                if skip >= n_batches:
                    skip -= n_batches
                    continue
                loaded = [[x[: train_rows[i]] for x in self.load_shard(i)] for i in group]
                xs_ND = [torch.cat(side) for side in zip(*loaded)]
                group_gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 10_007 + g)
                perm = torch.randperm(xs_ND[0].shape[0], generator=group_gen)
                for j in range(skip, n_batches):
                    rows = perm[j * batch_size : (j + 1) * batch_size]
                    yield tuple(x[rows].float() for x in xs_ND)
                skip = 0
            epoch += 1

    def _summary(self, models: dict) -> dict:
        return {
            "kind": "activation store",
            "path": str(self.path),
            **models,
            "corpus": self.meta.get("corpus"),
            "ctx_len": self.meta.get("ctx_len"),
            "dtype": self.meta.get("dtype"),
            "complete": self.meta.get("complete"),
            "n_shards": len(self.shards),
            **self.meta["counts"],
        }


class PairedActivationStore(ActivationStore):
    """A store of two models: `(x_a, x_b)` rows, with the pair's widths `d_a`, `d_b` and `pair_info()`.

    Implements `crossdiff_core.activations.batches.BatchSource`.
    """

    def _check_kind(self) -> None:
        if self.meta["format"] != STORE_FORMAT:
            raise StoreError(
                f"{self.path} holds activations of {len(self.meta['models'])} models, not two: train an N-model "
                "crosscoder on it (`python -m crossdiff_core train --store` picks that for such a store), or "
                "harvest the two models you want into a new folder"
            )

    @property
    def d_a(self) -> int:
        """Width of model A's activations."""
        return self.d[0]

    @property
    def d_b(self) -> int:
        """Width of model B's activations."""
        return self.d[1]

    def pair_info(self) -> dict:
        """Return the model pair the activations come from (ids, revisions, layers, tokenizer fingerprints)."""
        a, b = self.meta["model_a"], self.meta["model_b"]
        return {
            "model_a": a["model_id"],
            "model_b": b["model_id"],
            "revision_a": a.get("revision"),
            "revision_b": b.get("revision"),
            "layer_a": a["layer"],
            "layer_b": b["layer"],
            "tokenizer_a": a["tokenizer"],
            "tokenizer_b": b["tokenizer"],
        }

    def summary(self) -> dict:
        """Return what `info` prints about a store."""
        return self._summary({**self.pair_info(), "d_a": self.d_a, "d_b": self.d_b})


class MultiActivationStore(ActivationStore):
    """A store of N ≥ 3 models (`MULTI_STORE_FORMAT`); implements `crossdiff_core.training.multi.MultiSource`."""

    def _check_kind(self) -> None:
        if self.meta["format"] != MULTI_STORE_FORMAT:
            raise StoreError(f"{self.path} holds activations of two models: open it as a two-model store")

    def models_info(self) -> list[dict]:
        """Return each model's record (id, revision, layer, tokenizer fingerprint), in the store's order."""
        return self.meta["models"]

    def summary(self) -> dict:
        """Return what `info` prints about a store."""
        models = self.models_info()
        return self._summary({
            "models": [m["model_id"] for m in models], "layers": [m["layer"] for m in models], "d": self.d,
        })  # fmt: skip


def open_store(path, **kwargs) -> ActivationStore:
    """Return the store in `path` as a `PairedActivationStore` (two models) or a `MultiActivationStore` (more)."""
    meta = read_meta(path)
    kind = MultiActivationStore if meta["format"] == MULTI_STORE_FORMAT else PairedActivationStore
    return kind(path, **kwargs)
