"""Diffing a prompt: every token of both models, paired positions, active latents, exclusivity, summaries."""

from __future__ import annotations

import json
import shutil

import pytest

from crossdiff_core import cli
from crossdiff_core.analysis import FeatureIndex, diff, index_dir
from crossdiff_core.analysis.labels import UNCLEAR
from crossdiff_core.errors import CrossDiffError

PROMPT = "The history of the Roman Empire. 中国的历史。 def f(x): return x"


def _check_model_view(view, n_latents):
    """Every token is present; paired tokens are the paired positions; unpaired ones point to the nearest left pair."""
    positions = view.paired_positions
    assert [t.index for t in view.tokens] == list(range(len(view.tokens)))
    for token in view.tokens:
        if token.paired:
            assert positions[token.pair] == token.index
        elif token.pair is not None:
            assert positions[token.pair] < token.index
            assert all(p < token.index for p in positions[: token.pair + 1])
            assert token.pair + 1 == len(positions) or positions[token.pair + 1] > token.index
        else:
            assert not positions or token.index < positions[0]
        if token.pair is not None:
            assert 0.0 <= token.exclusivity <= 1.0
            assert all(0 <= lat.latent < n_latents and lat.activation > 0 for lat in token.latents)
    peaks = [hit.activation for hit in view.exclusive]
    assert peaks == sorted(peaks, reverse=True)


def test_text_diff_on_the_real_pair(real_dfc, real_index, demo_pair):
    cc = real_dfc.crosscoder
    result = diff(cc, demo_pair, PROMPT, labels=real_index.labels)
    assert result.mode == "text" and result.paired > 5 and result.content == PROMPT
    assert len(result.char_ends) == result.paired
    for side, view in (("a", result.model_a), ("b", result.model_b)):
        _check_model_view(view, cc.dict_size)
        assert "".join(t.text for t in view.tokens if not t.special) == PROMPT
        allowed = {"A-exclusive", "shared"} if side == "a" else {"shared", "B-exclusive"}
        assert {lat.block for t in view.tokens for lat in t.latents} <= allowed
        for hit in view.exclusive:
            assert hit.label == real_index.labels[hit.latent]
            assert real_index.block(hit.latent) == ("A-exclusive" if side == "a" else "B-exclusive")
            assert view.tokens[hit.peak_token].paired
    assert result.model_a.exclusive, "some A-exclusive latent should fire on this prompt"
    assert any(not t.paired and t.pair is not None for t in result.model_a.tokens)  # unpaired tokens are shown
    json.dumps(result.to_dict(), allow_nan=False)  # strict JSON


def test_chat_diff_pairs_message_content_only(real_dfc, demo_pair):
    messages = [{"role": "user", "content": "Tell me about Paris and Rome."}]
    result = diff(real_dfc.crosscoder, demo_pair, messages)
    assert result.mode == "chat" and result.content == messages[0]["content"]
    assert result.model_a.text.startswith("<|im_start|>system")  # SmolLM2 reads its chat template
    assert result.model_b.text == "User: Tell me about Paris and Rome."  # Gemma-3 base: plain fallback
    _check_model_view(result.model_a, real_dfc.crosscoder.dict_size)
    template_tokens = [t for t in result.model_a.tokens if t.special]
    assert template_tokens and not any(t.paired for t in template_tokens)
    assert result.paired >= 4


def test_cli_diff_json_keeps_its_keys(real_dfc, real_index, demo_pair, monkeypatch, capsys):
    monkeypatch.setattr("crossdiff_core.cli.pipeline._load_pair", lambda *args, **kwargs: demo_pair)
    prompt = "Paris is the capital of France."
    code = cli.main(["diff", "--crosscoder", str(real_dfc.out_dir), prompt, "--json", "--chat"])
    assert code == 0
    parsed = json.loads(capsys.readouterr().out)
    rows = []
    for side in ("model_a", "model_b"):
        assert parsed[side]["tokens"] and parsed[side]["model"]
        for row in parsed[side]["exclusive"]:
            assert {"latent", "activation", "label", "verdict"} <= set(row)
            assert row["label"] == real_index.labels[row["latent"]]
            assert row["verdict"] == real_index.verdict(row["latent"]).to_dict()  # from the crosscoder's index
            rows.append(row)
    assert rows, "no exclusive latent fired: the verdict check is vacuous"
    assert "reads something here that model" in parsed["lead"] and "Confidence" in parsed["lead"]
    assert cli.main(["diff", "--crosscoder", str(real_dfc.out_dir), prompt, "--chat"]) == 0
    text = capsys.readouterr().out
    assert f"[{rows[0]['verdict']['label']}]" in text  # the plain output names each verdict
    assert text.splitlines()[0] == parsed["lead"].replace("**", "").replace("*", "")  # the lead comes first, plain


def test_cli_diff_json_names_each_latent_by_its_explanation_only_when_it_scored_clear(
    real_dfc, demo_pair, monkeypatch, capsys, tmp_path
):
    folder = shutil.copytree(real_dfc.out_dir, tmp_path / "dfc")
    index = FeatureIndex.load(index_dir(folder))
    scores = {}
    for n, latent in enumerate(int(j) for side in ("a", "b") for j in index.exclusive(side)):
        index.set_explanation(latent, f"explanation {latent}", "explainer")
        scores[latent] = (0.9, 0.5, None)[n % 3]
        if scores[latent] is not None:
            index.set_explanation_score(latent, scores[latent], "scorer")
    index.save_labels()
    monkeypatch.setattr("crossdiff_core.cli.pipeline._load_pair", lambda *args, **kwargs: demo_pair)
    assert cli.main(["diff", "--crosscoder", str(folder), PROMPT, "--json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    rows = [row for side in ("model_a", "model_b") for row in parsed[side]["exclusive"]]
    assert rows, "no exclusive latent fired: the naming check is vacuous"
    for row in rows:
        latent, label = row["latent"], index.labels[row["latent"]]
        assert row["label"] == label and row["explanation"] == f"explanation {latent}"
        assert row["explanation_score"] == scores[latent]
        expected = {0.9: row["explanation"], 0.5: f"{UNCLEAR} · {label}", None: label}[scores[latent]]
        assert row["name"] == expected


def test_bad_prompts_are_clear(tiny_dfc, tiny_pair):
    cc = tiny_dfc.crosscoder
    with pytest.raises(CrossDiffError, match="empty"):
        diff(cc, tiny_pair, "   ")
    with pytest.raises(CrossDiffError, match="empty"):
        diff(cc, tiny_pair, [{"role": "user", "content": ""}])
    with pytest.raises(CrossDiffError, match="labels"):
        diff(cc, tiny_pair, "hello there", labels=["x"])
    long_prompt = "The Roman Empire was large. " * 20
    result = diff(cc, tiny_pair, long_prompt, max_tokens=24)
    assert result.warnings and "longer than 24 tokens" in result.warnings[0]
    assert len(result.model_a.tokens) <= 24 and len(result.model_b.tokens) <= 24
    assert result.model_a.truncated and result.paired > 0
    swapped = (tiny_pair[1], tiny_pair[0])
    with pytest.raises(CrossDiffError, match="swapped"):
        diff(cc, swapped, "hello there")
