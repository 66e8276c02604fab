"""Property tests: the alignment and the prompt diff on arbitrary unicode (combining marks, RTL and bidi controls,
zero-width characters, CJK, emoji sequences, template text), with the real demo tokenizers.

The prompt diff runs on `tiny_pair` (random 2-layer models that use the real SmolLM2 and Gemma-3 tokenizers, so
tokenizing, pairing, encoding and display take the same code paths) with a small random crosscoder.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossdiff_core.alignment import align_text
from crossdiff_core.analysis import diff
from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig
from crossdiff_core.errors import CrossDiffError

COMBINING = st.characters(min_codepoint=0x0300, max_codepoint=0x036F)
HEBREW = st.characters(min_codepoint=0x05D0, max_codepoint=0x05EA)
ARABIC = st.characters(min_codepoint=0x0621, max_codepoint=0x0652)  # letters and harakat
INVISIBLE = st.sampled_from(
    ["\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u2060", "\ufeff", "\u00ad",
     "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]
)  # fmt: skip
CJK = st.one_of(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
                st.characters(min_codepoint=0x3040, max_codepoint=0x30FF),
                st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3))  # fmt: skip
EMOJI = st.one_of(st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),
                  st.characters(min_codepoint=0x1F1E6, max_codepoint=0x1F1FF),  # regional indicators
                  st.characters(min_codepoint=0x1F3FB, max_codepoint=0x1F3FF),  # skin tones
                  st.sampled_from(["\ufe0f", "\u20e3"]))  # fmt: skip
PLAIN = st.sampled_from(list("abcXYZ019 .,;!?-_\n\t"))
ALPHABET = st.one_of(COMBINING, HEBREW, ARABIC, INVISIBLE, CJK, EMOJI, PLAIN)

TRICKY = [
    "e\u0301", "Z\u0338\u0322\u031b\u0353a\u0337l\u0336g\u0335o", "\u0301\u0301\u0301",
    "שלום עולם", "مَرْحَبًا", "abc שלום 123 مرحبا def", "\u202eevil.exe", "\u2067שלום\u2069 ok",
    "\u200b\u200b", "a\u200db", "\ufeffBOM", "soft\u00adhyphen",
    "你好世界", "漢字かなカナ한국어", "。，！",
    "😀", "👨\u200d👩\u200d👧\u200d👦", "🏳️\u200d🌈", "🇫🇷🇯🇵", "👍🏽", "1\ufe0f\u20e3", "🧑🏿\u200d🚀",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\U00040000", "\x04", "\x00",
    "<|im_start|>", "<|im_end|>", "<bos>", "<eos>", "<start_of_turn>", "Ġ", "▁",
    "\r\n", "  ", "\t", " ", "\n\n", "hello", " world", "x = 1\n",
]  # fmt: skip
TEXTS = st.lists(st.one_of(st.text(ALPHABET, max_size=10), st.sampled_from(TRICKY)), max_size=8).map("".join)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Pair(tuple):
    """A pair with a short repr, so hypothesis failure reports stay readable."""

    def __repr__(self) -> str:
        return f"Pair({type(self[0]).__name__}, {type(self[1]).__name__})"


@pytest.fixture(scope="module")
def tokenizers(demo_tokenizers) -> Pair:
    return Pair(demo_tokenizers)


@pytest.fixture(scope="module")
def tiny(tiny_pair) -> tuple[CrossCoder, Pair]:
    """A random crosscoder (8 + 48 + 8 latents) sized for `tiny_pair` (d 32 and 40), and the pair."""
    config = CrossCoderConfig(d_a=32, d_b=40, dict_size=64, k=8, exclusive_a=8, exclusive_b=8)
    return CrossCoder(config, seed=0).eval(), Pair(tiny_pair)


def decodes_to(tokenizer, tok, pos: int) -> str:
    """Return what the tokens up to `pos` decode to (tokens without text, such as BOS, left out)."""
    ids = [i for i, (s, e) in zip(tok.input_ids[: pos + 1], tok.offsets[: pos + 1]) if e > s]
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


@FUZZ
@given(text=TEXTS, max_tokens=st.one_of(st.none(), st.integers(1, 24)))
def test_alignment_invariants_on_tricky_unicode(tokenizers, text, max_tokens):
    tok_a, tok_b, al = align_text(*tokenizers, text, max_tokens=max_tokens)
    assert len(al.pos_a) == len(al.pos_b) == len(al.char_end)
    assert al.pos_a.dtype == al.pos_b.dtype == al.char_end.dtype == np.int64
    # positions strictly increasing and within range; character ends strictly increasing and within the text
    for tok, pos in ((tok_a, al.pos_a), (tok_b, al.pos_b)):
        assert tok.text == text
        assert max_tokens is None or len(tok.input_ids) <= max_tokens
        assert np.all(np.diff(pos) > 0) and np.all((pos >= 0) & (pos < len(tok.input_ids)))
        assert tok.verified_end is not None and 0 <= tok.verified_end <= len(text)
    assert np.all(np.diff(al.char_end) > 0) and np.all((al.char_end > 0) & (al.char_end <= len(text)))
    for tokenizer, tok, positions in ((tokenizers[0], tok_a, al.pos_a), (tokenizers[1], tok_b, al.pos_b)):
        for pos, end in zip(positions.tolist(), al.char_end.tolist()):
            # a paired token is ordinary text, ends exactly where its partner ends, and splits the text cleanly
            assert not tok.special[pos] and tok.offsets[pos][1] == end <= tok.verified_end
            for i, ((s, e), special) in enumerate(zip(tok.offsets, tok.special)):
                if not special:
                    assert (e <= end) if i <= pos else (s >= end), (i, pos, end)
            # ground truth: the model has read exactly text[:end] there
            assert decodes_to(tokenizer, tok, pos) == text[:end]
    assert al.n_tokens_a == tok_a.n_content_tokens and al.n_tokens_b == tok_b.n_content_tokens
    assert 0.0 <= al.coverage_a <= 1.0 and 0.0 <= al.coverage_b <= 1.0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXTS, chat=st.booleans(), max_tokens=st.sampled_from([8, 24, 1024]))
def test_prompt_diff_never_crashes_and_is_consistent(tiny, text, chat, max_tokens):
    crosscoder, pair = tiny
    if not text.strip():
        with pytest.raises(CrossDiffError, match="empty"):
            diff(crosscoder, pair, text, chat=chat, max_tokens=max_tokens)
        return
    result = diff(crosscoder, pair, text, chat=chat, max_tokens=max_tokens)
    assert result.mode == ("chat" if chat else "text")
    assert result.content == text
    assert len(result.char_ends) == result.paired
    assert all(0 < e <= len(result.content) for e in result.char_ends)
    assert result.char_ends == sorted(set(result.char_ends))
    if result.paired == 0:
        assert result.warnings  # an empty comparison always says why
    blocks = crosscoder.block_names()
    for side, view in (("a", result.model_a), ("b", result.model_b)):
        allowed = {"A-exclusive", "shared"} if side == "a" else {"shared", "B-exclusive"}
        positions = view.paired_positions
        assert len(positions) == result.paired and positions == sorted(set(positions))
        assert all(0 <= p < len(view.tokens) for p in positions)
        assert len(view.tokens) <= max_tokens and view.truncated == any(
            "longer than" in w for w in result.warnings if view.model in w
        )
        assert [t.index for t in view.tokens] == list(range(len(view.tokens)))
        assert 0.0 <= view.coverage <= 1.0
        for token in view.tokens:
            assert 0 <= token.start <= token.end <= len(view.text)
            assert token.paired == (token.index in positions)
            if token.pair is None:
                assert token.exclusivity is None and not token.latents
                assert not positions or token.index < positions[0]
            else:
                assert positions[token.pair] <= token.index and 0.0 <= token.exclusivity <= 1.0
                assert all(lat.activation > 0 and blocks[lat.latent] == lat.block in allowed for lat in token.latents)
        for hit in view.exclusive:
            assert view.tokens[hit.peak_token].paired and hit.n_tokens >= 1
            assert hit.activation >= hit.mean_activation > 0
    json.dumps(result.to_dict(), allow_nan=False, ensure_ascii=False)
