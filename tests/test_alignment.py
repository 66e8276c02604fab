"""Tests for crossdiff_core.alignment with the real SmolLM2 (byte-level BPE) and Gemma-3 (SentencePiece) tokenizers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import PythonBackend

from crossdiff_core.alignment import (
    Alignment,
    CoverageStats,
    TokenizedText,
    align,
    align_batch,
    align_many,
    align_many_texts,
    align_text,
    clean_boundaries,
    tokenize_with_offsets,
)
from crossdiff_core.errors import AlignmentError

# Pieces that stress tokenizers: combining marks, RTL, zero-width and bidi controls, CJK, emoji (with
# ZWJ sequences and flags), whitespace runs, special-token and template text, the tokenizers' own space marks.
FRAGMENTS = [
    "e\u0301",
    "\u0301\u0301",
    "שלום",
    "مرحبا",
    "\u200b",
    "\u200d",
    "\u202e",
    "\ufeff",
    "你好世界",
    "日本語",
    "😀",
    "👨\u200d👩\u200d👧",
    "🏳️\u200d🌈",
    "🇫🇷",
    "  ",
    "\n\n",
    "\t",
    " ",
    "\r\n",
    "<|im_start|>",
    "<|im_end|>",
    "<start_of_turn>",
    "<bos>",
    "<eos>",
    "Ġ",
    "▁",
    "hello",
    " world",
    "x = 1\n",
    "déjà",
    "\x00",
]
TEXTS = st.lists(
    st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=12), st.sampled_from(FRAGMENTS)),
    max_size=12,
).map("".join)
HYPOTHESIS = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_clean_split(tok: TokenizedText, pos: int, char_end: int) -> None:
    """Assert that tokens up to `pos` lie in text[:char_end] and later tokens in text[char_end:]."""
    for i, ((start, end), special) in enumerate(zip(tok.offsets, tok.special)):
        if special:
            continue
        if i <= pos:
            assert end <= char_end, (i, tok.offsets[i], char_end)
        else:
            assert start >= char_end, (i, tok.offsets[i], char_end)


def assert_alignment_invariants(tok_a: TokenizedText, tok_b: TokenizedText, al: Alignment) -> None:
    """Assert everything `align` promises about its result."""
    assert al.pos_a.dtype == np.int64 and al.pos_b.dtype == np.int64 and al.char_end.dtype == np.int64
    assert len(al.pos_a) == len(al.pos_b) == len(al.char_end)
    assert np.all(np.diff(al.pos_a) > 0) and np.all(np.diff(al.pos_b) > 0)
    for pa, pb, e in zip(al.pos_a.tolist(), al.pos_b.tolist(), al.char_end.tolist()):
        assert not tok_a.special[pa] and not tok_b.special[pb]
        assert tok_a.offsets[pa][1] == e == tok_b.offsets[pb][1]
        assert_clean_split(tok_a, pa, e)
        assert_clean_split(tok_b, pb, e)
    assert 0.0 <= al.coverage_a <= 1.0 and 0.0 <= al.coverage_b <= 1.0
    assert al.n_tokens_a == sum(not s for s in tok_a.special)
    assert al.n_tokens_b == sum(not s for s in tok_b.special)


def decodes_to(tokenizer, tok: TokenizedText, pos: int) -> str:
    """Return the text that the tokens up to `pos` decode to (BOS and other empty-offset tokens left out)."""
    ids = [i for i, (s, e) in zip(tok.input_ids[: pos + 1], tok.offsets[: pos + 1]) if e > s]
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def assert_models_read_same_text(tokenizers, tok_a: TokenizedText, tok_b: TokenizedText, al: Alignment) -> None:
    """Assert the ground truth: up to each paired position, both token sequences decode to text[:char_end]."""
    for tokenizer, tok, positions in ((tokenizers[0], tok_a, al.pos_a), (tokenizers[1], tok_b, al.pos_b)):
        for pos, end in zip(positions.tolist(), al.char_end.tolist()):
            assert decodes_to(tokenizer, tok, pos) == tok.text[:end]


def brute_force_boundaries(tokenizer, tok: TokenizedText) -> set[int]:
    """Return the char offsets of pairable boundaries, straight from the definition (quadratic time).

    A boundary is a clean split by offsets; pairing stops at the first one whose prefix does not decode
    to the text.
    """
    content = [i for i, s in enumerate(tok.special) if not s]
    out = set()
    for i in content:
        end = tok.offsets[i][1]
        if all(tok.offsets[j][1] <= end for j in content if j <= i) and all(
            tok.offsets[j][0] >= end for j in content if j > i
        ):
            if decodes_to(tokenizer, tok, i) != tok.text[:end]:
                break
            out.add(end)
    return out


def checked_align(
    tokenizers, text: str, max_tokens: int | None = None
) -> tuple[TokenizedText, TokenizedText, Alignment]:
    """Return `align_text(...)` after asserting its invariants and the same-text ground truth."""
    tok_a, tok_b, al = align_text(*tokenizers, text, max_tokens=max_tokens)
    assert_alignment_invariants(tok_a, tok_b, al)
    assert_models_read_same_text(tokenizers, tok_a, tok_b, al)
    return tok_a, tok_b, al


class TokenizerPair(tuple):
    """The demo tokenizers with a short repr, so hypothesis failure reports stay readable."""

    def __repr__(self) -> str:
        return "TokenizerPair(smollm2, gemma3)"


@pytest.fixture(scope="module")
def pair(demo_tokenizers) -> TokenizerPair:
    return TokenizerPair(demo_tokenizers)


@HYPOTHESIS
@given(text=TEXTS)
def test_alignment_invariants_on_arbitrary_unicode(pair, text):
    tok_a, tok_b, al = checked_align(pair, text)
    # Maximal: every offset where both tokenizers split cleanly after reading the text faithfully is paired.
    assert set(al.char_end.tolist()) == brute_force_boundaries(pair[0], tok_a) & brute_force_boundaries(pair[1], tok_b)


@HYPOTHESIS
@given(text=TEXTS, max_tokens=st.integers(1, 40))
def test_truncation_keeps_a_cleanly_cut_prefix(pair, text, max_tokens):
    for tokenizer in pair:
        full = tokenize_with_offsets(tokenizer, text)
        cut = tokenize_with_offsets(tokenizer, text, max_tokens=max_tokens)
        assert len(cut.input_ids) <= max_tokens
        assert cut.input_ids == full.input_ids[: len(cut.input_ids)]
        dropped = [
            s for (s, _), sp in zip(full.offsets[len(cut.input_ids) :], full.special[len(cut.input_ids) :]) if not sp
        ]
        kept_ends = [e for (_, e), sp in zip(cut.offsets, cut.special) if not sp]
        if dropped and kept_ends:
            assert max(kept_ends) <= min(dropped)
    checked_align(pair, text, max_tokens)


def test_hello_world_pairs_whole_characters(demo_tokenizers):
    text = "Hello world, 你好 😀"
    tok_a, tok_b, al = checked_align(demo_tokenizers, text)
    # SmolLM2: 'Hello' 'Ġworld' ',' 'Ġ' 'ä½' 'ł' 'å¥' '½' 'ĠðŁĺ' 'Ģ'
    # Gemma:   '<bos>' 'Hello' '▁world' ',' '▁你' '好' '▁😀'
    assert tok_a.offsets[8] == (15, 17) and tok_a.offsets[9] == (16, 17)
    assert al.pos_a.tolist() == [0, 1, 2, 5, 7, 9]
    assert al.pos_b.tolist() == [1, 2, 3, 4, 5, 6]
    assert al.char_end.tolist() == [5, 11, 12, 14, 15, 17]
    assert tok_b.special[0] and tok_b.input_ids[0] == demo_tokenizers[1].bos_token_id


@pytest.mark.parametrize(
    "text, last_pair",
    [
        ("ab\x04cd efg hij", "ab"),  # SmolLM2 has no token for byte 0x04 and drops it
        ("0À\U00040000¢: and more", "0À"),  # nor for lead byte 0xF1; its later offsets are then wrong
        ("a▁b c", "a"),  # Gemma reads a literal '▁' as a space
    ],
)
def test_pairing_stops_where_a_tokenizer_loses_text(pair, text, last_pair):
    tok_a, tok_b, al = checked_align(pair, text)
    assert text[: al.char_end[-1]] == last_pair
    assert min(tok_a.verified_end, tok_b.verified_end) == len(last_pair)


def test_english_coverage_is_high(demo_tokenizers):
    text = (
        "The committee met on Tuesday to discuss the new railway budget, which had grown by 12% since last "
        "year. Several members asked why the costs of the northern line were so much higher than planned."
    )
    _, _, al = checked_align(demo_tokenizers, text)
    assert al.coverage_a > 0.9 and al.coverage_b > 0.9


def test_chinese_pairs_at_character_ends(demo_tokenizers):
    text = "北京是中国的首都，有三千多年的历史。今天天气很好，我们去公园散步吧。"
    _tok_a, _tok_b, al = checked_align(demo_tokenizers, text)
    # SmolLM2 cuts most CJK characters into byte pieces; only the last piece of each can pair.
    assert al.coverage_b > 0.9 and 0.2 < al.coverage_a < 0.8
    assert all(0 < e <= len(text) for e in al.char_end.tolist())


def test_code_alignment(demo_tokenizers):
    text = 'def add(a, b):\n    """Return the sum."""\n    return a + b\n\n\nclass Foo:\n    pass\n'
    _tok_a, _tok_b, al = checked_align(demo_tokenizers, text)
    assert al.coverage_a > 0.7 and al.coverage_b > 0.7


def test_emoji_partial_byte_token_is_never_paired(demo_tokenizers):
    text = "Party time 🎉🎉 with friends 👨\u200d👩\u200d👧!"
    tok_a, _tok_b, al = checked_align(demo_tokenizers, text)
    for pos in al.pos_a.tolist():
        nxt = next((o for o, s in zip(tok_a.offsets[pos + 1 :], tok_a.special[pos + 1 :]) if not s), None)
        assert nxt is None or nxt[0] >= tok_a.offsets[pos][1]
    assert al.char_end[-1] == len(text)


def test_chat_template_tokens_are_never_paired(demo_tokenizers):
    smol, gemma = demo_tokenizers
    text = smol.apply_chat_template(
        [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}], tokenize=False
    )
    text += "<start_of_turn>user\nhi<end_of_turn>\n"
    tok_a, tok_b, al = checked_align(demo_tokenizers, text)
    im_ids = {smol.convert_tokens_to_ids("<|im_start|>"), smol.convert_tokens_to_ids("<|im_end|>")}
    turn_ids = {gemma.convert_tokens_to_ids("<start_of_turn>"), gemma.convert_tokens_to_ids("<end_of_turn>")}
    assert im_ids <= {i for i, s in zip(tok_a.input_ids, tok_a.special) if s}
    assert turn_ids <= {i for i, s in zip(tok_b.input_ids, tok_b.special) if s}
    assert not im_ids & {tok_a.input_ids[p] for p in al.pos_a.tolist()}
    assert not turn_ids & {tok_b.input_ids[p] for p in al.pos_b.tolist()}
    assert al.coverage_a > 0.3 and al.coverage_b > 0.3


def test_empty_and_whitespace_text(demo_tokenizers):
    _, _, empty = align_text(*demo_tokenizers, "")
    assert len(empty.pos_a) == 0 and empty.coverage_a == 0.0 and empty.coverage_b == 0.0
    _, _, spaces = align_text(*demo_tokenizers, "   ")
    assert spaces.char_end.tolist() == [3]


def test_align_batch_matches_align_text(demo_tokenizers):
    texts = ["Hello world, 你好 😀", "", "def f(x):\n    return x\n", "שלום עולם ok"]
    batched = align_batch(*demo_tokenizers, texts, max_tokens=6)
    for text, (tok_a, tok_b, al) in zip(texts, batched):
        one_a, one_b, one = align_text(*demo_tokenizers, text, max_tokens=6)
        assert (tok_a, tok_b) == (one_a, one_b)
        assert np.array_equal(al.pos_a, one.pos_a) and np.array_equal(al.pos_b, one.pos_b)


def test_max_tokens_b_gives_b_its_own_limit(demo_tokenizers):
    text = "今天天气很好，我们去公园散步吧。" * 4
    tok_a, tok_b, al = align_text(*demo_tokenizers, text, max_tokens=30, max_tokens_b=5)
    assert len(tok_a.input_ids) <= 30 and len(tok_b.input_ids) <= 5
    assert al.char_end[-1] <= tok_b.offsets[-1][1]
    _, tok_b_same, _ = align_text(*demo_tokenizers, text, max_tokens=30)
    assert len(tok_b_same.input_ids) == 30


def test_add_special_tokens_false_drops_bos(demo_tokenizers):
    gemma = demo_tokenizers[1]
    with_bos = tokenize_with_offsets(gemma, "hi there")
    without = tokenize_with_offsets(gemma, "hi there", add_special_tokens=False)
    assert with_bos.input_ids[1:] == without.input_ids and not any(without.special)


def test_align_rejects_different_texts(demo_tokenizers):
    smol, gemma = demo_tokenizers
    with pytest.raises(AlignmentError, match="same text"):
        align(tokenize_with_offsets(smol, "one"), tokenize_with_offsets(gemma, "two"))


def test_bad_max_tokens(demo_tokenizers):
    with pytest.raises(AlignmentError, match="max_tokens"):
        align_text(*demo_tokenizers, "hi", max_tokens=0)


class CharTokenizer(PythonBackend):
    """A real slow (pure-Python) tokenizer: one token per printable ASCII character."""

    def __init__(self, **kwargs):
        self._vocab = {chr(i): i for i in range(32, 127)}
        super().__init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    def _tokenize(self, text, **kwargs):
        return list(text)

    def _convert_token_to_id(self, token):
        return self._vocab.get(token, 32)

    def _convert_id_to_token(self, index):
        return chr(index)


def test_slow_tokenizer_is_rejected(demo_tokenizers):
    slow = CharTokenizer()
    assert slow.is_fast is False
    with pytest.raises(AlignmentError, match="use_fast=True"):
        align_text(slow, demo_tokenizers[1], "hello")
    with pytest.raises(AlignmentError, match="fast tokenizer"):
        tokenize_with_offsets(slow, "hello")


def test_coverage_stats_accumulates(demo_tokenizers):
    stats = CoverageStats()
    assert stats.coverage_a == 0.0
    results = align_batch(*demo_tokenizers, ["Hello world, 你好 😀", "plain English words here"])
    for _, _, al in results:
        stats.add(al)
    assert stats.n_texts == 2
    assert stats.n_paired == sum(len(al.pos_a) for _, _, al in results)
    assert stats.n_tokens_a == sum(al.n_tokens_a for _, _, al in results)
    assert stats.coverage_b == pytest.approx(stats.n_paired / stats.n_tokens_b)
    assert stats.as_dict()["coverage_a"] == stats.coverage_a


N_WAY_TEXTS = {
    "english": "The tide rises over the harbour while the fishermen mend their nets and talk about the weather.",
    "code": "def pair(a, b):\n    return [x + y for x, y in zip(a, b)]  # sums\n",
    "chinese": "今天天气很好，我们去公园散步吧。长城是中国的著名景点。",
}


@pytest.fixture(scope="module")
def word_tokenizer():
    """A third real tokenizer of another kind: WordPiece, trained here on a few sentences (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=400, special_tokens=["[UNK]", "[CLS]"])
    tokenizer.train_from_iterator(list(N_WAY_TEXTS.values()) * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", cls_token="[CLS]")


@pytest.mark.parametrize("kind", sorted(N_WAY_TEXTS))
def test_two_way_align_many_is_align(demo_tokenizers, kind):
    _, many = align_many_texts(demo_tokenizers, [N_WAY_TEXTS[kind]])[0]
    pair = align_batch(*demo_tokenizers, [N_WAY_TEXTS[kind]])[0][2]
    assert len(pair.pos_a) > 0
    np.testing.assert_array_equal(many.positions[0], pair.pos_a)
    np.testing.assert_array_equal(many.positions[1], pair.pos_b)
    np.testing.assert_array_equal(many.char_end, pair.char_end)
    assert many.coverage == pytest.approx([pair.coverage_a, pair.coverage_b])


@pytest.mark.parametrize("kind", sorted(N_WAY_TEXTS))
def test_three_tokenizers_pair_where_all_split_cleanly(demo_tokenizers, word_tokenizer, kind):
    tokenizers = [*demo_tokenizers, word_tokenizer]
    toks, many = align_many_texts(tokenizers, [N_WAY_TEXTS[kind]])[0]
    assert len(many.char_end) > 0 and np.all(np.diff(many.char_end) > 0)
    for tok, positions in zip(toks, many.positions):
        clean_positions, _ = clean_boundaries(tok)
        assert set(positions.tolist()) <= set(clean_positions.tolist())  # each model splits cleanly there
        np.testing.assert_array_equal([tok.offsets[p][1] for p in positions], many.char_end)
    pairwise = {(i, j): align(toks[i], toks[j]) for i in range(3) for j in range(i + 1, 3)}
    expected = set.intersection(*(set(p.char_end.tolist()) for p in pairwise.values()))
    assert set(many.char_end.tolist()) == expected  # the intersection of the pairwise pairings
    for (i, j), p in pairwise.items():  # a third tokenizer can only remove places
        assert many.coverage[i] <= p.coverage_a and many.coverage[j] <= p.coverage_b
        two = many.pair(i, j)
        assert set(two.char_end.tolist()) <= set(p.char_end.tolist()) and two.n_tokens_a == p.n_tokens_a


def test_align_many_rejects_one_tokenization_and_different_texts(demo_tokenizers):
    tok = tokenize_with_offsets(demo_tokenizers[0], "one text")
    with pytest.raises(AlignmentError, match="at least two"):
        align_many([tok])
    other = tokenize_with_offsets(demo_tokenizers[1], "another text")
    with pytest.raises(AlignmentError, match="different texts"):
        align_many([tok, other])
    with pytest.raises(AlignmentError, match="one max_tokens per tokenizer"):
        align_many_texts(demo_tokenizers, ["one text"], max_tokens=[8])


def _nfkc_tokenizer():
    """A real byte-level BPE fast tokenizer with an NFKC normalizer, as Claude's legacy tokenizer has, trained here."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(["你好, 世界. hello world", "the quick brown fox"] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def test_a_tokenizer_whose_normalizer_rewrites_characters_still_pairs_past_them(demo_tokenizers):
    """NFKC reads the full-width '，' and '。' as ',' and '.': its tokens decode to the normalized text, which is what the
    model read, so pairing goes on past them (before, it stopped at the first one: 2-4% coverage on Chinese)."""
    tokenizer = _nfkc_tokenizer()
    text = "你好，世界。hello world"
    tok = tokenize_with_offsets(tokenizer, text)
    assert tok.verified_end == len(text)
    alignment = align_many([tok, tokenize_with_offsets(demo_tokenizers[1], text)])
    assert alignment.char_end[-1] == len(text) and alignment.char_end[0] <= text.index("，") + 1
