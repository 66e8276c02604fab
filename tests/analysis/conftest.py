"""Fixtures for the analysis tests: a small DFC on the real demo pair, and a tiny random pair for fast checks.

The real pair (4-bit SmolLM2 × Gemma-3 on CPU) is harvested, trained and indexed once per session with
small sizes. The tiny pair (`tiny_pair` in tests/conftest.py) is two randomly initialised 2-layer models (Llama and Gemma-3 architectures)
with the real demo tokenizers: same code paths, a fraction of the cost.
"""

from __future__ import annotations

import pytest

from crossdiff_core.activations.config import HarvestConfig
from crossdiff_core.activations.harvest import harvest
from crossdiff_core.activations.store import PairedActivationStore
from crossdiff_core.analysis import IndexConfig, build_index, index_dir
from crossdiff_core.crosscoder import CrossCoderConfig
from crossdiff_core.training.config import TrainConfig
from crossdiff_core.training.loop import train

CTX_LEN = 32
INDEX_WINDOWS = 12


def _train_small(store_dir, out_dir, d_a, d_b, dict_size, k, steps, exclusive=0.15):
    config = CrossCoderConfig(d_a=d_a, d_b=d_b, dict_size=dict_size, exclusive_a=exclusive, exclusive_b=exclusive, k=k)
    train_config = TrainConfig(
        steps=steps,
        batch_size=128,
        seed=0,
        lr=1e-2,
        warmup_steps=5,
        dead_after_tokens=512,
        relocate_every=10,
        relocate_relative_norm=0.6,
        checkpoint_every=10_000,
        log_every=20,
    )
    return train(config, train_config, PairedActivationStore(store_dir), out_dir)


@pytest.fixture(scope="session")
def real_store(demo_pair, tmp_path_factory):
    """A small store of paired activations of the real demo pair over builtin:demo."""
    out = tmp_path_factory.mktemp("real_store")
    harvest(*demo_pair, "builtin:demo", out, HarvestConfig(n_tokens=500, ctx_len=CTX_LEN, batch_windows=40))
    return out


@pytest.fixture(scope="session")
def real_dfc(real_store, tmp_path_factory):
    """A small DFC (128 latents, 19 exclusive per model) trained on the real store; returns the TrainResult."""
    return _train_small(real_store, tmp_path_factory.mktemp("real_dfc"), 576, 640, dict_size=128, k=32, steps=60)


@pytest.fixture(scope="session")
def real_index_progress():
    """The progress reports of the real index build."""
    return []


@pytest.fixture(scope="session")
def real_index(real_dfc, real_store, demo_pair, real_index_progress):
    """The feature index of the real DFC over held-out windows (those after the harvest's), saved next to it."""
    config = IndexConfig(
        corpus="builtin:demo",
        n_windows=INDEX_WINDOWS,
        ctx_len=CTX_LEN,
        batch_windows=INDEX_WINDOWS,
        skip_windows=PairedActivationStore(real_store).meta["windows_done"],
        top_contexts=5,
    )
    return build_index(
        real_dfc.crosscoder, demo_pair, config, out_dir=index_dir(real_dfc.out_dir), progress=real_index_progress.append
    )


@pytest.fixture(scope="session")
def tiny_store(tiny_pair, tmp_path_factory):
    """A store of the tiny pair's paired activations."""
    out = tmp_path_factory.mktemp("tiny_store")
    harvest(*tiny_pair, "builtin:demo", out, HarvestConfig(n_tokens=1500, ctx_len=CTX_LEN, batch_windows=32))
    return out


@pytest.fixture(scope="session")
def tiny_dfc(tiny_store, tmp_path_factory):
    """A DFC of 64 latents on the tiny pair; returns the TrainResult."""
    out = tmp_path_factory.mktemp("tiny_dfc")
    return _train_small(tiny_store, out, 32, 40, dict_size=64, k=8, steps=60, exclusive=0.2)


@pytest.fixture(scope="session")
def tiny_index_config(tiny_store):
    """The index settings used with the tiny pair."""
    return IndexConfig(
        corpus="builtin:demo",
        n_windows=16,
        ctx_len=CTX_LEN,
        batch_windows=8,
        top_contexts=4,
        skip_windows=PairedActivationStore(tiny_store).meta["windows_done"],
    )
