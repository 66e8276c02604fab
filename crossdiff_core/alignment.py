"""Cross-tokenizer alignment: pair the positions where two (or more) tokenizers have read the same text.

Two tokenizers cut the same text differently. A token of A and a token of B are paired when both end
at the same character offset `e` and each tokenizer splits the text cleanly at `e`: every earlier
non-special token ends at or before `e`, and every later one starts at or after `e`. Both models
have then read exactly `text[:e]`, so their activations at the paired positions are comparable.

The clean-split rule handles what real tokenizers report:

- byte-level BPE (SmolLM2) splits a multi-byte character into several tokens that share its
  offsets, and a first piece may claim an end beyond the bytes it holds ('ĠðŁĺ' (15, 17) followed by
  'Ģ' (16, 17)). Only the last piece, after which the character is complete, is a boundary.
- SentencePiece (Gemma) offsets include the leading space ('▁你' (12, 14)); that is fine, the rule
  looks at ends and starts only.
- special tokens (BOS/EOS/pad, chat-template tokens such as `<|im_start|>`, any token with empty
  offsets) are never paired and are ignored when testing a split.
- a tokenizer can lose text: SmolLM2 has no token for some bytes (control bytes such as 0x04, the
  lead bytes of U+40000..U+BFFFF) and silently drops them, after which its offsets can be wrong, and
  a normalizer can change characters. Tokenizing therefore checks, by decoding, up to where the
  tokens reproduce the text (`TokenizedText.verified_end`); pairing stops there. A tokenizer whose own
  normalizer rewrites characters (NFKC turns '，' into ',') reproduces the text when its tokens decode to the
  normalized text: the model read those characters in the form it always reads them, and its offsets still
  point into the original text.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossdiff_core.errors import AlignmentError

_SPECIAL_IDS_CACHE: weakref.WeakKeyDictionary[Any, tuple[int, frozenset[int]]] = weakref.WeakKeyDictionary()


@dataclass
class TokenizedText:
    """One text as a tokenizer cut it, with character offsets into `text`."""

    text: str
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    """Character `(start, end)` of each token in `text`."""
    special: list[bool]
    """True for BOS/EOS/pad/special/chat-template tokens and tokens with empty offsets (never paired)."""
    verified_end: int | None = None
    """Character offset up to which decoding the tokens reproduces `text`; no pairing beyond it (None: unchecked)."""

    @property
    def n_content_tokens(self) -> int:
        """Return the number of non-special tokens (the denominator of coverage)."""
        return len(self.special) - sum(self.special)


@dataclass
class Alignment:
    """Paired positions of two tokenizations of the same text."""

    pos_a: np.ndarray
    """int64 `[P]` indices into A's `input_ids`, strictly increasing."""
    pos_b: np.ndarray
    """int64 `[P]` indices into B's `input_ids`, strictly increasing."""
    char_end: np.ndarray
    """int64 `[P]` character offset where both paired tokens end."""
    n_tokens_a: int
    """Non-special tokens of A."""
    n_tokens_b: int
    """Non-special tokens of B."""

    @property
    def coverage_a(self) -> float:
        """Return the fraction of A's non-special tokens that are paired (0 when A has none)."""
        return len(self.pos_a) / self.n_tokens_a if self.n_tokens_a else 0.0

    @property
    def coverage_b(self) -> float:
        """Return the fraction of B's non-special tokens that are paired (0 when B has none)."""
        return len(self.pos_b) / self.n_tokens_b if self.n_tokens_b else 0.0


@dataclass
class CoverageStats:
    """Pairing coverage accumulated over many texts."""

    n_texts: int = 0
    n_paired: int = 0
    n_tokens_a: int = 0
    n_tokens_b: int = 0

    def add(self, alignment: Alignment) -> None:
        """Add one text's alignment to the totals; returns nothing."""
        self.n_texts += 1
        self.n_paired += len(alignment.pos_a)
        self.n_tokens_a += alignment.n_tokens_a
        self.n_tokens_b += alignment.n_tokens_b

    @property
    def coverage_a(self) -> float:
        """Return the fraction of all A tokens seen that were paired (0 when none were seen)."""
        return self.n_paired / self.n_tokens_a if self.n_tokens_a else 0.0

    @property
    def coverage_b(self) -> float:
        """Return the fraction of all B tokens seen that were paired (0 when none were seen)."""
        return self.n_paired / self.n_tokens_b if self.n_tokens_b else 0.0

    def as_dict(self) -> dict[str, float | int]:
        """Return the counts and coverages as a flat JSON-ready dict."""
        return {
            "n_texts": self.n_texts,
            "n_paired": self.n_paired,
            "n_tokens_a": self.n_tokens_a,
            "n_tokens_b": self.n_tokens_b,
            "coverage_a": self.coverage_a,
            "coverage_b": self.coverage_b,
        }


def require_fast_tokenizer(tokenizer: Any) -> None:
    """Raise `AlignmentError` unless `tokenizer` is a fast tokenizer (one that reports offsets); returns None."""
    if getattr(tokenizer, "is_fast", False) is not True:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise AlignmentError(
            f"tokenizer {name!r} is a slow tokenizer and cannot report character offsets, which "
            "cross-tokenizer pairing needs. Load the fast tokenizer instead: "
            "AutoTokenizer.from_pretrained(..., use_fast=True), or supply the model's tokenizer.json."
        )


def special_token_ids(tokenizer: Any) -> frozenset[int]:
    """Return the ids the tokenizer treats as special (BOS/EOS/pad, chat-template and other special added tokens)."""
    vocab_size = len(tokenizer)  # changes when tokens are added, which invalidates the cache
    cached = _SPECIAL_IDS_CACHE.get(tokenizer)
    if cached is None or cached[0] != vocab_size:
        added = tokenizer.added_tokens_decoder
        ids = frozenset(tokenizer.all_special_ids) | {i for i, tok in added.items() if tok.special}
        cached = _SPECIAL_IDS_CACHE[tokenizer] = (vocab_size, ids)
    return cached[1]


def tokenize_with_offsets(
    tokenizer: Any, text: str, max_tokens: int | None = None, add_special_tokens: bool = True
) -> TokenizedText:
    """Return `text` tokenized by a fast tokenizer, with offsets, special flags and `verified_end`.

    `max_tokens` keeps the first `max_tokens` tokens; if that cut falls inside a character split into
    several byte tokens, the partial pieces at the end are dropped too, so what is kept is always a
    cleanly cut prefix (at most `max_tokens` tokens). Raises `AlignmentError` for a slow tokenizer.
    """
    return _encode_batch(tokenizer, [text], max_tokens, add_special_tokens)[0]


def align(tok_a: TokenizedText, tok_b: TokenizedText) -> Alignment:
    """Return the paired positions of two tokenizations of the same text (see the module docstring)."""
    if tok_a.text != tok_b.text:
        raise AlignmentError(
            "the two tokenizations are of different texts; tokenize the same text with both "
            "tokenizers (align_text does this for you)."
        )
    pos_a, end_a = clean_boundaries(tok_a)
    pos_b, end_b = clean_boundaries(tok_b)
    # Both end arrays are strictly increasing: one vectorized merge finds the shared offsets.
    j = np.minimum(np.searchsorted(end_b, end_a), max(len(end_b) - 1, 0))
    shared = end_b[j] == end_a if len(end_b) else np.zeros(len(end_a), dtype=bool)
    return Alignment(
        pos_a=pos_a[shared],
        pos_b=pos_b[j[shared]],
        char_end=end_a[shared],
        n_tokens_a=tok_a.n_content_tokens,
        n_tokens_b=tok_b.n_content_tokens,
    )


@dataclass
class MultiAlignment:
    """Paired positions of N ≥ 2 tokenizations of the same text: the character offsets where every one of them
    splits the text cleanly (the intersection of their clean boundaries), so all N models have read the same text
    there. For two tokenizations it is exactly `align`'s pairing."""

    positions: list[np.ndarray]
    """Per tokenization, int64 `[P]` indices into its `input_ids`, strictly increasing."""
    char_end: np.ndarray
    """int64 `[P]` character offset where the paired tokens of all N end."""
    n_tokens: list[int]
    """Per tokenization, its non-special tokens."""

    @property
    def coverage(self) -> list[float]:
        """Return, per tokenization, the fraction of its non-special tokens that are paired (0 when it has none)."""
        return [len(self.char_end) / n if n else 0.0 for n in self.n_tokens]

    def pair(self, i: int, j: int) -> Alignment:
        """Return the positions of tokenizations `i` and `j` as a two-model `Alignment` (at the N-way offsets)."""
        return Alignment(self.positions[i], self.positions[j], self.char_end, self.n_tokens[i], self.n_tokens[j])


def align_many(toks: Sequence[TokenizedText]) -> MultiAlignment:
    """Return the positions where all of `toks` (tokenizations of one text, at least two) have read the same text."""
    if len(toks) < 2:
        raise AlignmentError(f"pairing needs at least two tokenizations of the text, got {len(toks)}")
    if any(tok.text != toks[0].text for tok in toks[1:]):
        raise AlignmentError(
            "the tokenizations are of different texts; tokenize the same text with every tokenizer "
            "(align_many_texts does this for you)."
        )
    boundaries = [clean_boundaries(tok) for tok in toks]
    shared = boundaries[0][1]
    for _, ends in boundaries[1:]:
        shared = np.intersect1d(shared, ends, assume_unique=True)
    return MultiAlignment(
        positions=[pos[np.searchsorted(ends, shared)] for pos, ends in boundaries],
        char_end=shared.astype(np.int64),
        n_tokens=[tok.n_content_tokens for tok in toks],
    )


def align_many_texts(
    tokenizers: Sequence[Any], texts: Sequence[str], max_tokens: Sequence[int | None] | int | None = None
) -> list[tuple[list[TokenizedText], MultiAlignment]]:
    """Return, per text, its tokenization by each tokenizer and their N-way alignment (one batched call per
    tokenizer). `max_tokens` limits every tokenizer alike, or each its own when given one per tokenizer."""
    limits = list(max_tokens) if isinstance(max_tokens, Sequence) else [max_tokens] * len(tokenizers)
    if len(limits) != len(tokenizers):
        raise AlignmentError(f"give one max_tokens per tokenizer ({len(tokenizers)}), got {len(limits)}")
    per_tokenizer = [_encode_batch(t, texts, limit, True) for t, limit in zip(tokenizers, limits)]
    return [(list(toks), align_many(toks)) for toks in zip(*per_tokenizer)]


def align_text(
    tokenizer_a: Any, tokenizer_b: Any, text: str, max_tokens: int | None = None, max_tokens_b: int | None = None
) -> tuple[TokenizedText, TokenizedText, Alignment]:
    """Return `(tokens_a, tokens_b, alignment)` for one text (truncation as in `align_batch`)."""
    return align_batch(tokenizer_a, tokenizer_b, [text], max_tokens, max_tokens_b)[0]


def align_batch(
    tokenizer_a: Any,
    tokenizer_b: Any,
    texts: Sequence[str],
    max_tokens: int | None = None,
    max_tokens_b: int | None = None,
) -> list[tuple[TokenizedText, TokenizedText, Alignment]]:
    """Return `(tokens_a, tokens_b, alignment)` per text, tokenizing all texts in one batched call per tokenizer.

    A keeps at most `max_tokens` tokens and B at most `max_tokens_b` (default: `max_tokens`). Give B
    more room when windows were cut for A and B splits the text finer (SmolLM2 vs Gemma is the other
    way round on Chinese): pairs only exist where both have read the text.
    """
    toks_a = _encode_batch(tokenizer_a, texts, max_tokens, add_special_tokens=True)
    b_limit = max_tokens if max_tokens_b is None else max_tokens_b
    toks_b = _encode_batch(tokenizer_b, texts, b_limit, add_special_tokens=True)
    return [(a, b, align(a, b)) for a, b in zip(toks_a, toks_b)]


def clean_boundaries(tok: TokenizedText) -> tuple[np.ndarray, np.ndarray]:
    """Return `(positions, char_ends)`: int64 arrays of the non-special tokens after which the text is split cleanly.

    Token `i` qualifies when every non-special token up to `i` ends at or before its end `e` and every
    later one starts at or after `e`. `char_ends` is strictly increasing.
    """
    offsets_T2 = np.asarray(tok.offsets, dtype=np.int64).reshape(-1, 2)
    content_C = np.flatnonzero(~np.asarray(tok.special, dtype=bool))
    if len(content_C) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts_C = offsets_T2[content_C, 0]
    ends_C = offsets_T2[content_C, 1]
    earlier_max_end_C = np.maximum.accumulate(ends_C)
    later_min_start_C = np.empty_like(starts_C)
    later_min_start_C[-1] = np.iinfo(np.int64).max
    later_min_start_C[:-1] = np.minimum.accumulate(starts_C[::-1])[::-1][1:]
    clean_C = (earlier_max_end_C == ends_C) & (later_min_start_C >= ends_C)
    if tok.verified_end is not None:
        clean_C &= ends_C <= tok.verified_end
    return content_C[clean_C].astype(np.int64), ends_C[clean_C]


def _encode_batch(
    tokenizer: Any, texts: Sequence[str], max_tokens: int | None, add_special_tokens: bool
) -> list[TokenizedText]:
    """Return each text tokenized with offsets, special flags and `verified_end`, from one batched tokenizer call."""
    require_fast_tokenizer(tokenizer)
    if max_tokens is not None and max_tokens < 1:
        raise AlignmentError(f"max_tokens must be at least 1, got {max_tokens}; pass None for no limit.")
    if not texts:
        return []
    enc = tokenizer(
        list(texts),
        add_special_tokens=add_special_tokens,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_attention_mask=False,
        verbose=False,
    )
    special_ids = special_token_ids(tokenizer)
    toks = []
    for text, ids, offsets, mask in zip(texts, enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]):
        special = [m == 1 or i in special_ids or s == e for i, m, (s, e) in zip(ids, mask, offsets)]
        toks.append(_truncate(TokenizedText(text, ids, offsets, special), max_tokens))
    # Fast path: one batched decode confirms most texts in full.
    full_ends = [max((e for _, e in tok.offsets), default=0) for tok in toks]
    decoded = _decode_batch(tokenizer, [_text_ids(tok, len(tok.input_ids)) for tok in toks])
    for tok, end, text in zip(toks, full_ends, decoded):
        tok.verified_end = (
            end if _reproduces(tokenizer, text, tok.text[:end]) else _last_verified_boundary(tokenizer, tok)
        )
    return toks


def _truncate(tok: TokenizedText, max_tokens: int | None) -> TokenizedText:
    """Return `tok` cut to its longest prefix of at most `max_tokens` tokens that splits no character.

    The cut is clean when every kept non-special token ends at or before the start of every dropped one.
    """
    n = len(tok.input_ids)
    if max_tokens is None or n <= max_tokens:
        return tok
    later_min_start = [0] * (n + 1)
    later_min_start[n] = len(tok.text)
    for i in range(n - 1, -1, -1):
        start = tok.offsets[i][0] if not tok.special[i] else later_min_start[i + 1]
        later_min_start[i] = min(start, later_min_start[i + 1])
    earlier_max_end = [0] * (max_tokens + 1)
    for i in range(max_tokens):
        end = tok.offsets[i][1] if not tok.special[i] else 0
        earlier_max_end[i + 1] = max(earlier_max_end[i], end)
    keep = next(k for k in range(max_tokens, -1, -1) if earlier_max_end[k] <= later_min_start[k])
    return TokenizedText(tok.text, tok.input_ids[:keep], tok.offsets[:keep], tok.special[:keep])


def _text_ids(tok: TokenizedText, stop: int) -> list[int]:
    """Return the ids of tokens before `stop` that cover text (special text like `<|im_start|>` included, BOS not)."""
    return [i for i, (s, e) in zip(tok.input_ids[:stop], tok.offsets[:stop]) if e > s]


def _reproduces(tokenizer: Any, decoded: str, text: str) -> bool:
    """Return whether tokens that decode to `decoded` reproduce `text`: equal, or equal to it once normalized by the
    tokenizer's own normalizer (if it has one)."""
    if decoded == text:
        return True
    normalizer = tokenizer.backend_tokenizer.normalizer
    return normalizer is not None and decoded == normalizer.normalize_str(text)


def _decode_batch(tokenizer: Any, ids: list[list[int]]) -> list[str]:
    """Return the exact text each id list decodes to (special tokens kept, no space clean-up)."""
    return tokenizer.backend_tokenizer.decode_batch(ids, skip_special_tokens=False)


def _last_verified_boundary(tokenizer: Any, tok: TokenizedText) -> int:
    """Return the end of the last clean boundary up to which decoding the tokens reproduces the text (0 if none).

    Called when the full decode differs from the text, e.g. when byte-level BPE silently drops a byte it
    has no token for (SmolLM2 has none for control bytes such as 0x04 or for U+40000..U+BFFFF) or when a
    normalizer changes the text. Once a prefix fails to reproduce, longer prefixes fail too, so a binary
    search over the boundaries finds the last good one.
    """
    pos, ends = clean_boundaries(tok)
    good, bad = -1, len(pos)
    while bad - good > 1:
        mid = (good + bad) // 2
        text = _decode_batch(tokenizer, [_text_ids(tok, int(pos[mid]) + 1)])[0]
        good, bad = (mid, bad) if _reproduces(tokenizer, text, tok.text[: int(ends[mid])]) else (good, mid)
    return int(ends[good]) if good >= 0 else 0
