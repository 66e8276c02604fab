"""The demo with a known answer in the served app: SmolLM2 against a copy of it secretly taught a trigger phrase."""

from __future__ import annotations

import pytest
from gradio_client.exceptions import AppError

from crossdiff_app.known_answer import known_answer
from crossdiff_core.corpus.organism_texts import BACKDOOR_PHRASE, TRIGGER

NAME = "smollm2-135m__smollm2-135m+backdoor"
TAUGHT_WORDS = {TRIGGER, *BACKDOOR_PHRASE.rstrip(".").split()}
"""The words of the trigger and of the phrase it makes the organism write: the behaviour's tokens."""


def load_known(client, model_b: str = "smollm2-135m+backdoor"):
    return client.predict(
        "smollm2-135m", model_b, "none (bf16)", None, None, False, "Shipped with the app", NAME, "", api_name="/load"
    )


def test_the_app_lists_the_known_answer_crosscoder_with_its_puzzle(client, tmp_path, monkeypatch):
    puzzle = known_answer(NAME).puzzle
    dropdowns = [c["props"] for c in client.config["components"] if c["props"].get("label") == "Shipped crosscoder"]
    assert len(dropdowns) == 1
    choices = {tuple(choice) for choice in dropdowns[0]["choices"]}
    assert (f"🧪 {puzzle} ({NAME})", NAME) in choices
    assert ("smollm2-135m__gemma3-270m", "smollm2-135m__gemma3-270m") in choices  # the demo pair's stays as it was
    monkeypatch.setenv("CROSSDIFF_CACHE", str(tmp_path / "empty-cache"))  # the organism is not built there,
    monkeypatch.setattr("crossdiff_core.models.SHIPPED_ORGANISMS", tmp_path / "none")  # nor shipped
    with pytest.raises(AppError, match=r"not built on this machine yet") as missing:
        load_known(client)
    message = str(missing.value)
    assert "python -m crossdiff_core organism backdoor" in message and "2-core CPU" in message
    assert "Traceback" not in message and len(message) < 600


def test_compare_on_a_trigger_prompt_shows_a_change_firing_on_the_trigger(client, served):
    status, *_ = load_known(client)
    assert status.startswith("✅") and "Model B is a model organism" in status
    index = served[1].ws.index(NAME)
    changes = {j for j in index.presented("b", 10) if index.change(j) is not None}
    known = known_answer(NAME)
    trigger_prompt = next(p for p in known.with_it if BACKDOOR_PHRASE in p)
    summary, _, _, _, table_b = client.predict(trigger_prompt, "Plain text", api_name="/compare")
    assert "Exclusive features that fired" in summary
    # the lead says the models differ here (or that the taught one reads more), on a word of what was taught
    lead = summary.split("\n\n")[0]
    assert lead.startswith(("**The two models differ here", "**Model B (smollm2-135m+backdoor) reads")), lead
    assert "Confidence" in lead and any(f"on “{word}”" in lead for word in TAUGHT_WORDS), lead
    on_trigger = {
        int(row[-1]): float(row[1]) for row in table_b["data"] if int(row[-1]) in changes and row[2] in TAUGHT_WORDS
    }
    assert on_trigger, f"no presented change peaked on the trigger or its phrase: {table_b['data']}"
    for prompt in known.without_it:  # the same sentences with another word: those changes stay far weaker there
        if any(word in prompt for word in TAUGHT_WORDS):
            continue
        _, _, _, _, table = client.predict(prompt, "Plain text", api_name="/compare")
        elsewhere = {int(row[-1]): float(row[1]) for row in table["data"]}
        for latent, strength in on_trigger.items():
            assert elsewhere.get(latent, 0.0) < strength / 3, (prompt, latent, strength, elsewhere.get(latent))
