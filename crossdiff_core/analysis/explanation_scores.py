"""Explain latents and score the explanations, kept in the feature index; and the shuffled-explanation baseline.

`explain_and_score` has the explainer write each latent's explanation (`explain`) and the scorer judge it on the
latent's held-out texts (`heldout`, `detection`); the index records text, author, score and scorer, and is saved
after each latent, so a stopped run keeps what it finished and the same run again skips what is done.
`score_latents` scores given explanation texts, and `shuffled_baseline` the same texts moved to other latents:
what the scorer gives explanations that describe some other latent, the score a real explanation must beat.
`compare_with_chance` runs that baseline on every explanation one explainer wrote and one scorer judged, and records
in each whether they beat it (`labels.BEATS_CHANCE`): when they do not, none of them names its latent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from crossdiff_core.analysis.config import ExplainConfig
from crossdiff_core.analysis.detection import DetectionScorer
from crossdiff_core.analysis.explain import explain_latent
from crossdiff_core.analysis.heldout import SilentPool, held_out_texts
from crossdiff_core.analysis.index import FeatureIndex
from crossdiff_core.analysis.labels import BEATS_CHANCE
from crossdiff_core.errors import Cancelled, CrossDiffError
from crossdiff_core.models import LoadedModel


def scoring_texts(
    index: FeatureIndex, pool: SilentPool, latent: int, config: ExplainConfig
) -> tuple[list[str], list[str]] | None:
    """Return `(firing, silent)`: the held-out texts a latent's explanation is scored on, or None when it has fewer
    than `config.min_positives` held-out activating contexts or no silent crop."""
    firing = [text for text in held_out_texts(index, latent) if text]
    silent = [text for text in pool.silent_texts(latent, config.negatives, config.seed) if text]
    return (firing, silent) if len(firing) >= config.min_positives and silent else None


def score_latents(
    index: FeatureIndex,
    scorer: DetectionScorer,
    pool: SilentPool,
    explanations: Mapping[int, str],
    config: ExplainConfig,
    progress: Callable[[int, int], None] | None = None,
) -> dict[int, float]:
    """Return the detection score of each given explanation text (latent → text) on its latent's held-out texts
    (NaN when the latent has too few); nothing is recorded. `progress(done, total)` is called after each latent."""
    scores = {}
    for done, (latent, text) in enumerate(explanations.items(), 1):
        texts = scoring_texts(index, pool, latent, config)
        scores[latent] = scorer.score(text, *texts) if texts is not None else float("nan")
        if progress is not None:
            progress(done, len(explanations))
    return scores


def shuffled(explanations: Mapping[int, str], seed: int = 0) -> dict[int, str]:
    """Return the explanation texts moved across latents so that none keeps its own (a random cycle)."""
    if len(explanations) < 2:
        raise CrossDiffError("a shuffled baseline needs explanations of at least two latents: explain more latents")
    order = [int(j) for j in np.random.default_rng(seed).permutation(sorted(explanations))]
    return {latent: explanations[order[(i + 1) % len(order)]] for i, latent in enumerate(order)}


def shuffled_baseline(
    index: FeatureIndex,
    scorer: DetectionScorer,
    pool: SilentPool,
    explanations: Mapping[int, str],
    config: ExplainConfig,
    progress: Callable[[int, int], None] | None = None,
) -> dict[int, float]:
    """Return each latent's detection score with another latent's explanation (`shuffled`): the chance level."""
    return score_latents(index, scorer, pool, shuffled(explanations, config.seed), config, progress)


@dataclass(frozen=True)
class ChanceCheck:
    """How one explainer's scored explanations compare with the same explanations moved to other latents."""

    n: int
    """Explanations compared (each scored with its own text and with another latent's)."""
    mean_score: float
    """Their mean detection score."""
    shuffled_score: float
    """Their mean detection score with another latent's explanation: chance for this scorer and these latents."""
    stderr: float
    """Standard error of the mean paired difference (own − shuffled)."""
    beats: bool
    """Whether `mean_score` exceeds `shuffled_score` by more than `ExplainConfig.chance_stderrs` standard errors."""
    shuffled: dict[int, float]
    """Each compared latent's score with another latent's explanation."""

    def words(self) -> str:
        """Return the comparison in plain words, for the command line."""
        verdict = (
            "better than chance"
            if self.beats
            else "no better than chance, so none of them names its latent; explain with a stronger chat model"
        )
        return (
            f"{self.n} explanations score {self.mean_score:.3f} on average against {self.shuffled_score:.3f} for the "
            f"same explanations given to other latents (standard error {self.stderr:.3f}): {verdict}"
        )


def chance_check(scores: Mapping[int, float], shuffled: Mapping[int, float], stderrs: float) -> ChanceCheck | None:
    """Return how explanation scores (latent → score) compare with the same latents' shuffled-baseline scores, over
    the latents where both are finite; None when fewer than two are."""
    paired = [
        latent for latent in scores if math.isfinite(scores[latent]) and math.isfinite(shuffled.get(latent, math.nan))
    ]
    if len(paired) < 2:
        return None
    n = len(paired)
    differences = [scores[latent] - shuffled[latent] for latent in paired]
    mean_difference = sum(differences) / n
    stderr = math.sqrt(sum((d - mean_difference) ** 2 for d in differences) / (n - 1) / n)
    return ChanceCheck(
        n=n,
        mean_score=sum(scores[latent] for latent in paired) / n,
        shuffled_score=sum(shuffled[latent] for latent in paired) / n,
        stderr=stderr,
        beats=mean_difference > stderrs * stderr,
        shuffled={latent: shuffled[latent] for latent in paired},
    )


def compare_with_chance(
    index: FeatureIndex,
    scorer: DetectionScorer,
    pool: SilentPool,
    explainer_id: str,
    config: ExplainConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ChanceCheck | None:
    """Return how the explanations `explainer_id` wrote and `scorer` judged compare with the shuffled baseline, and
    record the verdict in each of them (`BEATS_CHANCE`; call `save_labels` to persist); None, recording nothing,
    when fewer than two such explanations have a finite score."""
    config = config or ExplainConfig()
    own = {
        latent: entry["text"]
        for latent, entry in index.explanations.items()
        if entry.get("model") == explainer_id
        and entry.get("scorer") == scorer.model_id
        and math.isfinite(index.explanation_score(latent))
    }
    if len(own) < 2:
        return None
    scores = {latent: index.explanation_score(latent) for latent in own}
    check = chance_check(scores, shuffled_baseline(index, scorer, pool, own, config, progress), config.chance_stderrs)
    if check is None:
        return None
    for latent in own:
        index.explanations[latent][BEATS_CHANCE] = check.beats
    return check


def explain_and_score(
    index: FeatureIndex,
    explainer: LoadedModel,
    scorer: DetectionScorer,
    pool: SilentPool,
    latents: Sequence[int],
    config: ExplainConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[int, float]:
    """Return the score of each latent's explanation (NaN: too few held-out texts), explaining and scoring the
    latents not yet explained by `explainer` and scored by `scorer`, and recording both in the index.

    Latents that never fired are left out. The index is saved after each latent when it has a path.
    `should_stop()` is asked before each latent; once it returns True, `Cancelled` is raised (what is done is kept).
    `progress(done, total)` is called after each latent.
    """
    config = config or ExplainConfig()
    config.validate()
    scores = {}
    for done, latent in enumerate(latents, 1):
        if should_stop is not None and should_stop():
            raise Cancelled
        entry = index.explanations.get(latent) or {}
        texts = scoring_texts(index, pool, latent, config)
        done_before = entry.get("model") == explainer.model_id and (
            texts is None or entry.get("scorer") == scorer.model_id
        )
        if done_before:
            scores[latent] = index.explanation_score(latent)
        elif explain_latent(index, explainer, latent, config.max_new_tokens) is not None:
            scores[latent] = float("nan")
            if texts is not None:
                scores[latent] = scorer.score(index.explanations[latent]["text"], *texts)
                index.set_explanation_score(latent, scores[latent], scorer.model_id)
            if index.path is not None:
                index.save_labels()
        if progress is not None:
            progress(done, len(latents))
    return scores
