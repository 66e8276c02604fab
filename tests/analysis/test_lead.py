"""The lead sentence of a prompt diff: which model reads something the other lacks, where, and how confident."""

from __future__ import annotations

from crossdiff_core.analysis.lead import lead, word_around
from crossdiff_core.analysis.prompt_diff import ExclusiveHit, ModelDiff, PromptDiff, TokenDiff
from crossdiff_core.analysis.verdict import VERDICTS, Verdict

TEXT = "The tide zephyrine rises."


def view(side: str, model: str, hits: list[ExclusiveHit]) -> ModelDiff:
    words = [(0, 3), (3, 8), (8, 18), (18, 24), (24, 25)]
    tokens = [TokenDiff(i, TEXT[s:e], s, e, False, True, i, 0.0) for i, (s, e) in enumerate(words)]
    return ModelDiff(side, model, TEXT, tokens, list(range(len(tokens))), 1.0, False, hits)


def hit(latent: int, activation: float, peak: int, code: str | None) -> ExclusiveHit:
    verdict = Verdict(code, VERDICTS[code], "why") if code else None
    name = f"feature {latent}"
    return ExclusiveHit(latent, activation, activation / 2, 2, peak, name, name, verdict=verdict)


def diff_of(hits_a, hits_b) -> PromptDiff:
    a, b = view("a", "smollm2-135m", hits_a), view("b", "smollm2-135m+backdoor", hits_b)
    return PromptDiff("text", TEXT, a, b, 5, [3, 8, 18, 24, 25])


def test_the_lead_names_the_model_with_a_likely_real_difference_and_its_word():
    text = lead(diff_of([hit(1, 9.0, 1, "tokenizer")], [hit(7, 2.0, 4, "rare"), hit(8, 3.0, 2, "real")]))
    # B wins on its likely real feature although A's feature is stronger; the strongest real one is named
    assert text.startswith("**Model B (smollm2-135m+backdoor) reads something here that model A")
    assert "2 features of its own fired, the strongest likely real one on “zephyrine” (feature 8)" in text
    assert "Confidence: fair" in text and "1 of them is judged likely a real difference" in text
    assert "Model A (SmolLM2-135M-Instruct) has 1 feature of its own here too, none judged likely real." in text


def test_a_lead_without_likely_real_features_says_why_they_may_mean_little():
    text = lead(diff_of([hit(1, 4.0, 1, "tokenizer"), hit(2, 1.0, 0, "tokenizer"), hit(3, 1.0, 0, "copy")], []))
    assert text.startswith("**Model A (SmolLM2-135M-Instruct) reads something here that model B")
    assert "the strongest on “tide” (feature 1)" in text and "Confidence: low" in text
    assert "cut those words into different tokens" in text  # the most common verdict is the reason given
    assert "Model B" not in text.split("lacks")[1]  # B has no feature of its own: no clause for it


def test_a_lead_without_verdicts_or_without_features():
    assert "*Not judged*" in lead(diff_of([], [hit(4, 1.0, 3, None)]))
    alike = lead(diff_of([], []))
    assert alike.startswith("**The two models read this prompt alike**") and "not proof" in alike


def test_word_around_finds_the_whole_word():
    assert (
        word_around(TEXT, 10, 12) == "zephyrine" and word_around(TEXT, 24, 25) == "." and word_around(TEXT, 5, 3) == ""
    )


def test_changes_fire_for_both_models_and_have_no_owner():
    change = [hit(5, 6.0, 2, "real"), hit(6, 2.0, 4, "real")]
    text = lead(diff_of(list(change), list(change)))
    assert text.startswith("**The two models differ here**: 2 features that changed between them fired")
    assert "the strongest likely real one on “zephyrine” (feature 5)" in text and "Confidence: fair" in text
    mixed = lead(diff_of(list(change), [*change, hit(9, 1.0, 1, "rare")]))
    assert (
        mixed.startswith("**Model B (smollm2-135m+backdoor) reads something here") and "1 feature of its own" in mixed
    )
    assert "2 features that changed between the two models fired as well." in mixed and "Confidence: low" in mixed
