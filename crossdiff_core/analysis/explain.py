"""One-line explanations of latents written by a chat model from their top contexts (optional).

The explainer is any loaded causal LM, ideally an instruct model (a local one such as `smollm2-135m`,
or a Hub id loaded with `load_model`). It sees the latent's strongest contexts with the peak token
marked `[[like this]]` and the tokens its decoder promotes, and answers in one line. The answer is
stored in the feature index next to the name of the model that wrote it. Small models write vague or
wrong explanations: they are a hint, never evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from crossdiff_core.analysis.generation import generate_text, prompt_ids
from crossdiff_core.analysis.index import FeatureIndex
from crossdiff_core.analysis.labels import readable, show_token
from crossdiff_core.models import LoadedModel

MAX_EXPLANATION_CHARS = 200


@dataclass
class Explanation:
    """A chat model's explanation of one latent."""

    latent: int
    text: str
    model: str


def explanation_messages(index: FeatureIndex, latent: int, n_contexts: int = 5) -> list[dict[str, str]]:
    """Return the chat messages that ask for a one-line explanation of a latent from its evidence."""
    card = index.card(latent, n_contexts)
    side = "a" if card.stats["owner"] == 0 else "b"
    lines = [
        "A hidden feature of a language model is most active on the token marked [[like this]] in these texts:",
        *(f"{i}. {c.marked(side).strip()}" for i, c in enumerate(card.contexts, 1)),
    ]
    promoted = [show_token(t) for t, _ in card.promoted.get(side, []) if readable(t)][:5]
    if promoted:
        lines.append("It makes these next tokens more likely: " + ", ".join(promoted) + ".")
    lines.append("In one short line, what does this feature detect?")
    return [{"role": "user", "content": "\n".join(lines)}]


def explain_latents(
    index: FeatureIndex,
    explainer: LoadedModel,
    latents: Sequence[int],
    max_new_tokens: int = 40,
    n_contexts: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> list[Explanation]:
    """Return explanations of `latents` written by `explainer`, recorded in the index (and saved when it has a path).

    Latents that never fired get no explanation. `progress(done, total)` is called after each latent.
    """
    explanations = []
    for done, latent in enumerate(latents, 1):
        latent = index.check_latent(latent)
        if index.arrays["n_fires"][latent] > 0:
            ids = prompt_ids(explainer, explanation_messages(index, latent, n_contexts), chat=True)
            text = generate_text(explainer, ids, max_new_tokens)
            line = next((part.strip() for part in text.splitlines() if part.strip()), "")[:MAX_EXPLANATION_CHARS]
            index.set_explanation(latent, line, explainer.model_id)
            explanations.append(Explanation(latent, line, explainer.model_id))
        if progress is not None:
            progress(done, len(latents))
    if index.path is not None:
        index.save_labels()
    return explanations
