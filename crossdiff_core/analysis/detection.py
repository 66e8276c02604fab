"""Detection scoring of explanations, as EleutherAI's delphi scores them: from the explanation alone, a scorer model
judges texts as ones where the latent fires or not.

The scorer reads the explanation and one text at a time (`detection_messages`), and instead of generating an
answer its next-token logits are read once, in one batched forward pass: the margin `logit("Yes") − logit("No")`
ranks the texts from "surely fires" to "surely not". A small scorer leans on the text itself (it may answer "No" to
anything in Chinese whatever the explanation says), so each margin is calibrated by the margin the same text gets
with a content-free explanation (`CONTENT_FREE`, as in Zhao et al. 2021, "Calibrate before use"): what is left is
what the explanation adds. The score is the AUROC of the calibrated margins over the latent's held-out texts where
it fires against texts where it is silent (`heldout`): the chance that a text where the latent fires is ranked above
one where it is silent, 0.5 for a coin toss, 1 when the explanation tells them apart perfectly. A shuffled-explanation
baseline is reported next to the scores (`explanation_scores`): the score explanations of other latents get.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from crossdiff_core.activations.paired import pad_id
from crossdiff_core.analysis.generation import prompt_ids
from crossdiff_core.errors import CrossDiffError
from crossdiff_core.models import LoadedModel

MAX_TEXT_CHARS = 400
"""A text is cut to this many characters before the scorer reads it (a top context is far shorter)."""
BATCH_TEXTS = 16
"""Texts the scorer reads per forward pass."""
CONTENT_FREE = "N/A"
"""The explanation whose margins calibrate every other's: it says nothing about any text."""


def detection_messages(explanation: str, text: str) -> list[dict[str, str]]:
    """Return the chat messages that ask whether the feature an explanation describes fires in a text."""
    question = (
        f"A feature of a language model fires on: {explanation.strip()}\n\n"
        f'Text: "{text[:MAX_TEXT_CHARS]}"\n\n'
        "Does the feature fire somewhere in this text? Answer Yes or No."
    )
    return [{"role": "user", "content": question}]


class DetectionScorer:
    """A model that judges from an explanation whether its latent fires in texts; remembers each text's
    content-free margin, so a text shared by several latents (a silent crop) is calibrated once."""

    def __init__(self, model: LoadedModel):
        self.model = model
        ids = [model.tokenizer.encode(word, add_special_tokens=False) for word in ("Yes", "No")]
        if not all(ids) or ids[0][0] == ids[1][0]:
            raise CrossDiffError(f"{model.model_id} cannot answer Yes or No in one token: choose another scorer model")
        self._yes, self._no = ids[0][0], ids[1][0]
        self._content_free: dict[str, float] = {}

    @property
    def model_id(self) -> str:
        """Return the scorer model's name, as recorded next to each score."""
        return self.model.model_id

    def margins(self, explanation: str, texts: Sequence[str]) -> np.ndarray:
        """Return, per text, the calibrated margin: how much more the scorer answers "Yes" to "does the feature fire
        in this text?" with this explanation than with `CONTENT_FREE`."""
        new = [text for text in dict.fromkeys(texts) if text not in self._content_free]
        self._content_free.update(zip(new, self._raw_margins(CONTENT_FREE, new).tolist()))
        baseline = np.array([self._content_free[text] for text in texts], dtype=np.float32)
        return self._raw_margins(explanation, texts) - baseline

    def score(self, explanation: str, firing: Sequence[str], silent: Sequence[str]) -> float:
        """Return how well an explanation predicts where its latent fires: the AUROC of the calibrated margins on
        texts where it fires against texts where it is silent (0.5: chance, 1: perfect; NaN without both kinds)."""
        margins = self.margins(explanation, [*firing, *silent])
        return auroc(margins[: len(firing)], margins[len(firing) :])

    @torch.no_grad()
    def _raw_margins(self, explanation: str, texts: Sequence[str]) -> np.ndarray:
        """Return, per text, `logit("Yes") − logit("No")` after the question, in batches of `BATCH_TEXTS`."""
        model = self.model
        prompts = [prompt_ids(model, detection_messages(explanation, text), chat=True)[0] for text in texts]
        margins = [torch.zeros(0)]
        for first in range(0, len(prompts), BATCH_TEXTS):
            batch = prompts[first : first + BATCH_TEXTS]
            ids_BT = torch.full((len(batch), max(len(p) for p in batch)), pad_id(model.tokenizer), dtype=torch.long)
            mask_BT = torch.zeros_like(ids_BT)
            for row, ids in enumerate(batch):
                ids_BT[row, : len(ids)] = ids
                mask_BT[row, : len(ids)] = 1
            logits_BTV = model.model(ids_BT.to(model.device), attention_mask=mask_BT.to(model.device)).logits
            last_BV = logits_BTV[torch.arange(len(batch)), mask_BT.sum(1).to(model.device) - 1].float()
            margins.append((last_BV[:, self._yes] - last_BV[:, self._no]).cpu())
        return torch.cat(margins).numpy()


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Return the chance that a positive value ranks above a negative one (ties count half); NaN if either is empty."""
    pos, neg = np.asarray(positive, np.float64)[:, None], np.asarray(negative, np.float64)[None, :]
    if not pos.size or not neg.size:
        return float("nan")
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))
