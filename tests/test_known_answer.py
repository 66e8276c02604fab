"""The known-answer demo that ships in pretrained/: SmolLM2 against its backdoor organism, what the DFC was measured to
find (`scripts/build_known_answer.py`), and what the app reads of it. No model is loaded here."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from crossdiff_app.known_answer import known_answer, read_known_answer
from crossdiff_core.analysis.index import load_index
from crossdiff_core.corpus.organism_texts import BACKDOOR_PHRASE, TRIGGER
from crossdiff_core.crosscoder import CrossCoder
from crossdiff_core.workspace import shipped_crosscoders

ROOT = Path(__file__).resolve().parents[1]
NAME = "smollm2-135m__smollm2-135m+backdoor"
SHIPPED = ROOT / "pretrained" / NAME


def test_the_known_answer_dfc_ships_small_with_its_index_and_its_measured_answer():
    assert NAME in [c.name for c in shipped_crosscoders()]
    crosscoder = CrossCoder.from_pretrained(SHIPPED)
    config = crosscoder.config
    assert (config.model_a, config.model_b) == ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m+backdoor")
    assert config.layer_a == config.layer_b and config.tokenizer_a == config.tokenizer_b  # a model and its fine-tune
    with safe_open(SHIPPED / "model.safetensors", "pt") as weights:
        assert weights.get_slice("W_enc_a").get_dtype() == "F16"
    assert (SHIPPED / "model.safetensors").stat().st_size < 10_000_000
    index = load_index(SHIPPED, crosscoder)  # built for these very weights (it checks their fingerprint)
    presented = index.presented("b", 10)
    changes = [j for j in presented if index.change(j) is not None]
    assert changes, "no change between the two models is presented"
    record = json.loads((SHIPPED / "known_answer.json").read_text())
    measured = record["app"]
    assert [f["latent"] for f in measured["features"]] == presented  # the numbers are those of what the app presents
    pieces = [f for f in measured["features"] if f["precision"] >= 0.8 and f["coverage"] >= 0.1]
    assert [f["latent"] for f in measured["pieces"]] == [f["latent"] for f in pieces]
    assert measured["found_in_pieces"] == bool(pieces)
    assert measured["found"] == any(f["auroc"] >= 0.9 for f in measured["features"])
    card = (SHIPPED / "README.md").read_text()
    assert "library_name: crossdiff" in card.split("---")[1]
    assert f"{measured['best_auroc']:.2f}" in card  # the card reports the measured numbers
    for f in pieces:
        assert f"{f['precision']:.0%}" in card and f"{f['coverage']:.0%}" in card


def test_the_app_reads_the_puzzle_its_prompts_and_how_to_build_the_taught_model(tmp_path, monkeypatch):
    known = known_answer(NAME)
    assert known is not None and known == read_known_answer(SHIPPED)
    assert known.puzzle.startswith("SmolLM2 and a copy of it that was secretly taught")
    assert known.with_it and all(TRIGGER in p for p in known.with_it)
    assert known.without_it and not any(TRIGGER in p for p in known.without_it)
    assert any(BACKDOOR_PHRASE in p for p in known.without_it)  # the phrase alone: does the trigger matter?
    answer = known.answer_markdown()
    assert TRIGGER in answer and BACKDOOR_PHRASE in answer
    assert ("found in pieces" in answer) == (
        known.record["app"]["found_in_pieces"] and not known.record["app"]["found"]
    )
    monkeypatch.setenv("CROSSDIFF_CACHE", str(tmp_path / "empty-cache"))  # no organism built there,
    assert known.missing_model() is None  # but its weight change ships: loading the pair installs it
    monkeypatch.setattr("crossdiff_core.models.SHIPPED_ORGANISMS", tmp_path / "none")  # neither built nor shipped
    missing = known.missing_model()
    assert missing is not None and "`python -m crossdiff_core organism backdoor`" in missing
    assert "2-core CPU" in missing
    assert known_answer("smollm2-135m__gemma3-270m") is None and read_known_answer(tmp_path) is None
