"""Shared fixtures: the real demo tokenizers and models, loaded once per test session, offline."""

import functools
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers share the two cores: one thread each (and in the processes they start), rather than four threads
    # contending for two cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

# `make test` runs the tests on two worker processes (pytest-xdist's `-n 2`). Each worker builds the session fixtures
# its tests need, so the tests that share an expensive one go to the same worker: every module's tests stay together,
# and so do the app's tests (one launched app) and those of the real demo pair's DFC and feature index.
_REAL_DEMO_FIXTURES = re.compile(r"\b(real_store|real_dfc|real_index)\b")
_LONGEST_GROUPS = (
    "tests/test_pipeline_demo.py",
    "app",
    "real-demo",
    "tests/test_organism_small.py",
    "tests/test_organisms.py",
    "tests/test_distributed.py",
    "tests/test_faults.py",
    "tests/test_corpus.py",
    "tests/test_harvest_many.py",
)
"""The groups that take longest (several minutes each on a 2-core CPU), started first so that the two workers end
together; the others follow, most tests first."""


@functools.cache
def _worker_group(module: str, root: Path) -> str:
    """Return the group of tests a module's tests run in: "app", "real-demo", or the module itself."""
    if module.startswith("tests/app/"):
        return "app"
    return "real-demo" if _REAL_DEMO_FIXTURES.search((root / module).read_text()) else module


@pytest.hookimpl(optionalhook=True)  # a run without pytest-xdist (`-p no:xdist`) has no such hook
def pytest_xdist_make_scheduler(config, log):
    """Return pytest-xdist's scheduler of whole groups of tests (`_worker_group`), one group to one worker."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _worker_group(nodeid.split("::")[0], config.rootpath)

        def _assign_work_unit(self, node) -> None:
            longest = [group for group in _LONGEST_GROUPS if group in self.workqueue]
            if longest:
                self.workqueue.move_to_end(longest[0], last=False)
            super()._assign_work_unit(node)

    return GroupScheduling(config, log)


@pytest.fixture(scope="session")
def demo_tokenizers():
    """Return the real (SmolLM2-135M-Instruct, Gemma-3-270M) fast tokenizers."""
    from crossdiff_core.models import load_tokenizer

    return load_tokenizer("smollm2-135m"), load_tokenizer("gemma3-270m")


@pytest.fixture(scope="session")
def demo_pair():
    """Return the real demo pair loaded in 4-bit NF4 on CPU, read at their middle layers."""
    from crossdiff_core.models import load_model

    return load_model("smollm2-135m", quant="nf4", device="cpu"), load_model("gemma3-270m", quant="nf4", device="cpu")


@pytest.fixture(scope="session")
def demo_pair_unquantized():
    """Return the real demo pair unquantized (fp32 on CPU), read at their middle layers.

    It loads in about half the time of `demo_pair` (NF4 quantizes every weight first), which matters most in the
    subprocesses that load it again; the app tests' Workspace holds this pair too.
    """
    from crossdiff_core.models import load_model

    return load_model("smollm2-135m", quant="none", device="cpu"), load_model("gemma3-270m", quant="none", device="cpu")


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's small-tensor trainings on one thread: on a busy machine OpenMP contention slows them several times.

    Opt in with `pytestmark = pytest.mark.usefixtures("single_thread")`.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_pair(demo_tokenizers):
    """Two random 2-layer models (Llama with SmolLM2's tokenizer, Gemma-3 with Gemma's), read at layer 1."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    from crossdiff_core.models import load_model

    tok_a, tok_b = demo_tokenizers
    torch.manual_seed(0)
    model_a = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok_a), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=True,
    )).eval()  # fmt: skip
    model_b = Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=len(tok_b), hidden_size=40, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=512, sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
    )).eval()  # fmt: skip
    return load_model((model_a, tok_a), layer=1), load_model((model_b, tok_b), layer=1)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """Start the Hub stand-in (`hub_stand_in.FakeHub`) and point huggingface_hub at it (online, empty cache, no token)."""
    from hub_stand_in import TOKEN, FakeHub, serving

    with serving(FakeHub(TOKEN), monkeypatch, tmp_path) as fake:
        yield fake


@pytest.fixture(scope="session")
def sentences(tmp_path_factory) -> str:
    """A corpus file of one-sentence documents, from builtin:demo's English template documents.

    Windows of one sentence (about 16 tokens) rather than a whole document (about 110) keep a job's harvest batches
    (`JOB_HARVEST_WINDOWS` windows each) a few hundred tokens long.
    """
    import re

    from crossdiff_core.corpus.builtin import demo_documents

    texts = [d.text for d in demo_documents("en") if d.source.startswith("en_")]
    found = [s.strip() for text in texts for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 20]
    path = tmp_path_factory.mktemp("corpus") / "sentences.txt"
    path.write_text("\n\n".join(found[:300]))
    return str(path)


@pytest.fixture
def small_human(monkeypatch):
    """`builtin:human` with 10,000 characters per source instead of 1.5M (a second, not minutes); returns the module."""
    from crossdiff_core.corpus import builtin as builtin_corpus

    monkeypatch.setattr(builtin_corpus, "HUMAN_CHAR_CAP", 10_000)
    builtin_corpus._human_documents.cache_clear()
    yield builtin_corpus
    builtin_corpus._human_documents.cache_clear()


@pytest.fixture
def small_large(monkeypatch, small_human):
    """`builtin:large` with 20,000 characters of documentation per package instead of 2.5M and a small `builtin:human`."""
    monkeypatch.setattr(small_human, "LARGE_DOCS_CHAR_CAP", 20_000)
    small_human._large_documents.cache_clear()
    yield small_human.large_documents()
    small_human._large_documents.cache_clear()
