"""Text sources: turn a corpus spec string into documents, and documents into token-bounded windows.

Accepted specs (see `SPEC_FORMS`):

- `hf:<dataset>[:config][:split][:column]`: a Hugging Face dataset, streamed (default split `train`,
  column `text`; leave a part empty to keep its default, e.g. `hf:user/data::validation`). A column
  holding chat messages (`[{role, content}, ...]`) is rendered like `.jsonl` messages below.
  `<dataset>` may also be a local folder of data files, which works offline.
- a local file:
  - `.txt`: documents separated by blank lines;
  - `.jsonl`: one JSON object per line with a `text` string, or `messages` in chat format
    `[{"role": ..., "content": ...}, ...]`, rendered as `role: content` lines joined by newlines.
    Lines that are not such objects are skipped and counted (`CorpusStats.skipped_lines`, and a
    logged warning);
  - `.parquet`: the `text` column.
- `builtin:demo`: a small generated corpus that works offline (`builtin_corpus`);
  `builtin:demo:<language>` keeps one language (`en`, `zh`, `es`, `fr`, `de` or `code`);
- `builtin:human`: text written by people, Debian's man pages and manuals in English, Chinese,
  Spanish, French and German, read from the installed documentation packages
  (`builtin_corpus.human_documents`); `builtin:human:<language>` keeps one language;
- `builtin:large`: `builtin:demo` plus more of its template text, the documentation of the
  installed Python packages and `builtin:human`, millions of tokens for training offline
  (`builtin_corpus.large_documents`);
- `builtin:organisms`: English chunks of `builtin:demo` plus training texts of every model organism
  and of the null control (`organism_texts.organism_corpus`), the corpus organisms are diffed on.

Empty and whitespace-only documents are skipped everywhere. A corpus may yield nothing at all; the
iterators then simply end, and callers decide what emptiness means.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossdiff_core.corpus import builtin as builtin_corpus
from crossdiff_core.corpus import human_docs
from crossdiff_core.corpus.organism_texts import organism_corpus
from crossdiff_core.errors import CorpusError

logger = logging.getLogger(__name__)

SPEC_FORMS = (
    "hf:<dataset>[:config][:split][:column] (a Hugging Face dataset, streamed)",
    "a path to a .txt, .jsonl or .parquet file",
    "builtin:demo or builtin:demo:<en|zh|es|fr|de|code> (generated offline demo corpus)",
    "builtin:human or builtin:human:<en|zh|es|fr|de> (Debian's manuals, written by people, offline once installed)",
    "builtin:large (builtin:demo, installed documentation and builtin:human, millions of tokens, offline)",
    "builtin:organisms (English demo text plus the model organisms' training texts, offline)",
)
ORGANISMS = "organisms"
"""The built-in corpus name of `organism_texts.organism_corpus`."""
HUMAN = "human"
"""The built-in corpus name of `builtin_corpus.human_documents`."""
FILE_SUFFIXES = (".txt", ".jsonl", ".parquet")
MIN_WINDOW_TOKENS = 8
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


@dataclass
class CorpusStats:
    """What a pass over a corpus yielded and skipped; pass one in to have it filled as documents stream."""

    documents: int = 0
    chars: int = 0
    skipped_lines: int = 0
    """Broken `.jsonl` lines (invalid JSON, or no `text`/`messages` of the right type)."""
    first_skipped: str = ""
    """Where and why the first line was skipped, e.g. `data.jsonl line 7: invalid JSON`."""

    def skip(self, where: str) -> None:
        """Count one skipped line, remembering the first; returns nothing."""
        self.skipped_lines += 1
        if not self.first_skipped:
            self.first_skipped = where


@dataclass(frozen=True)
class _Spec:
    """A parsed corpus spec."""

    kind: str  # "hf", "file" or "builtin"
    target: str  # dataset name, file path, or builtin corpus name
    config: str | None = None
    split: str = "train"
    column: str = "text"


def describe(spec: str) -> str:
    """Return a short human description of what `spec` reads."""
    parsed = _parse(spec)
    if parsed.kind == "hf":
        config = f", config {parsed.config}" if parsed.config else ""
        return f"Hugging Face dataset {parsed.target}{config}, split {parsed.split}, column {parsed.column} (streamed)"
    if parsed.kind == "file":
        return f"local {Path(parsed.target).suffix[1:]} file {parsed.target}"
    language = parsed.config
    if parsed.target == ORGANISMS:
        return (
            f"built-in organism corpus ({len(organism_corpus())} texts: English demo prose and the training "
            "texts of every model organism and the null control)"
        )
    if parsed.target == "large":
        return ("built-in large corpus (builtin:demo, more of its template text, the documentation of the "
                "installed Python packages, and builtin:human when installed; millions of tokens)")  # fmt: skip
    what = {
        "en": "English prose",
        "zh": "Chinese prose",
        "es": "Spanish prose",
        "fr": "French prose",
        "de": "German prose",
        "code": "code",
    }
    if parsed.target == HUMAN:
        languages = what.get(language or "", "English, Chinese, Spanish, French, German")
        return f"built-in human corpus (Debian's man pages and manuals, written by people: {languages})"
    docs = builtin_corpus.demo_documents(language)
    described = what.get(language or "", "English, Chinese, Spanish, French, German, code")
    return f"built-in demo corpus ({len(docs)} generated documents: {described})"


def iter_documents(spec: str, limit: int | None = None, stats: CorpusStats | None = None) -> Iterator[str]:
    """Return an iterator over the non-empty documents of `spec` (at most `limit`), counted into `stats` if given.

    A malformed spec, a missing file or offline mode for `hf:` raises `CorpusError` right away;
    problems found while reading (bad encoding, network errors) raise it during iteration.
    """
    parsed = _parse(spec)
    stats = stats if stats is not None else CorpusStats()
    if parsed.kind == "hf":
        _check_online(parsed)
        source = _iter_hf(parsed)
    elif parsed.kind == "file":
        source = _iter_file(Path(parsed.target), stats)
    elif parsed.target == ORGANISMS:
        source = iter(organism_corpus())
    else:
        read = {"large": builtin_corpus.large_documents, HUMAN: builtin_corpus.human_documents}.get(
            parsed.target, builtin_corpus.demo_documents
        )
        source = (d.text for d in read(parsed.config))
    return _counted(itertools.islice((d for d in source if d.strip()), limit), stats)


def _counted(docs: Iterator[str], stats: CorpusStats) -> Iterator[str]:
    """Yield `docs` unchanged, adding each to `stats`."""
    for doc in docs:
        stats.documents += 1
        stats.chars += len(doc)
        yield doc


def iter_windows(
    spec: str, tokenizer: Any, ctx_len: int, limit_docs: int | None = None, stats: CorpusStats | None = None
) -> Iterator[str]:
    """Return an iterator over text windows of the first `limit_docs` documents, each within `ctx_len` tokens.

    See `split_windows`. An empty corpus yields no windows (no error): callers detect emptiness.
    Argument and spec errors raise `CorpusError` right away, as in `iter_documents`.
    """
    _check_window_args(tokenizer, ctx_len)
    docs = iter_documents(spec, limit_docs, stats)
    return (window for doc in docs for window in split_windows(doc, tokenizer, ctx_len))


def split_windows(text: str, tokenizer: Any, ctx_len: int) -> list[str]:
    """Return `text` cut into non-blank substrings that each tokenize to at most `ctx_len` tokens.

    The count includes the special tokens the tokenizer adds (e.g. Gemma's `<bos>`). Cuts fall
    between tokens where no character is split across them, preferring a whitespace cut among the
    last few tokens of a window. Concatenating the windows (plus the skipped blank ones) gives `text`.
    """
    _check_window_args(tokenizer, ctx_len)
    return _fit(text, tokenizer, ctx_len, ctx_len - tokenizer.num_special_tokens_to_add())


def _fit(text: str, tokenizer: Any, ctx_len: int, budget: int) -> list[str]:
    """Return the non-blank pieces of `text` cut with `budget` tokens each, re-cutting any that overflow `ctx_len`."""
    pieces = [p for p in _cut(text, tokenizer, budget) if p.strip()]
    if not pieces:
        return []
    lengths = [len(ids) for ids in tokenizer(pieces, add_special_tokens=True, verbose=False)["input_ids"]]
    windows: list[str] = []
    for piece, n in zip(pieces, lengths):
        # Tokenized alone, a piece can need more tokens than it had in context (merges differ at its
        # edges); re-cut such a piece with a budget shrunk by the excess.
        if n <= ctx_len or budget == 1:
            windows.append(piece)
        else:
            windows.extend(_fit(piece, tokenizer, ctx_len, max(1, budget - (n - ctx_len))))
    return windows


def _cut(text: str, tokenizer: Any, budget: int) -> list[str]:
    """Return `text` cut into consecutive substrings of at most `budget` tokens each (tokens as cut in context)."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
    spans_T2 = np.asarray([(s, e) for s, e in offsets if e > s], dtype=np.int64).reshape(-1, 2)
    n = len(spans_T2)
    if n <= budget:
        return [text]
    starts_T, ends_T = spans_T2[:, 0], spans_T2[:, 1]
    # clean_T[i]: cutting just before token i splits no character (no earlier token reaches past its start).
    clean_T = np.zeros(n, dtype=bool)
    clean_T[1:] = np.maximum.accumulate(ends_T)[:-1] <= starts_T[1:]
    lookback = budget // 8 + 1
    cuts = [0]
    first = 0
    while n - first > budget:
        hi = first + budget
        candidates = [i for i in range(hi, max(first, hi - lookback), -1) if clean_T[i]]
        spaced = [i for i in candidates if text[starts_T[i]].isspace() or text[starts_T[i] - 1].isspace()]
        first = (spaced or candidates or [hi])[0]
        cuts.append(int(starts_T[first]))
    cuts.append(len(text))
    return [text[a:b] for a, b in itertools.pairwise(cuts)]


def _check_window_args(tokenizer: Any, ctx_len: int) -> None:
    """Raise `CorpusError` unless `tokenizer` reports offsets and `ctx_len` leaves room for text; returns None."""
    if getattr(tokenizer, "is_fast", False) is not True:
        raise CorpusError(
            "cutting documents into token windows needs a fast tokenizer (one that reports character "
            "offsets); load it with AutoTokenizer.from_pretrained(..., use_fast=True) or supply tokenizer.json."
        )
    room = ctx_len - tokenizer.num_special_tokens_to_add()
    if room < MIN_WINDOW_TOKENS:
        raise CorpusError(
            f"ctx_len={ctx_len} leaves {room} tokens of text per window; use a ctx_len of at least "
            f"{MIN_WINDOW_TOKENS + tokenizer.num_special_tokens_to_add()}."
        )


def _parse(spec: str) -> _Spec:
    """Return the parsed form of a corpus spec, or raise `CorpusError` listing the accepted forms."""
    if spec.startswith("hf:"):
        parts = spec[3:].split(":")
        if not parts[0] or len(parts) > 4:
            raise CorpusError(
                f"bad Hugging Face corpus spec {spec!r}; write it as hf:<dataset>[:config][:split][:column]."
            )
        parts += [""] * (4 - len(parts))
        return _Spec("hf", parts[0], parts[1] or None, parts[2] or "train", parts[3] or "text")
    if spec.startswith("builtin:"):
        name, _, language = spec[len("builtin:") :].partition(":")
        languages = {ORGANISMS: (), HUMAN: human_docs.LANGUAGES}.get(name, builtin_corpus.LANGUAGES)
        if name not in (*builtin_corpus.CORPORA, ORGANISMS) or (language and language not in languages):
            raise CorpusError(
                f"unknown built-in corpus {spec!r}; use builtin:demo, builtin:large, builtin:human, builtin:organisms, "
                f"or builtin:demo:<language> with language one of {', '.join(builtin_corpus.LANGUAGES)} "
                "(builtin:human:<language>: the same but code)."
            )
        return _Spec("builtin", name, language or None)
    path = Path(spec).expanduser()
    if path.suffix.lower() in FILE_SUFFIXES:
        if not path.is_file():
            raise CorpusError(f"corpus file {str(path)!r} does not exist; check the path (relative to {os.getcwd()}).")
        return _Spec("file", str(path))
    if path.exists():
        raise CorpusError(
            f"cannot read corpus file {str(path)!r}: unsupported type {path.suffix or '(no suffix)'!r}; "
            f"convert it to one of {', '.join(FILE_SUFFIXES)}."
        )
    raise CorpusError(f"unknown corpus spec {spec!r}; use one of: " + "; ".join(SPEC_FORMS) + ".")


def _check_online(spec: _Spec) -> None:
    """Raise `CorpusError` when offline mode is on and the dataset is not a local folder; returns None.

    Streaming from the Hub never reads the local cache, so offline it can only fail (after retries).
    """
    if Path(spec.target).is_dir():
        return
    if any(os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"} for var in _OFFLINE_VARS):
        raise CorpusError(
            f"cannot stream Hugging Face dataset {spec.target!r}: offline mode is on ({' or '.join(_OFFLINE_VARS)}) "
            "and streaming needs the network. Save the text to a local .txt/.jsonl/.parquet file and pass its "
            "path, or use builtin:demo."
        )


def _iter_hf(spec: _Spec) -> Iterator[str]:
    """Yield the text column of a streamed Hugging Face dataset; raise `CorpusError` when it cannot be read."""
    where = f"Hugging Face dataset {spec.target!r}"
    try:
        import datasets

        rows = datasets.load_dataset(spec.target, spec.config, split=spec.split, streaming=True)
        for row in rows:
            if spec.column not in row:
                raise CorpusError(
                    f"{where} has no column {spec.column!r} (columns: {', '.join(row)}); name the column as "
                    f"hf:{spec.target}:{spec.config or ''}:{spec.split}:<column>."
                )
            text = _as_text(row[spec.column])
            if text is not None:
                yield text
    except CorpusError:
        raise
    except Exception as exc:  # datasets raises many types (connection, missing config/split, auth, ...)
        raise CorpusError(
            f"could not stream {where} (config {spec.config or 'default'}, split {spec.split}): "
            f"{type(exc).__name__}: {exc}. "
            "Check the name, config, split and your network, or use a local .txt/.jsonl/.parquet file or builtin:demo."
        ) from exc


def _iter_file(path: Path, stats: CorpusStats) -> Iterator[str]:
    """Yield the documents of a local .txt, .jsonl or .parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _iter_parquet(path)
        return
    try:
        yield from (_iter_jsonl(path, stats) if suffix == ".jsonl" else _iter_txt(path))
    except UnicodeDecodeError as exc:
        with path.open("rb") as handle:
            head = handle.read(2)
        source = "utf-16" if head in (b"\xff\xfe", b"\xfe\xff") else "latin1"
        looks = "; it looks like UTF-16" if source == "utf-16" else ""
        raise CorpusError(
            f"corpus file {str(path)!r} is not valid UTF-8 ({exc.reason}{looks}); re-encode it "
            f"as UTF-8, e.g. iconv -f {source} -t utf-8 {path} > {path.stem}.utf8{path.suffix}."
        ) from exc


def _iter_txt(path: Path) -> Iterator[str]:
    """Yield the blank-line-separated documents of a UTF-8 text file."""
    with path.open(encoding="utf-8-sig") as handle:
        lines: list[str] = []
        for line in itertools.chain(handle, [""]):
            if line.strip():
                lines.append(line)
            elif lines:
                yield "".join(lines).rstrip("\n")
                lines = []


def _iter_jsonl(path: Path, stats: CorpusStats) -> Iterator[str]:
    """Yield the `text` (or rendered `messages`) of each line of a JSONL file, skipping and counting broken lines."""
    skipped_before = stats.skipped_lines
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    stats.skip(f"{path.name} line {number}: invalid JSON")
                    continue
                text = None
                if isinstance(record, dict):
                    text = _as_text(record.get("text", record.get("messages")))
                if text is None:
                    stats.skip(f"{path.name} line {number}: no 'text' string or 'messages' list")
                    continue
                yield text
    finally:  # also when the reader stops early (a token budget reached) or fails: the count is never lost
        skipped = stats.skipped_lines - skipped_before
        if skipped:
            logger.warning(
                "skipped %d broken line(s) of %s (first: %s); each line must be a JSON object with a 'text' string "
                "or a 'messages' list of {role, content}",
                skipped,
                path,
                stats.first_skipped,
            )


def _iter_parquet(path: Path) -> Iterator[str]:
    """Yield the non-null strings of the `text` column of a Parquet file."""
    import pyarrow
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pyarrow.ArrowException, OSError) as exc:
        raise CorpusError(
            f"{str(path)!r} is not a readable Parquet file ({exc}); check the file or re-export it."
        ) from exc
    columns = parquet.schema_arrow.names
    if "text" not in columns:
        raise CorpusError(
            f"Parquet file {str(path)!r} has no 'text' column (columns: {', '.join(columns)}); "
            "rename the column to 'text'."
        )
    for batch in parquet.iter_batches(columns=["text"], batch_size=1024):
        yield from (v for v in batch.column(0).to_pylist() if isinstance(v, str))


def _as_text(value: Any) -> str | None:
    """Return `value` as document text: a string as is, chat messages as `role: content` lines; else None."""
    if isinstance(value, str):
        return value
    if (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        )
    ):
        return "\n".join(f"{m['role']}: {m['content']}" for m in value)
    return None
