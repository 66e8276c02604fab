"""The app names a feature by its explanation only when the explanation predicts well where the feature fires."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from crossdiff_app.render import card_markdown, hits_frame
from crossdiff_core.analysis.index import load_index
from crossdiff_core.analysis.labels import UNCLEAR
from crossdiff_core.analysis.prompt_diff import ExclusiveHit

SHIPPED = Path(__file__).resolve().parents[2] / "pretrained" / "smollm2-135m__gemma3-270m"


def test_compare_and_feature_pages_call_a_low_scored_explanation_unclear():
    index = load_index(SHIPPED)  # changed in memory only
    clear, unclear = index.ranked("a", 2)
    for latent, score in ((clear, 0.8), (unclear, 0.55)):
        index.set_explanation(latent, f"explanation {latent}", "explainer")
        index.set_explanation_score(latent, score, "scorer")
    page = card_markdown(index.card(unclear, 1), index)
    assert f"## Feature {unclear}: {UNCLEAR} · " in page
    assert f"explanation {unclear}" in page and "predicts where the feature fires with a score of 0.55" in page
    assert f"## Feature {clear}: explanation {clear}\n" in card_markdown(index.card(clear, 1), index)
    hits = [ExclusiveHit(j, 1.0, 1.0, 1, 0, index.labels[j], index.name(j)) for j in (clear, unclear)]
    frame = hits_frame(SimpleNamespace(exclusive=hits, tokens=[], text=""))
    assert list(frame["Feature"]) == [f"explanation {clear}", f"{UNCLEAR} · {index.labels[unclear]}"]
