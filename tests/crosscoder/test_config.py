"""Tests for `CrossCoderConfig`: block sizes, validation, serialization and pair checks."""

from __future__ import annotations

import json
import warnings

import pytest

from crossdiff_core.crosscoder import CrossCoderConfig
from crossdiff_core.errors import CrossCoderError

PAIR = dict(
    model_a="HuggingFaceTB/SmolLM2-135M-Instruct", layer_a=15, tokenizer_a="smol-tok-1",
    model_b="google/gemma-3-270m", layer_b=9, tokenizer_b="gemma-tok-1",
)  # fmt: skip


def make(**overrides) -> CrossCoderConfig:
    values = dict(d_a=576, d_b=640, dict_size=1000)
    values.update(overrides)
    return CrossCoderConfig(**values)


def test_fraction_blocks_round_to_counts():
    config = make(exclusive_a=0.05, exclusive_b=0.1)
    assert (config.n_exclusive_a, config.n_shared, config.n_exclusive_b) == (50, 850, 100)


def test_integer_blocks_are_counts():
    config = make(exclusive_a=7, exclusive_b=0)
    assert (config.n_exclusive_a, config.n_shared, config.n_exclusive_b) == (7, 993, 0)


def test_zero_exclusive_is_a_standard_crosscoder():
    config = make(exclusive_a=0, exclusive_b=0.0)
    assert (config.n_exclusive_a, config.n_shared, config.n_exclusive_b) == (0, 1000, 0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(k=0), "k=0 must be between 1 and dict_size=1000"),
        (dict(k=1001), "k=1001 must be between 1 and dict_size=1000"),
        (dict(exclusive_a=0.5, exclusive_b=0.5), "must sum to less than 1"),
        (dict(exclusive_a=600, exclusive_b=500), "exceed dict_size=1000"),
        (dict(exclusive_a=0.6, exclusive_b=500), "exceed dict_size=1000"),
        (dict(exclusive_a=-0.1), "exclusive_a=-0.1 must be a fraction"),
        (dict(exclusive_b=1.5), "exclusive_b=1.5 must be a fraction"),
        (dict(sparsity="topk"), "sparsity='topk' is not supported; use one of batchtopk, l1"),
        (dict(d_a=0), "d_a=0 must be a positive integer"),
        (dict(d_b=-3), "d_b=-3 must be a positive integer"),
        (dict(dict_size=0, k=1), "dict_size=0 must be a positive integer"),
        (dict(scale_a=0.0), "scale_a=0.0 must be a positive finite number"),
        (dict(l1_coeff=-1.0), "l1_coeff=-1.0 must be >= 0"),
    ],
)
def test_validation_errors_say_what_to_change(overrides, message):
    with pytest.raises(CrossCoderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make(**overrides)


def test_validate_catches_later_edits():
    config = make()
    config.k = 5000
    with pytest.raises(CrossCoderError, match="k=5000 must be between 1 and dict_size=1000"):
        config.validate()


def test_dict_round_trip_through_json():
    config = make(exclusive_a=12, exclusive_b=0.02, scale_a=0.25, scale_b=0.5, revision_a="abc", **PAIR)
    again = CrossCoderConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.n_exclusive_a == 12 and again.n_exclusive_b == 20


def test_from_dict_tolerates_missing_optional_and_warns_on_unknown_keys():
    with pytest.warns(UserWarning, match="ignoring unknown crosscoder config keys \\['future_field'\\]"):
        config = CrossCoderConfig.from_dict({"d_a": 8, "d_b": 12, "dict_size": 64, "future_field": 1})
    assert config.model_a is None and config.sparsity == "batchtopk"


def test_from_dict_missing_required_key_is_actionable():
    with pytest.raises(CrossCoderError, match=r"lacks required keys \['dict_size'\].*re-download or re-train"):
        CrossCoderConfig.from_dict({"d_a": 8, "d_b": 12})
    with pytest.raises(CrossCoderError, match="must be a JSON object"):
        CrossCoderConfig.from_dict(["d_a"])


def test_check_pair_accepts_the_training_pair():
    config = make(**PAIR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config.check_pair(**PAIR)


def test_check_pair_names_the_differing_field_and_the_trained_value():
    config = make(**PAIR)
    with pytest.raises(CrossCoderError, match=r"layer of model B is 10 but the crosscoder was trained on 9"):
        config.check_pair(**{**PAIR, "layer_b": 10})
    with pytest.raises(CrossCoderError, match=r"tokenizer of model A is 'other'.*trained on 'smol-tok-1'"):
        config.check_pair(**{**PAIR, "tokenizer_a": "other"})


def test_check_pair_detects_swapped_models():
    config = make(**PAIR)
    swapped = dict(
        model_a=PAIR["model_b"], layer_a=PAIR["layer_b"], tokenizer_a=PAIR["tokenizer_b"],
        model_b=PAIR["model_a"], layer_b=PAIR["layer_a"], tokenizer_b=PAIR["tokenizer_a"],
    )  # fmt: skip
    with pytest.raises(CrossCoderError, match="models A and B are swapped.*pass them the other way round"):
        config.check_pair(**swapped)


def test_check_pair_skips_unknown_fields_and_checks_revisions():
    config = make(model_a="a", model_b="b", revision_a="r1")
    config.check_pair("a", 3, "tok", "b", 4, None)
    with pytest.raises(CrossCoderError, match="revision of model A is 'r2'"):
        config.check_pair("a", None, None, "b", None, None, revision_a="r2")
