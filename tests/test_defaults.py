"""One home per default: the CLI's options, the app's training form and a training job read theirs from the config
dataclasses, so they cannot drift apart; a job checks its own settings; the feature index follows its store."""

from __future__ import annotations

import json

import pytest

from crossdiff_core.activations.config import HarvestConfig
from crossdiff_core.activations.store import STORE_FORMAT
from crossdiff_core.analysis import IndexConfig
from crossdiff_core.analysis.config import ExplainConfig
from crossdiff_core.cli.args import build_parser
from crossdiff_core.cli.pipeline import _train_settings
from crossdiff_core.crosscoder import CrossCoderConfig
from crossdiff_core.errors import CrossDiffError
from crossdiff_core.training.config import TrainConfig
from crossdiff_core.workspace import PairKey, TrainJob, TrainSettings, index_config

PAIR = PairKey("smollm2-135m", "gemma3-270m")


def test_cli_defaults_are_the_config_defaults():
    parser = build_parser()
    job, harvest, train = TrainJob(PAIR), HarvestConfig(), TrainConfig()
    args = parser.parse_args(["train", "--store", "s", "--out", "o"])
    settings = _train_settings(args)  # --exclusive: None on the command line, the job's block sizes once read
    assert (args.dict_size, args.k, settings.exclusive_a, settings.exclusive_b, args.steps, args.batch_size) == (
        job.dict_size,
        job.k,
        job.exclusive_a,
        job.exclusive_b,
        job.steps,
        job.batch_size,
    )
    assert (args.corpus, args.tokens, args.ctx_len, args.batch_windows, args.store_dtype) == (
        job.corpus,
        harvest.n_tokens,
        harvest.ctx_len,
        harvest.batch_windows,
        harvest.dtype,
    )
    assert (args.lr, args.seed, args.checkpoint_every, args.dead_after_tokens, args.sparsity) == (
        train.lr,
        train.seed,
        train.checkpoint_every,
        train.dead_after_tokens,
        CrossCoderConfig(1, 1, 1024).sparsity,
    )
    assert (args.quant, args.dtype) == (PAIR.quant, PAIR.dtype)
    assert job.n_tokens == harvest.n_tokens
    assert settings == TrainSettings(), "every train option defaults to what an app job trains with"
    assert job.train_settings() == TrainSettings(checkpoint_every=max(25, job.steps // 10)), "its checkpoints"
    args = parser.parse_args(["index", "--crosscoder", "c"])
    index = IndexConfig()
    assert (args.windows, args.top_contexts) == (index.n_windows, index.top_contexts)
    assert (args.corpus, args.skip_windows, args.ctx_len) == (None, None, None), "read from the store when given"
    assert (args.explain_with, args.score_with, args.explain_top) == (None, None, ExplainConfig().top)
    args = parser.parse_args(["explain", "--crosscoder", "c", "--explain-with", "smollm2-135m"])
    assert args.explain_top == ExplainConfig().top
    assert f"(default {job.steps})" in parser._subparsers._group_actions[0].choices["train"].format_help()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_tokens": 100}, "n tokens must be at least 256"),
        ({"k": 0}, r"k \(active features per token\) must be between 1 and the dictionary size \(1024\)"),
        ({"k": 2000}, r"must be between 1 and the dictionary size"),
        ({"index_windows": -1}, "index windows must be at least 0"),
        ({"dead_after_tokens": -5}, "counts as dead must be 1 or more"),
        ({"exclusive_a": 0.6, "exclusive_b": 0.6}, "exclusive"),
    ],
)
def test_a_job_checks_its_settings(change, message):
    with pytest.raises(CrossDiffError, match=message):
        TrainJob(PAIR, **change)


def test_the_index_follows_its_store(tmp_path):
    (tmp_path / "meta.json").write_text(
        json.dumps({"format": STORE_FORMAT, "corpus": "builtin:organisms", "windows_done": 7, "ctx_len": 64})
    )
    config = index_config(tmp_path, n_windows=5)
    assert (config.corpus, config.skip_windows, config.ctx_len, config.n_windows) == ("builtin:organisms", 7, 64, 5)
    other = index_config(tmp_path, corpus="builtin:demo")
    assert (other.corpus, other.skip_windows, other.n_windows) == ("builtin:demo", 0, IndexConfig().n_windows), (
        "another corpus starts at its beginning"
    )
    assert index_config(tmp_path, skip_windows=2, ctx_len=32).skip_windows == 2
    bare = index_config()
    assert (bare.corpus, bare.skip_windows, bare.ctx_len) == (IndexConfig().corpus, 0, IndexConfig().ctx_len)
