"""One-line explanations of latents written by a chat model from their top contexts (optional).

The explainer is any loaded causal LM, ideally an instruct model (a local one such as `smollm2-135m`,
or a Hub id loaded with `load_model`). It sees half of the latent's top contexts (ranks 1, 3, 5, …: the other half
tests the explanation, see `heldout` and `detection`) with the peak token marked `[[like this]]` and the tokens its
decoder promotes, and answers in one line. The answer is stored in the feature index next to the name of the model
that wrote it. Small models write vague or wrong explanations: they are a hint, never evidence, until their score
says how well they predict where the latent fires.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from crossdiff_core.analysis.config import ExplainConfig
from crossdiff_core.analysis.generation import generate_text, prompt_ids
from crossdiff_core.analysis.heldout import explainer_contexts
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
    side = "a" if index.arrays["owner"][index.check_latent(latent)] == 0 else "b"
    contexts = explainer_contexts(index, latent)[:n_contexts]
    lines = [
        "A hidden feature of a language model is most active on the token marked [[like this]] in these texts:",
        *(f"{i}. {c.marked(side).strip()}" for i, c in enumerate(contexts, 1)),
    ]
    promoted = [show_token(t) for t, _ in index.tokens(latent, side, "promote") if readable(t)][:5]
    if promoted:
        lines.append("It makes these next tokens more likely: " + ", ".join(promoted) + ".")
    lines.append("In one short line, what does this feature detect?")
    return [{"role": "user", "content": "\n".join(lines)}]


def explain_latent(
    index: FeatureIndex,
    explainer: LoadedModel,
    latent: int,
    max_new_tokens: int = ExplainConfig.max_new_tokens,
    n_contexts: int = 5,
) -> str | None:
    """Return the one-line explanation `explainer` writes of a latent, recorded (unscored) in the index; None, and
    nothing recorded, for a latent that never fired."""
    latent = index.check_latent(latent)
    if index.arrays["n_fires"][latent] == 0:
        return None
    ids = prompt_ids(explainer, explanation_messages(index, latent, n_contexts), chat=True)
    text = generate_text(explainer, ids, max_new_tokens)
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")[:MAX_EXPLANATION_CHARS]
    index.set_explanation(latent, line, explainer.model_id)
    return line


def explain_latents(
    index: FeatureIndex,
    explainer: LoadedModel,
    latents: Sequence[int],
    max_new_tokens: int = ExplainConfig.max_new_tokens,
    n_contexts: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> list[Explanation]:
    """Return explanations of `latents` written by `explainer`, recorded in the index (and saved when it has a path).

    Latents that never fired get no explanation. `progress(done, total)` is called after each latent.
    """
    explanations = []
    for done, latent in enumerate(latents, 1):
        line = explain_latent(index, explainer, latent, max_new_tokens, n_contexts)
        if line is not None:
            explanations.append(Explanation(int(latent), line, explainer.model_id))
        if progress is not None:
            progress(done, len(latents))
    if index.path is not None:
        index.save_labels()
    return explanations
