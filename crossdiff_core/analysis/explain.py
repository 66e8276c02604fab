"""One-line explanations of latents written by a chat model from their top contexts (optional).

The explainer is any loaded causal LM, ideally an instruct model (a local one such as `smollm2-135m`,
or a Hub id loaded with `load_model`). It sees half of the latent's top contexts (ranks 1, 3, 5, …: the other half
tests the explanation, see `heldout` and `detection`) with the peak token marked `[[like this]]` and the marked
tokens listed, after two worked examples (`EXAMPLES`), and answers in one line, which is started for it
(`ANSWER_START`). The examples, the list and the started answer are there for small models: without them
SmolLM2-135M-Instruct opened with lines such as "The feature detects the following:" or copied the subword tokens the
latent's decoder promotes (left out of the prompt for that reason). The answer is stored in the feature index next to
the name of the model that wrote it. Small models write vague or wrong explanations: they are a hint, never evidence,
until their score says how well they predict where the latent fires.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from crossdiff_core.analysis.config import ExplainConfig
from crossdiff_core.analysis.generation import generate_text, prompt_ids
from crossdiff_core.analysis.heldout import explainer_contexts
from crossdiff_core.analysis.index import FeatureIndex
from crossdiff_core.models import LoadedModel

MAX_EXPLANATION_CHARS = 200
ANSWER_START = "It fires on"
"""The words the explainer's answer starts with; the explanation is the line it writes after them."""
EXAMPLES = (
    (
        ("We flew from Berlin to [[Paris]] last May.", "The museum in [[London]] was closed.",
         "She grew up near [[Madrid]] and moved away."),
        ("Paris", "London", "Madrid"),
        'It fires on "Paris", "London", "Madrid": capital cities.',
    ),
    (("他每天早上[[喝]]一杯咖啡。", "我不想[[喝]]茶。", "孩子们在[[喝]]牛奶。"), ("喝",), 'It fires on "喝".'),
)  # fmt: skip
"""Worked examples shown before the question: marked texts, the marked tokens, and the answer."""


@dataclass
class Explanation:
    """A chat model's explanation of one latent."""

    latent: int
    text: str
    model: str


def _question(texts: Sequence[str], marked: Sequence[str]) -> str:
    """Return the question about one latent: its marked texts, the marked tokens (each once), what it fires on."""
    return "\n".join([
        "A hidden feature of a language model is most active on the token marked [[like this]] in these texts:",
        *(f"{i}. {text}" for i, text in enumerate(texts, 1)),
        "Marked: " + ", ".join(f'"{token}"' for token in dict.fromkeys(marked)),
        "In one short line: what does this feature fire on?",
    ])  # fmt: skip


def explanation_messages(index: FeatureIndex, latent: int, n_contexts: int = 5) -> list[dict[str, str]]:
    """Return the chat messages that ask for a one-line explanation of a latent from its evidence."""
    side = "a" if index.arrays["owner"][index.check_latent(latent)] == 0 else "b"
    contexts = explainer_contexts(index, latent)[:n_contexts]
    marked = [t.text.strip() for c in contexts for t in (c.tokens_a if side == "a" else c.tokens_b) if t.peak]
    messages = []
    for texts, tokens, answer in EXAMPLES:
        messages += [{"role": "user", "content": _question(texts, tokens)}, {"role": "assistant", "content": answer}]
    question = _question([c.marked(side).strip() for c in contexts], [t for t in marked if t])
    return [*messages, {"role": "user", "content": question}]


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
    opening = ANSWER_START if explainer.tokenizer.decode(ids[0, -1:]).endswith(("\n", " ")) else " " + ANSWER_START
    started = torch.cat([ids, torch.tensor([explainer.tokenizer.encode(opening, add_special_tokens=False)])], dim=1)
    text = generate_text(explainer, started, max_new_tokens)
    line = next((part.strip(" :") for part in text.splitlines() if part.strip(" :")), "")[:MAX_EXPLANATION_CHARS]
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
