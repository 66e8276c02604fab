"""The lead of a prompt diff: what it shows, in one or two plain sentences, and how far to trust it.

It names the model that reads something in the prompt the other lacks (the side whose features of its own
fired, counting first those judged *likely a real difference*), the word its strongest such feature fired on,
and how confident that is, from the verdicts: fair when a likely real difference fired; low when what fired
looks like tokenizer effects, copies of shared features, features unstable across seeds or too rare to judge;
unjudged without a feature index. The other model's own features get a clause of their own. A *change* (a
shared feature that a model and its fine-tune use differently) is presented for both models and has no owner:
when only changes fired, the lead says the two models differ here without naming one.
"""

from __future__ import annotations

from collections import Counter

from crossdiff_core.models import identify

_DOUBT = {
    "tokenizer": "the two models cut those words into different tokens",
    "copy": "the other model predicts them from its own features",
    "unstable": "crosscoders trained with other seeds did not learn them",
    "rare": "they fired too rarely in the training texts to judge",
}
"""Why features that are not likely real differences may mean little, by verdict code (plain words)."""


def word_around(text: str, start: int, end: int) -> str:
    """Return the word (letters, digits, or one run of other characters) that contains the characters [start, end)."""
    if not 0 <= start < end <= len(text):
        return ""
    lo, hi = start, end
    while lo > 0 and text[lo - 1].isalnum() and text[start].isalnum():
        lo -= 1
    while hi < len(text) and text[hi].isalnum() and text[end - 1].isalnum():
        hi += 1
    word = text[lo:hi].strip()
    return word if len(word) <= 30 else word[:29] + "…"


def peak_word(model_diff, hit) -> str:
    """Return the word of the prompt a feature that fired (an `ExclusiveHit`) was strongest on ("" if unknown)."""
    if not 0 <= hit.peak_token < len(model_diff.tokens):
        return ""
    token = model_diff.tokens[hit.peak_token]
    return word_around(model_diff.text, token.start, token.end) or token.text.strip()


def lead(result) -> str:
    """Return the lead of a `PromptDiff` (Markdown, the models named by their short names)."""
    sides = {"A": result.model_a, "B": result.model_b}
    names = {s: f"model {s} ({identify(d.model).display})" for s, d in sides.items()}
    named = {s: "M" + names[s][1:] for s in sides}  # the same at the start of a sentence
    # a change (a shared feature the two models use differently) is presented for both and fires for both
    both = {h.latent for h in result.model_a.exclusive} & {h.latent for h in result.model_b.exclusive}
    changes = [h for h in result.model_b.exclusive if h.latent in both]
    own = {s: [h for h in d.exclusive if h.latent not in both] for s, d in sides.items()}
    real = {s: [h for h in own[s] if _real(h)] for s in sides}
    if not own["A"] and not own["B"] and not changes:
        return (
            "**The two models read this prompt alike**: none of the features only one of them has fired. "
            "That is not proof they are the same; try a prompt on another topic."
        )
    if not own["A"] and not own["B"]:
        return (
            f"**The two models differ here**: {_count(len(changes), 'feature')} that changed between them fired "
            f"(shared features one model uses differently), the strongest{_where(sides['B'], changes)}. "
            f"{_confidence(changes)}"
        )
    # the side with the most likely real differences, then the most features of its own, then the strongest one
    side = max(sides, key=lambda s: (len(real[s]), len(own[s]), _strongest(own[s])))
    other = "B" if side == "A" else "A"
    text = (
        f"**{named[side]} reads something here that {names[other]} lacks**: {_count(len(own[side]), 'feature')} "
        f"of its own fired, the strongest{_where(sides[side], own[side])}. {_confidence(own[side])}"
    )
    if own[other]:
        text += f" {named[other]} has {_count(len(own[other]), 'feature')} of its own here too" + (
            f", {len(real[other])} of them likely real." if real[other] else ", none judged likely real."
        )
    if changes:
        text += f" {_count(len(changes), 'feature')} that changed between the two models fired as well."
    return text


def _real(hit) -> bool:
    return hit.verdict is not None and hit.verdict.code == "real"


def _where(model_diff, hits) -> str:
    """Return " likely real one on “word” (feature N)" for the strongest likely real hit (else the strongest)."""
    real = [h for h in hits if _real(h)]
    best = max(real or hits, key=lambda h: h.activation)
    word = peak_word(model_diff, best)
    return f"{' likely real one' if real else ''}{f' on “{word}”' if word else ''} (feature {best.latent})"


def _confidence(hits) -> str:
    judged = [h for h in hits if h.verdict is not None]
    real = [h for h in hits if _real(h)]
    if not judged:
        return "*Not judged*: this crosscoder has no feature index, so treat it as a lead to check, not a finding."
    if real:
        return (
            f"**Confidence: fair**: {_count(len(real), 'of them is', 'of them are')} judged likely a real difference "
            "from what the feature index measured. Check by steering before you rely on it."
        )
    code, _ = Counter(h.verdict.code for h in judged).most_common(1)[0]
    return f"**Confidence: low**: none is judged likely a real difference; most may mean little, as {_DOUBT[code]}."


def _strongest(hits) -> float:
    return max((h.activation for h in hits), default=0.0)


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one}" if n == 1 else f"{n} {many or one + 's'}"
