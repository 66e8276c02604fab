"""Steering: amplify and suppress a latent in its model, closed loop, shared latents, bad requests; the readability
rule that picks the default strength, and the word diff of the two texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossdiff_core.analysis import diff, steer, steer_readable
from crossdiff_core.analysis.steering import (
    MAX_PERPLEXITY_RATIO,
    MAX_REPEATS,
    STRENGTH_STEPS,
    changed_share,
    is_coherent,
    longest_repeat,
    word_diff,
)
from crossdiff_core.errors import CrossCoderError, CrossDiffError

PROMPT = "The history of the Roman Empire is long and"
SHIPPED = Path(__file__).resolve().parents[2] / "pretrained" / "smollm2-135m__gemma3-270m"


def _firing_latent(cc, pair, side):
    """Return an exclusive latent of model `side` that fires on PROMPT (the strongest)."""
    hits = getattr(diff(cc, pair, PROMPT), f"model_{side}").exclusive
    assert hits, f"no {side.upper()}-exclusive latent fires on the prompt"
    return hits[0].latent


def test_amplify_and_suppress_close_the_loop(tiny_dfc, tiny_pair):
    cc = tiny_dfc.crosscoder
    latent = _firing_latent(cc, tiny_pair, "a")
    up = steer(tiny_pair, cc, latent, 20.0, PROMPT, max_new_tokens=4)
    assert up.mode == "amplify" and up.side == "a" and "A-exclusive" in up.note
    assert up.activation_after > up.activation_before > 0
    assert isinstance(up.baseline, str) and isinstance(up.steered, str)
    down = steer(tiny_pair, cc, latent, -1.0, PROMPT, max_new_tokens=4)
    assert down.mode == "suppress"
    assert down.activation_after < 0.5 * down.activation_before
    again = steer(tiny_pair, cc, latent, 20.0, PROMPT, max_new_tokens=4)
    assert again.baseline == up.baseline and again.steered == up.steered  # greedy: reproducible


def test_b_exclusive_latents_steer_model_b_and_shared_latents_say_so(tiny_dfc, tiny_pair):
    cc = tiny_dfc.crosscoder
    b_latent = cc.slice_b_exclusive.start
    result = steer(tiny_pair, cc, b_latent, 10.0, PROMPT, max_new_tokens=2)
    assert result.side == "b" and result.model == tiny_pair[1].model_id
    assert result.activation_after > result.activation_before
    shared = cc.slice_shared.start
    on_a = steer(tiny_pair, cc, shared, 5.0, PROMPT, max_new_tokens=2)
    assert on_a.side == "a" and "shared" in on_a.note
    on_b = steer(tiny_pair, cc, shared, -1.0, PROMPT, max_new_tokens=2, model="b")
    assert on_b.side == "b" and "estimated" in on_b.note


def test_bad_steering_requests_are_clear(tiny_dfc, tiny_pair):
    cc = tiny_dfc.crosscoder
    with pytest.raises(CrossCoderError, match="out of range.*0..63"):
        steer(tiny_pair, cc, cc.dict_size, 1.0, PROMPT)
    with pytest.raises(CrossDiffError, match="no decoder direction in model B"):
        steer(tiny_pair, cc, 0, 1.0, PROMPT, model="b")
    with pytest.raises(CrossDiffError, match="empty"):
        steer(tiny_pair, cc, 0, 1.0, "  ")
    with pytest.raises(CrossDiffError, match="mode"):
        steer(tiny_pair, cc, 0, 1.0, PROMPT, mode="boost")


def test_amplifying_on_the_real_pair(real_dfc, real_index, demo_pair):
    cc = real_dfc.crosscoder
    latent = real_index.ranked("a", 1)[0]
    strength = float(real_index.stats(latent)["max_activation"]) or 10.0
    result = steer(demo_pair, cc, latent, strength, "The history of", max_new_tokens=2)
    assert result.model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert result.activation_after > result.activation_before
    assert result.to_dict()["baseline"] == result.baseline


def test_results_are_strict_json(tiny_dfc, tiny_pair):
    import json

    result = steer(tiny_pair, tiny_dfc.crosscoder, 0, 1.0, "Hi", max_new_tokens=1)  # one-token prompt: no loop check
    assert result.activation_before != result.activation_before  # NaN in Python ...
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False))["activation_before"] is None  # ... None in JSON


def test_word_diff_marks_the_changed_words():
    pieces = word_diff("The cat sat on the mat.", "The dog sat on the red mat.")
    assert ("removed", "cat") in pieces and ("added", "dog") in pieces
    assert any(kind == "added" and "red" in text for kind, text in pieces)
    assert "".join(text for kind, text in pieces if kind != "added") == "The cat sat on the mat."
    assert "".join(text for kind, text in pieces if kind != "removed") == "The dog sat on the red mat."
    chinese = word_diff("我爱北京。", "我爱上海。")  # no spaces: one character is one word
    assert ("removed", "北京") in chinese and ("added", "上海") in chinese and chinese[0] == ("same", "我爱")
    assert word_diff("same text", "same text") == [("same", "same text")]
    assert changed_share("The cat sat.", "The dog sat.") == pytest.approx(1 / 4)  # The, dog, sat, "."
    assert changed_share("a b", "a b") == 0.0 and changed_share("a", "") == 0.0


def test_the_readability_test_catches_repeats_and_surprise():
    assert longest_repeat([7, 5, 5, 5, 5, 1]) == 4  # "¿¿¿¿"
    assert longest_repeat([1, 2, 1, 2, 1, 2, 1, 2, 9]) == 4  # "pher comm" four times
    assert longest_repeat([3, 1, 2, 3, 1, 2, 3, 1, 2]) == 3 and longest_repeat([1, 2, 3, 4]) == 1
    assert longest_repeat([]) == 0
    assert is_coherent(MAX_PERPLEXITY_RATIO, 1, 1) and not is_coherent(MAX_PERPLEXITY_RATIO * 1.01, 1, 1)
    assert not is_coherent(1.0, MAX_REPEATS, 1)  # stuck ...
    assert is_coherent(1.0, MAX_REPEATS, MAX_REPEATS)  # ... unless the unsteered text loops as much
    assert not is_coherent(float("nan"), 1, 1)


def test_the_default_strength_keeps_the_shipped_features_readable(demo_pair_unquantized):
    """On the shipped DFC's top feature of model A, the rule's strength reads better than the former 5× default."""
    from crossdiff_core.analysis.index import load_index
    from crossdiff_core.crosscoder import CrossCoder

    crosscoder = CrossCoder.from_pretrained(SHIPPED)
    index = load_index(SHIPPED, crosscoder)
    latent = index.ranked("a", 1)[0]
    unit = float(index.stats(latent)["max_activation"])
    chosen = steer_readable(demo_pair_unquantized, crosscoder, latent, unit, "Tell me about", max_new_tokens=16)
    assert [t.multiple for t in chosen.trials] == pytest.approx(list(STRENGTH_STEPS))
    readable = [t for t in chosen.trials if t.coherent]
    assert readable and chosen.strength == readable[-1].strength and chosen.coherent  # the strongest readable one
    assert chosen.chosen_by == "readability rule" and chosen.changed_words > 0  # and it does change the text
    assert chosen.steered_perplexity <= MAX_PERPLEXITY_RATIO * chosen.baseline_perplexity
    old = steer(demo_pair_unquantized, crosscoder, latent, 5 * unit, "Tell me about", max_new_tokens=16)
    assert old.baseline == chosen.baseline  # the same unsteered text, batched or not
    assert chosen.steered_perplexity < old.steered_perplexity and not old.coherent


def test_sampled_texts_differ_by_the_steering_alone(tiny_dfc, tiny_pair):
    result = steer(tiny_pair, tiny_dfc.crosscoder, 0, 0.0, PROMPT, max_new_tokens=4, greedy=False, seed=3)
    assert result.steered == result.baseline  # the same seed and no push: the same sample
