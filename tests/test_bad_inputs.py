"""Bad inputs: each gets one clear error (or warning) that says what to do, and nothing is lost or half-written.

One test per input, through the Python API and, where it costs no model load, through the CLI
(`crossdiff_core.cli.main`: exit code 2 and a one-line `error: ...` on stderr). The Hub cannot be reached
here, so the Hub's answers (gated, private, missing) are real `httpx2.Response`s turned into exceptions by
huggingface_hub's own `hf_raise_for_status`, then fed to the function that explains them.
"""

from __future__ import annotations

import json
import logging
import time

import gguf
import httpx2
import numpy as np
import pytest
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub.utils import hf_raise_for_status
from test_alignment import CharTokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from crossdiff_core import cli
from crossdiff_core.activations.store import StoreWriter
from crossdiff_core.analysis import diff
from crossdiff_core.corpus.sources import CorpusStats, iter_documents
from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig
from crossdiff_core.errors import CorpusError, CrossCoderError, CrossDiffError, ModelLoadError
from crossdiff_core.hub.repo import hub_error, load_crosscoder, open_crosscoder
from crossdiff_core.models import _explain_load_failure, find_demo, load_model, tokenizer_fingerprint

SMOL, GEMMA = find_demo("smollm2-135m").hub_id, find_demo("gemma3-270m").hub_id


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """Return `(exit code, stderr)` of the CLI; assert the error is one line."""
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 2 or len(errors) == 1, err
    return code, err


def demo_config(demo_tokenizers, **overrides) -> CrossCoderConfig:
    """Return a small crosscoder config recorded for the demo pair at its default (middle) layers."""
    tok_a, tok_b = demo_tokenizers
    fields = dict(d_a=576, d_b=640, dict_size=64, k=8, exclusive_a=0.2, exclusive_b=0.2,
                  model_a=SMOL, model_b=GEMMA, layer_a=15, layer_b=9,
                  tokenizer_a=tokenizer_fingerprint(tok_a), tokenizer_b=tokenizer_fingerprint(tok_b))  # fmt: skip
    fields.update(overrides)
    return CrossCoderConfig(**fields)


@pytest.fixture(scope="module")
def demo_cc(demo_tokenizers, tmp_path_factory):
    """A small random crosscoder for the demo pair, and the folder it is saved in."""
    cc = CrossCoder(demo_config(demo_tokenizers), seed=0).eval()
    folder = tmp_path_factory.mktemp("demo_cc")
    cc.save_pretrained(folder)
    return cc, folder


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """A complete activation store of random rows (d_a 32, d_b 40), written with the real StoreWriter."""
    out = tmp_path_factory.mktemp("store")
    model = {"model_id": "a", "revision": None, "layer": 1, "tokenizer": "x"}
    writer = StoreWriter(out, {"d_a": 32, "d_b": 40, "model_a": model, "model_b": {**model, "model_id": "b"},
                               "corpus": "builtin:demo", "ctx_len": 32, "target_tokens": 256})  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    writer.add(
        (torch.randn(256, 32, generator=gen), torch.randn(256, 40, generator=gen)),
        {"windows": 8, "tokens_a": 256, "tokens_b": 256, "paired": 256, "outliers": 0},
    )
    writer.finish()
    return out


def hub_exception(status: int, headers: dict[str, str], repo: str = "some-org/some-model") -> Exception:
    """Return the exception huggingface_hub raises for a real HTTP response of the Hub."""
    request = httpx2.Request("GET", f"https://huggingface.co/api/models/{repo}")
    try:
        hf_raise_for_status(httpx2.Response(status, headers=headers, request=request))
    except Exception as error:  # noqa: BLE001 - we want whichever class huggingface_hub picks
        return error
    raise AssertionError("hf_raise_for_status did not raise")


def as_transformers_raises(error: Exception, message: str) -> OSError:
    """Return `error` wrapped the way transformers' `cached_files` wraps Hub errors (`raise OSError(...) from e`)."""
    try:
        raise OSError(message) from error
    except OSError as wrapped:
        return wrapped


# ------------------------------------------------------------------------------------------------ models


def test_unknown_model_id(capsys, tmp_path):
    with pytest.raises(ModelLoadError) as err:
        load_model("no-such-org/no-such-model", quant="none")
    message = str(err.value)
    assert "cannot load model 'no-such-org/no-such-model'" in message
    assert "HF_HUB_OFFLINE" in message and "smollm2-135m" in message  # why (offline), and what works instead
    missing = hub_exception(404, {"X-Error-Code": "RepoNotFound"})  # what the Hub answers online
    online = str(_explain_load_failure("no-such-org/no-such-model", missing))
    assert "not a model on the Hub" in online and "check the spelling" in online and "gated" not in online
    code, stderr = run_cli(
        capsys,
        "harvest",
        "--model-a",
        "no-such-org/no-such-model",
        "--model-b",
        "gemma3-270m",
        "--out",
        str(tmp_path / "store"),
        "--quant",
        "none",
    )
    assert code == 2 and "error: cannot load model 'no-such-org/no-such-model'" in stderr
    assert not (tmp_path / "store").exists()  # nothing half-written


@pytest.mark.parametrize("wrapped", [False, True], ids=["hub-error", "as-transformers-wraps-it"])
def test_gated_model_without_token_says_to_set_a_token(wrapped):
    gated = hub_exception(
        401,
        {
            "X-Error-Code": "GatedRepo",
            "X-Error-Message": "Access to model google/gemma-x is restricted. Please log in.",
        },
        repo="google/gemma-x",
    )
    assert type(gated).__name__ == "GatedRepoError"
    error = gated
    if wrapped:
        error = as_transformers_raises(
            gated,
            "You are trying to access a gated repo.\nMake sure to have access to "
            f"it at https://huggingface.co/google/gemma-x.\n{gated}",
        )
    message = str(_explain_load_failure("google/gemma-x", error))
    assert "gated" in message and "HF_TOKEN" in message and "accept its conditions" in message
    assert "https://huggingface.co/google/gemma-x" in message
    # the crosscoder side of the Hub says to pass a token too
    assert "pass a token" in str(hub_error(gated, "downloading google/gemma-x", None))


@pytest.mark.parametrize("status", [401, 404])
def test_private_model_says_check_spelling_or_set_a_token(status):
    # The Hub answers 401 RepoNotFound for a private repo without a token (it does not say whether it exists).
    private = hub_exception(status, {"X-Error-Code": "RepoNotFound"}, repo="alice/private-model")
    assert type(private).__name__ == "RepositoryNotFoundError"
    wrapped = as_transformers_raises(
        private,
        "alice/private-model is not a local folder and is not a valid model identifier listed on "
        "'https://huggingface.co/models'\nIf this is a private repository, make sure to pass a token",
    )
    for error in (private, wrapped):
        message = str(_explain_load_failure("alice/private-model", error))
        assert "'alice/private-model' is not a model on the Hub, or it is private" in message
        assert "set HF_TOKEN" in message and "check the spelling" in message
    forbidden = str(_explain_load_failure("alice/private-model", hub_exception(403, {})))
    assert "HTTP 403" in forbidden and "HF_TOKEN" in forbidden


def test_model_without_fast_tokenizer():
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=128,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    ).eval()
    slow = CharTokenizer()
    assert slow.is_fast is False
    with pytest.raises(ModelLoadError, match="needs a fast tokenizer.*use_fast=True or provide a tokenizer.json"):
        load_model((model, slow))


def write_gguf(path, arch: str) -> None:
    """Write a tiny but real GGUF file (header, metadata, one tensor) of architecture `arch`."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(2)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_of_unsupported_architecture(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CROSSDIFF_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny-rwkv6.gguf"
    write_gguf(path, "rwkv6")
    assert gguf.GGUFReader(str(path)).fields["general.architecture"].contents() == "rwkv6"
    with pytest.raises(ModelLoadError) as err:
        load_model(str(path), quant="none")
    message = str(err.value)
    assert "cannot read GGUF file tiny-rwkv6.gguf: GGUF model with architecture rwkv6 is not supported" in message
    assert "use the model's Hub id instead" in message and "yet.." not in message
    # no half-converted folder left behind (its lock file may stay)
    assert [p for p in (tmp_path / "cache" / "converted").iterdir() if p.is_dir()] == []
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"definitely not GGUF" * 8)
    with pytest.raises(ModelLoadError, match="junk.gguf.*GGUF magic"):
        load_model(str(junk), quant="none")
    code, stderr = run_cli(
        capsys,
        "harvest",
        "--model-a",
        str(path),
        "--model-b",
        "gemma3-270m",
        "--out",
        str(tmp_path / "store"),
        "--quant",
        "none",
    )
    assert code == 2 and "architecture rwkv6 is not supported" in stderr and not (tmp_path / "store").exists()


def test_layer_out_of_range(demo_cc, capsys):
    with pytest.raises(ModelLoadError, match=r"layer 30 is out of range for .*SmolLM2.*30 layers: choose 0\.\.29"):
        load_model("smollm2-135m", layer=30, quant="nf4", device="cpu")
    with pytest.raises(ModelLoadError, match=r"layer -31 is out of range .*default 15, the middle"):
        load_model("smollm2-135m", layer=-31, quant="nf4", device="cpu")
    code, stderr = run_cli(capsys, "diff", "--crosscoder", str(demo_cc[1]), "--layer-a", "99", "hello")
    assert code == 2 and "error: layer 99 is out of range" in stderr and "choose 0..29" in stderr


def test_crosscoder_for_another_pair_or_layer(demo_tokenizers, demo_pair):
    cases = [
        (dict(layer_a=3), "layer of model A is 15 but the crosscoder was trained on 3"),
        (
            dict(model_b="Qwen/Qwen3-0.6B", tokenizer_b="0123456789abcdef"),
            "model of model B is 'google/gemma-3-270m' but the crosscoder was trained on 'Qwen/Qwen3-0.6B'",
        ),
        # a crosscoder that records no models is still caught, by its activation widths
        (
            dict(d_a=1024, model_a=None, model_b=None, layer_a=None, layer_b=None, tokenizer_a=None, tokenizer_b=None),
            "model A (HuggingFaceTB/SmolLM2-135M-Instruct) gives 576-wide activations but the crosscoder reads 1024",
        ),
    ]
    for overrides, expected in cases:
        cc = CrossCoder(demo_config(demo_tokenizers, **overrides), seed=0)
        with pytest.raises(CrossCoderError) as err:
            diff(cc, demo_pair, "The Great Wall of China")
        assert expected in str(err.value) and "train a new one" in str(err.value)
    cc = CrossCoder(demo_config(demo_tokenizers), seed=0)
    with pytest.raises(CrossCoderError, match="models A and B are swapped.*pass them the other way round"):
        diff(cc, demo_pair[::-1], "The Great Wall of China")


# ------------------------------------------------------------------------------------------------ crosscoder settings


def test_k_of_zero_or_above_dict_size(tiny_store, tmp_path, capsys):
    for k in (0, 65):
        with pytest.raises(CrossCoderError, match=f"k={k} must be between 1 and dict_size=64.*use e.g. 32"):
            CrossCoderConfig(d_a=32, d_b=40, dict_size=64, k=k)
    out = tmp_path / "cc"
    code, stderr = run_cli(
        capsys, "train", "--store", str(tiny_store), "--out", str(out), "--dict-size", "64", "--k", "0", "--steps", "2"
    )
    assert code == 2 and "error: k=0 must be between 1 and dict_size=64" in stderr
    assert not out.exists()  # refused before anything was written


def test_exclusive_fractions_summing_above_one(tiny_store, tmp_path, capsys):
    with pytest.raises(CrossCoderError, match=r"exclusive_a=0\.6 \+ exclusive_b=0\.6 must sum to less than 1"):
        CrossCoderConfig(d_a=32, d_b=40, dict_size=64, k=8, exclusive_a=0.6, exclusive_b=0.6)
    with pytest.raises(CrossCoderError, match="exceed dict_size=64; lower exclusive_a/exclusive_b or raise dict_size"):
        CrossCoderConfig(d_a=32, d_b=40, dict_size=64, k=8, exclusive_a=0.6, exclusive_b=40)
    out = tmp_path / "cc"
    code, stderr = run_cli(
        capsys,
        "train",
        "--store",
        str(tiny_store),
        "--out",
        str(out),
        "--dict-size",
        "64",
        "--k",
        "8",
        "--exclusive",
        "0.6",
        "0.6",
        "--steps",
        "2",
    )
    assert code == 2 and "must sum to less than 1 so that shared latents remain" in stderr and not out.exists()


# ------------------------------------------------------------------------------------------------ prompts


def check_shapes(result) -> None:
    """Assert the prompt diff is internally consistent whatever the prompt."""
    assert len(result.char_ends) == result.paired
    for view in (result.model_a, result.model_b):
        assert len(view.paired_positions) == result.paired
        assert [t.index for t in view.tokens] == list(range(len(view.tokens)))
        assert all(t.pair is None or 0 <= t.pair < result.paired for t in view.tokens)
        assert 0.0 <= view.coverage <= 1.0
    json.dumps(result.to_dict(), allow_nan=False)


def test_empty_prompt(demo_cc, demo_pair, capsys):
    for prompt in ("", "  \n\t "):
        with pytest.raises(CrossDiffError, match="the prompt is empty: type some text"):
            diff(demo_cc[0], demo_pair, prompt)
    code, stderr = run_cli(capsys, "diff", "--crosscoder", str(demo_cc[1]), "")
    assert code == 2 and "error: the prompt is empty" in stderr


def test_huge_prompt_is_cut_and_stays_fast(demo_cc, demo_pair):
    prompt = ("The Roman Empire was large. 中国的历史很长。 def f(x): return x 😀\n" * 2000)[:100_000]
    assert len(prompt) == 100_000
    start = time.perf_counter()
    result = diff(demo_cc[0], demo_pair, prompt)
    elapsed = time.perf_counter() - start
    assert elapsed < 60, f"a 100k-character prompt took {elapsed:.1f} s"
    assert any("100,000 characters" in w for w in result.warnings)
    assert sum("longer than 1024 tokens" in w for w in result.warnings) == 2
    assert result.model_a.truncated and result.model_b.truncated
    assert len(result.model_a.tokens) <= 1024 and len(result.model_b.tokens) <= 1024
    assert result.paired > 100 and prompt.startswith(result.content)
    check_shapes(result)


@pytest.mark.parametrize("prompt, only", [
    ("<|im_start|><|im_end|>", [SMOL]),
    ("<bos><eos>", [GEMMA]),
    ("<|im_start|><bos><eos><|im_end|>", None),
])  # fmt: skip
def test_prompt_of_only_special_tokens(demo_cc, demo_pair, prompt, only):
    result = diff(demo_cc[0], demo_pair, prompt)
    assert result.paired == 0
    check_shapes(result)
    if only:
        (warning,) = result.warnings
        assert warning.startswith(f"{only[0]} reads this prompt as special tokens only")
        assert "type ordinary text" in warning
    else:  # each model reads the other's markers as text: still nothing shared, and it says so
        assert any("share no token boundary" in w for w in result.warnings)


def test_prompt_of_only_emoji(demo_cc, demo_pair):
    prompt = "😀🎉👨\u200d👩\u200d👧🇫🇷🏳️\u200d🌈"
    result = diff(demo_cc[0], demo_pair, prompt)
    check_shapes(result)
    assert result.paired >= 5 and not result.warnings
    assert all(0 < e <= len(prompt) for e in result.char_ends)
    for view in (result.model_a, result.model_b):
        assert "".join(t.text for t in view.tokens if not t.special) == prompt  # every character shown once


# ------------------------------------------------------------------------------------------------ corpora


@pytest.mark.parametrize("encoding, source", [("latin-1", "latin1"), ("utf-16", "utf-16")])
def test_corpus_file_not_utf8(tmp_path, encoding, source):
    path = tmp_path / "notes.txt"
    path.write_bytes("Café crème, naïve façade.\n\nSecond document.\n".encode(encoding))
    with pytest.raises(CorpusError) as err:
        list(iter_documents(str(path)))
    message = str(err.value)
    assert "notes.txt" in message and "is not valid UTF-8" in message and f"iconv -f {source} -t utf-8" in message
    # a .jsonl with one bad line fails too, naming the file, rather than silently dropping that line
    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_bytes(json.dumps({"text": "good line"}).encode() + b"\n" + '{"text": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(CorpusError, match="mixed.jsonl.*not valid UTF-8.*iconv -f latin1"):
        list(iter_documents(str(jsonl)))


def test_jsonl_broken_lines_are_skipped_and_counted(tmp_path, caplog):
    lines = [
        "{broken",
        json.dumps({"title": "no text"}),
        json.dumps({"text": "first"}),
        "[1, 2]",
        json.dumps({"text": "second"}),
        "not json at all",
        json.dumps({"text": "third"}),
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    stats = CorpusStats()
    with caplog.at_level(logging.WARNING, logger="crossdiff_core.corpus.sources"):
        assert list(iter_documents(str(path), stats=stats)) == ["first", "second", "third"]
    assert stats.skipped_lines == 4 and stats.first_skipped == "data.jsonl line 1: invalid JSON"
    assert "skipped 4 broken line(s)" in caplog.text and "'text' string" in caplog.text
    # a reader that stops early (a token budget reached) still reports what it skipped so far
    caplog.clear()
    early = CorpusStats()
    with caplog.at_level(logging.WARNING, logger="crossdiff_core.corpus.sources"):
        docs = iter_documents(str(path), limit=1, stats=early)
        assert next(docs) == "first"
        docs.close()
    assert early.skipped_lines == 2 and "skipped 2 broken line(s)" in caplog.text


# ------------------------------------------------------------------------------------------------ Hub repos


def model_repo(folder, card: bool) -> None:
    """Write what a transformers model repo holds (config.json, weights, and optionally its model card)."""
    folder.mkdir(parents=True, exist_ok=True)
    LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    ).save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    if card:
        (folder / "README.md").write_text("---\nlibrary_name: transformers\nlicense: mit\n---\n# a language model\n")


def test_hub_repo_that_is_not_a_crosscoder(tmp_path, monkeypatch, capsys):
    with_card, without_card = tmp_path / "with_card", tmp_path / "without_card"
    model_repo(with_card, card=True)
    model_repo(without_card, card=False)
    with pytest.raises(
        CrossCoderError,
        match="is not a CrossDiff crosscoder: its model card says library_name: "
        "transformers. Load it with that library",
    ):
        open_crosscoder(with_card)
    with pytest.raises(
        CrossCoderError,
        match=r"is not a CrossDiff crosscoder: its config.json lacks d_a, d_b, "
        r"dict_size. It looks like a transformers model \(model_type llama\): "
        "pass it as --model-a or --model-b",
    ):
        open_crosscoder(without_card)
    # The Hub code path up to the network: a repo in huggingface_hub's cache, read offline (as conftest sets).
    assert hub_constants.is_offline_mode()
    cache = tmp_path / "hub_cache"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--some-org--tiny-llama"
    model_repo(repo / "snapshots" / commit, card=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    with pytest.raises(CrossCoderError, match="Hub repo some-org/tiny-llama is not a CrossDiff crosscoder"):
        load_crosscoder("some-org/tiny-llama")
    code, stderr = run_cli(capsys, "info", "some-org/tiny-llama")
    assert code == 2 and "is not a CrossDiff crosscoder: its model card says library_name: transformers" in stderr
    code, stderr = run_cli(capsys, "info", "some-org/not-cached")
    assert code == 2 and "offline and not in the cache" in stderr and "HF_HUB_OFFLINE" in stderr


def test_a_fractional_exclusive_count_is_refused(tmp_path, capsys):
    from crossdiff_core.cli import main

    code = main(["train", "--store", str(tmp_path / "none"), "--out", str(tmp_path / "out"), "--exclusive", "1.5", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "neither a fraction below 1 nor a whole count" in err and not (tmp_path / "out").exists()


def test_bad_values_given_to_the_python_api_are_crossdiff_errors():
    """Settings a caller passes in (compute dtype, built-in corpus, organism, synthetic data, in-memory activations)
    are refused with a `CrossDiffError` saying what to use, never a bare ValueError."""
    import dataclasses

    from crossdiff_core.activations.batches import TensorBatchSource
    from crossdiff_core.compute_dtype import choose
    from crossdiff_core.corpus.builtin import composition
    from crossdiff_core.corpus.organism_texts import organism_texts
    from crossdiff_core.synthetic import SyntheticConfig, SyntheticPair

    refused = [
        (lambda: choose("cpu", "int4"), "choose one of auto"),
        (lambda: composition("huge"), "use one of demo, large"),
        (lambda: organism_texts("lighthouse"), "choose one of"),
        (lambda: organism_texts("backdoor", n_train=-1), "0 or more"),
        (lambda: SyntheticPair(dataclasses.replace(SyntheticConfig(), shared_map=2.0)), r"must be in \[0, 1\]"),
        (lambda: TensorBatchSource(torch.zeros(3, 4), torch.zeros(2, 4)), "equal row counts"),
        (lambda: TensorBatchSource(torch.zeros(0, 4), torch.zeros(0, 4)), "at least one row"),
    ]
    for call, message in refused:
        with pytest.raises(CrossDiffError, match=message):
            call()
