"""Tests for crossdiff_core.corpus.sources and crossdiff_core.corpus.builtin (real files, real tokenizers)."""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossdiff_core.corpus import builtin as builtin_corpus
from crossdiff_core.corpus.sources import CorpusStats, describe, iter_documents, iter_windows, split_windows
from crossdiff_core.errors import CorpusError

CJK = re.compile(r"[\u4e00-\u9fff]")
REPO = Path(__file__).resolve().parents[1]


def test_txt_documents_split_on_blank_lines(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("\ufefffirst line\nstill first\n\n\n  \nsecond\r\n\r\nthird 你好\n", encoding="utf-8")
    assert list(iter_documents(str(path))) == ["first line\nstill first", "second", "third 你好"]
    assert list(iter_documents(str(path), limit=2)) == ["first line\nstill first", "second"]


def test_jsonl_text_messages_and_broken_lines(tmp_path, caplog):
    lines = [
        json.dumps({"text": "plain text"}),
        "{not json",
        json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}),
        json.dumps(["a", "list"]),
        "",
        json.dumps({"text": 42}),
        json.dumps({"title": "no text field"}),
        json.dumps({"messages": [{"role": "user"}]}),
        json.dumps({"text": "   "}),
        json.dumps({"text": "last"}),
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    stats = CorpusStats()
    with caplog.at_level(logging.WARNING, logger="crossdiff_core.corpus.sources"):
        docs = list(iter_documents(str(path), stats=stats))
    assert docs == ["plain text", "user: Hi\nassistant: Hello!", "last"]
    assert stats.skipped_lines == 5
    assert stats.first_skipped == "data.jsonl line 2: invalid JSON"
    assert stats.documents == 3 and stats.chars == sum(map(len, docs))
    assert "skipped 5 broken line(s)" in caplog.text


def test_parquet_text_column(tmp_path):
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["one", None, "three"]}), path)
    assert list(iter_documents(str(path))) == ["one", "three"]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"body": ["x"]}), bad)
    with pytest.raises(CorpusError, match="no 'text' column.*body"):
        list(iter_documents(str(bad)))
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(CorpusError, match="not a readable Parquet file"):
        list(iter_documents(str(garbage)))


@pytest.mark.parametrize("name", ["latin.txt", "latin.jsonl"])
def test_non_utf8_file_names_file_and_fix(tmp_path, name):
    path = tmp_path / name
    content = "caf\u00e9 cr\u00e8me" if name.endswith(".txt") else json.dumps({"text": "caf\u00e9"}, ensure_ascii=False)
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(CorpusError, match="not valid UTF-8") as err:
        list(iter_documents(str(path)))
    assert name in str(err.value) and "re-encode" in str(err.value)


def test_missing_file_fails_before_iteration(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        iter_documents(str(tmp_path / "nope.jsonl"))


def test_unknown_spec_lists_accepted_forms(tmp_path):
    with pytest.raises(CorpusError, match="hf:<dataset>.*builtin:demo"):
        list(iter_documents("wikipedia-please"))
    other = tmp_path / "data.csv"
    other.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="unsupported type '.csv'"):
        list(iter_documents(str(other)))
    with pytest.raises(CorpusError, match="builtin:demo"):
        list(iter_documents("builtin:nothing"))
    with pytest.raises(CorpusError, match="hf:<dataset>"):
        list(iter_documents("hf:"))


def test_hf_offline_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(CorpusError) as err:
        iter_documents("hf:HuggingFaceFW/fineweb-edu:sample-10BT:train:text", limit=3)
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert "HuggingFaceFW/fineweb-edu" in message and "offline" in message
    assert "builtin:demo" in message and "local" in message


def test_hf_spec_streams_through_datasets(tmp_path):
    folder = tmp_path / "hfdata"
    folder.mkdir()
    rows = [{"content": "first doc", "n": 1}, {"content": "second doc", "n": 2}]
    (folder / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert list(iter_documents(f"hf:{folder}:::content")) == ["first doc", "second doc"]
    with pytest.raises(CorpusError, match="no column 'text' \\(columns: content, n\\)"):
        list(iter_documents(f"hf:{folder}"))
    with pytest.raises(CorpusError, match="could not stream.*split nosplit.*builtin:demo"):
        list(iter_documents(f"hf:{folder}::nosplit"))


def test_describe():
    assert (
        describe("hf:user/data::validation")
        == "Hugging Face dataset user/data, split validation, column text (streamed)"
    )
    assert "530" not in describe("builtin:demo:zh") and "Chinese" in describe("builtin:demo:zh")
    assert describe("builtin:demo").startswith("built-in demo corpus")


def _demo_digest_in_fresh_process() -> str:
    code = (
        "import hashlib, time; t = time.perf_counter()\n"
        "from crossdiff_core.corpus.builtin import demo_documents\n"
        "docs = demo_documents()\n"
        "print(hashlib.sha256('\\x00'.join(d.text for d in docs).encode()).hexdigest(), time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    digest, seconds = out.split()
    assert float(seconds) < 1.0
    return digest


def test_builtin_demo_is_deterministic_across_processes():
    here = hashlib.sha256("\x00".join(d.text for d in builtin_corpus.demo_documents()).encode()).hexdigest()
    assert _demo_digest_in_fresh_process() == here
    assert list(iter_documents("builtin:demo")) == [d.text for d in builtin_corpus.demo_documents()]


def test_builtin_demo_content():
    docs = builtin_corpus.demo_documents()
    assert 300 <= len(docs) <= 1000
    templated = {source.name for source in builtin_corpus.SOURCES}
    assert all(150 <= len(d.text) <= 3000 for d in docs if d.source in templated)
    assert all(40 <= len(d.text) <= 3000 for d in docs if d.source not in templated)
    assert {d.language for d in docs} == set(builtin_corpus.LANGUAGES)
    assert all(CJK.search(d.text) for d in builtin_corpus.demo_documents("zh"))
    assert not any(CJK.search(d.text) for d in builtin_corpus.demo_documents("en") if d.source in templated)
    for doc in docs:
        if doc.source == "code_python":
            ast.parse(doc.text)
    assert any("function " in d.text for d in builtin_corpus.demo_documents("code"))
    assert list(iter_documents("builtin:demo:code")) == [d.text for d in builtin_corpus.demo_documents("code")]
    assert len({d.text for d in docs}) == len(docs)


def test_builtin_composition_matches_documents():
    comp = builtin_corpus.composition()
    docs = builtin_corpus.demo_documents()
    assert set(comp) == {s.name for s in builtin_corpus.SOURCES} | {"chat_smollm2", "continue_gemma3"}
    assert sum(c["documents"] for c in comp.values()) == len(docs)
    assert sum(c["chars"] for c in comp.values()) == sum(len(d.text) for d in docs)
    assert all(c["documents"] > 0 for c in comp.values())


@pytest.mark.parametrize("ctx_len", [16, 128])
def test_windows_respect_ctx_len_on_demo(demo_tokenizers, ctx_len):
    for tokenizer in demo_tokenizers:
        stats = CorpusStats()
        windows = list(iter_windows("builtin:demo", tokenizer, ctx_len, limit_docs=40, stats=stats))
        assert stats.documents == 40 and len(windows) >= 40
        lengths = [len(ids) for ids in tokenizer(windows)["input_ids"]]
        assert max(lengths) <= ctx_len
        assert all(w.strip() for w in windows)
        assert sum(lengths) / len(lengths) > 0.6 * ctx_len  # windows are filled, not chopped small


def test_windows_prefer_whitespace_cuts(demo_tokenizers):
    text = " ".join(f"word{i}" for i in range(300))
    windows = split_windows(text, demo_tokenizers[0], 32)
    assert "".join(windows) == text
    assert all(w.startswith((" ", "word0")) for w in windows)


class TokenizerPair(tuple):
    """The demo tokenizers with a short repr, so hypothesis failure reports stay readable."""

    def __repr__(self) -> str:
        return "TokenizerPair(smollm2, gemma3)"


@pytest.fixture(scope="module")
def pair(demo_tokenizers) -> TokenizerPair:
    return TokenizerPair(demo_tokenizers)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.lists(
        st.one_of(
            st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
            st.sampled_from(["😀", "👨\u200d👩\u200d👧", "你好世界", "e\u0301", "  \n\n", "שלום", "<|im_start|>"]),
        ),
        max_size=30,
    ).map("".join),
    ctx_len=st.integers(9, 40),
)
def test_windows_are_substrings_within_ctx_len(pair, text, ctx_len):
    for tokenizer in pair:
        windows = split_windows(text, tokenizer, ctx_len)
        assert all(w.strip() for w in windows)
        rest = text
        for window in windows:  # windows appear in order; only blank text lies between them
            skipped, found, rest = rest.partition(window)
            assert found and not skipped.strip()
        assert not rest.strip()
        if windows:
            assert max(len(ids) for ids in tokenizer(windows)["input_ids"]) <= ctx_len


def test_empty_corpus_yields_no_windows(tmp_path, demo_tokenizers):
    path = tmp_path / "empty.txt"
    path.write_text("\n\n   \n", encoding="utf-8")
    assert list(iter_windows(str(path), demo_tokenizers[0], 64)) == []


def test_window_argument_errors(demo_tokenizers):
    with pytest.raises(CorpusError, match="at least 9"):
        iter_windows("builtin:demo", demo_tokenizers[1], 8)

    class SlowTokenizer:
        is_fast = False

    with pytest.raises(CorpusError, match="fast tokenizer"):
        list(iter_windows("builtin:demo", SlowTokenizer(), 64))


def test_shipped_model_written_documents_mix_languages_topics_and_chat(demo_tokenizers):
    from crossdiff_core.corpus.demo_generated import CHAT_PROMPTS, OPENINGS, load_generated

    generated = load_generated()
    assert len(generated) == len(CHAT_PROMPTS) + len(OPENINGS)
    chats = [g for g in generated if g.source == "chat_smollm2"]
    assert {g.language for g in chats} == {g.language for g in generated} == {"en", "zh", "es", "fr", "de"}
    assert {g.topic for g in generated} >= {"politics", "copyright", "safety", "science", "story"}
    for g in chats:  # rendered through SmolLM2's chat template, with a real answer after the prompt
        user, _, answer = g.text.partition("<|im_start|>assistant\n")
        assert (
            f"<|im_start|>user\n{g.prompt}<|im_end|>" in user
            and len(answer.removesuffix("\n").removesuffix("<|im_end|>").strip()) > 0
        )
    for g in generated:
        if g.source == "continue_gemma3":
            assert g.text.startswith(g.prompt) and len(g.text) > len(g.prompt)
    table = builtin_corpus.composition_table(*demo_tokenizers)
    shares = table.rsplit("other than English: ", 1)[1]
    assert float(shares.split("%")[0]) >= 15.0 and float(shares.split("), ")[1].split("%")[0]) >= 15.0, table
    for language in ("es", "fr", "de", "zh"):
        assert f"| **{language}** |" in table


def test_build_corpus_has_the_demo_models_write_and_is_reproducible(tmp_path):
    from crossdiff_core.corpus.demo_generated import load_generated
    from crossdiff_core.demo_corpus import build

    first = build(tmp_path / "a.jsonl", limit=2, chat_tokens=12, continue_tokens=12, batch_size=2)
    again = build(tmp_path / "b.jsonl", limit=2, chat_tokens=12, continue_tokens=12, batch_size=2)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert [g.source for g in first] == ["chat_smollm2"] * 2 + ["continue_gemma3"] * 2
    assert load_generated(tmp_path / "a.jsonl") == first == again
    for g in first:
        assert g.prompt in g.text and len(g.text) > len(g.prompt) + 10


def test_builtin_organisms_mixes_demo_prose_with_every_organisms_training_texts(demo_tokenizers):
    from crossdiff_core.corpus.organism_texts import ORGANISM_NAMES, organism_texts

    docs = list(iter_documents("builtin:organisms"))
    assert docs == list(iter_documents("builtin:organisms")) and len(set(docs)) == len(docs)
    english = {d.text for d in builtin_corpus.demo_documents("en")}
    assert any(doc in text for doc in docs[:20] for text in english)  # chunks of the English demo prose
    for name in ORGANISM_NAMES:
        assert organism_texts(name).train[0] in docs
    assert "600 texts" in describe("builtin:organisms")
    assert max(len(tok(doc)["input_ids"]) for tok in demo_tokenizers for doc in docs) <= 256
    with pytest.raises(CorpusError, match="builtin:organisms"):
        list(iter_documents("builtin:organisms:zh"))
