"""Shared fixtures: the real demo tokenizers and models, loaded once per test session, offline."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


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
