"""Steering: amplify and suppress a latent in its model, closed loop, shared latents, bad requests."""

from __future__ import annotations

import pytest

from crossdiff_core.analysis import diff, steer
from crossdiff_core.errors import CrossCoderError, CrossDiffError

PROMPT = "The history of the Roman Empire is long and"


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
