"""Steering: add or remove a latent's decoder direction in the model that owns it while it generates.

`steer(pair, crosscoder, latent, strength, prompt)` generates twice from the latent's model with the
same settings (greedy by default): once untouched (baseline), once with a forward hook on the read
layer's block that edits its output at every position, prompt and generated tokens alike:

- **amplify** (`strength ≥ 0`): `h ← h + strength · d`, where `d` is the latent's decoder row for that
  model de-normalised to raw activation units (`W_dec[j] / scale`). `strength` is in units of the
  latent's activation: the feature index's `max_activation` adds as much as its strongest firing did.
- **suppress** (`strength < 0`, or `mode="suppress"`): `h ← h − |strength| · f_j(h) · d`: where the
  latent fires it removes `|strength|` times its contribution (1 = exactly its contribution).

`f_j(h)` is the crosscoder's activation of the latent computed from this model's activations alone. For
an exclusive latent that is exact (it reads only this model); for a shared latent the other model's
encoder term is left out, so it is an estimate, and the result says so. A shared latent can be steered
in either model (default A); the result's note says which.

The closed-loop check is part of the result: `activation_before` / `activation_after` are the
latent's mean activation over the prompt (first token excluded: attention sink) re-encoded from the
read layer's output before and after the edit (NaN for a one-token prompt).

**Readability.** Every result also says whether the steered text stays readable ("coherent"): its perplexity
under the *unsteered* model, as a multiple of the unsteered continuation's perplexity, is at most
`MAX_PERPLEXITY_RATIO`, and it is not stuck repeating a short piece (`MAX_REPEATS`) more than the unsteered
text is. `steer_readable` chooses the strength by that test: it generates at `STRENGTH_STEPS` multiples of the
feature's largest activation (all in one batch, with the unsteered text) and keeps the strongest readable one.
Too strong a push turns the text into a run of junk tokens ("s¿¿¿¿¿…"); the rule stops below that.
`word_diff` marks the words the steering changed.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from crossdiff_core.activations.paired import ModelPair
from crossdiff_core.analysis import blocks
from crossdiff_core.analysis.generation import continuation_perplexities, generate_ids, prompt_ids
from crossdiff_core.analysis.serialize import json_ready
from crossdiff_core.crosscoder import CrossCoder, check_models
from crossdiff_core.errors import CrossDiffError

MODES = ("amplify", "suppress")

STRENGTH_STEPS = (0.75, 1.5, 2.5, 4.0)
"""The amplify strengths `steer_readable` tries, in multiples of the feature's largest activation on the index
corpus, weakest first. Its largest activation alone (1×) often leaves greedy text unchanged; 5× turned the
continuations of the shipped DFC's top features into junk ("s¿¿¿¿¿…", "pherphercommcomm绕绕绕…") while about
1.5× gave a readable drift, so the steps straddle that range and stop below 5×."""
MAX_PERPLEXITY_RATIO = 4.0
"""Steered text is readable when its perplexity under the unsteered model is at most this multiple of the
unsteered continuation's. Greedy text of the demo models scores a perplexity of about 1.5–4 under its own model;
a readable drift to another topic costs a few times that, junk tokens hundreds of times."""
MAX_REPEATS = 4
"""Steered text is stuck when a piece of 1 to `REPEAT_UNIT` tokens comes this many times in a row ("¿¿¿¿",
"comm comm comm comm") more often than in the unsteered text (small models loop on their own too)."""
REPEAT_UNIT = 3
"""The longest piece, in tokens, that the repeat test looks for."""


@dataclass
class SteerResult:
    """Baseline and steered generations side by side, and the closed-loop check."""

    latent: int
    block: str
    side: str
    """"a" or "b": the model that was steered."""
    model: str
    mode: str
    strength: float
    prompt: str | list
    baseline: str
    steered: str
    activation_before: float
    """Mean activation of the latent over the prompt at the read layer, unedited."""
    activation_after: float
    """The same, re-encoded from the edited activations."""
    note: str
    """What was steered and any caveat (shared latent, one-sided estimate)."""
    multiple: float = float("nan")
    """`strength` as a multiple of the feature's largest activation on the index corpus (NaN when not known)."""
    baseline_perplexity: float = float("nan")
    """Perplexity of the unsteered continuation under the unsteered model."""
    steered_perplexity: float = float("nan")
    """Perplexity of the steered continuation under the unsteered model."""
    longest_repeat: int = 0
    """How many times in a row the steered text repeats its most repeated piece of 1–`REPEAT_UNIT` tokens."""
    baseline_repeat: int = 0
    """The same for the unsteered text."""
    coherent: bool = True
    """Whether the steered text stays readable (see `is_coherent`)."""
    changed_words: float = 0.0
    """Share of the steered text's words that are not in the unsteered text (see `word_diff`)."""
    chosen_by: str = "given"
    """"given" (the caller's strength) or "readability rule" (`steer_readable`)."""
    trials: list[StrengthTrial] = field(default_factory=list)
    """The strengths `steer_readable` tried, weakest first (empty for a given strength)."""

    def to_dict(self) -> dict:
        """Return the result as a JSON-serializable dict."""
        return json_ready(self)


@dataclass
class StrengthTrial:
    """One strength tried by `steer_readable`: the steered text and its readability."""

    strength: float
    multiple: float
    steered: str
    perplexity: float
    perplexity_ratio: float
    longest_repeat: int
    coherent: bool
    changed_words: float
    activation_after: float


def steer(
    pair: ModelPair,
    crosscoder: CrossCoder,
    latent: int,
    strength: float,
    prompt: str | Sequence[dict],
    max_new_tokens: int = 32,
    *,
    model: str | None = None,
    mode: str | None = None,
    chat: bool = False,
    greedy: bool = True,
    seed: int = 0,
) -> SteerResult:
    """Return baseline and steered generations of the latent's model on `prompt` (see the module docstring).

    `model` ("a"/"b") picks the model for a shared latent (default "a"); for an exclusive latent it must be
    its owner. `mode` defaults to "amplify" for `strength ≥ 0` and "suppress" for negative strength.
    """
    mode = mode or ("amplify" if strength >= 0 else "suppress")
    if mode not in MODES:
        raise CrossDiffError(f"unknown steering mode {mode!r}: use amplify or suppress")
    run = _Steering(pair, crosscoder, latent, prompt, max_new_tokens, model, chat, greedy, seed)
    (trial,) = run.trials(mode, [float(strength)], unit=None)
    return run.result(mode, trial, chosen_by="given", trials=[])


def steer_readable(
    pair: ModelPair,
    crosscoder: CrossCoder,
    latent: int,
    unit: float,
    prompt: str | Sequence[dict],
    max_new_tokens: int = 32,
    *,
    model: str | None = None,
    chat: bool = False,
    greedy: bool = True,
    seed: int = 0,
    steps: Sequence[float] = STRENGTH_STEPS,
) -> SteerResult:
    """Amplify the latent at the strongest of `steps` × `unit` whose text stays readable (see the module docstring).

    `unit` is the feature's largest activation on the index corpus (`FeatureIndex.stats(latent)["max_activation"]`).
    All strengths and the unsteered text are generated in one batch (sampled ones one by one, from the same seed).
    When none is readable, the weakest is kept and the result's `coherent` is False.
    """
    if not (math.isfinite(unit) and unit > 0):
        raise CrossDiffError(
            f"feature {latent} never fired on the index corpus, so there is no strength to start from: pass a strength"
        )
    if not steps or any(not (math.isfinite(m) and m > 0) for m in steps):
        raise CrossDiffError(f"steering steps {list(steps)} must be positive multiples")
    run = _Steering(pair, crosscoder, latent, prompt, max_new_tokens, model, chat, greedy, seed)
    trials = run.trials("amplify", [float(m) * unit for m in sorted(steps)], unit=unit)
    readable = [t for t in trials if t.coherent]
    chosen = readable[-1] if readable else trials[0]
    return run.result("amplify", chosen, chosen_by="readability rule", trials=trials)


def is_coherent(perplexity_ratio: float, longest_repeat: int, baseline_repeat: int) -> bool:
    """Return whether steered text is readable: perplexity within `MAX_PERPLEXITY_RATIO` of the unsteered text's
    and not stuck repeating a piece `MAX_REPEATS` times in a row more than the unsteered text does."""
    stuck = longest_repeat >= MAX_REPEATS and longest_repeat > baseline_repeat
    return math.isfinite(perplexity_ratio) and perplexity_ratio <= MAX_PERPLEXITY_RATIO and not stuck


def longest_repeat(ids: Sequence[int], unit: int = REPEAT_UNIT) -> int:
    """Return how many times in a row the most repeated piece of 1 to `unit` tokens comes (1 when nothing repeats)."""
    ids = list(ids)
    best = 1 if ids else 0
    for width in range(1, unit + 1):
        for offset in range(width):
            run, previous = 1, None
            for start in range(offset, len(ids) - width + 1, width):
                piece = ids[start : start + width]
                run = run + 1 if piece == previous else 1
                previous = piece
                best = max(best, run)
    return best


_WORD = re.compile(r"\s+|[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\u3040-\u30ff]|\w+|[^\w\s]")
"""A word for `word_diff`: a run of whitespace, one CJK character (no spaces between words there), a run of
letters and digits, or one other character."""


def word_diff(before: str, after: str) -> list[tuple[str, str]]:
    """Return `after` compared with `before` word by word: `(kind, text)` pieces in reading order, where kind is
    "same", "removed" (only in `before`) or "added" (only in `after`). Joining the "same" and "removed" pieces
    gives `before`; joining "same" and "added" gives `after`."""
    a, b = _WORD.findall(before), _WORD.findall(after)
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(("same", "".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(("removed", "".join(a[i1:i2])))
        if j2 > j1:
            out.append(("added", "".join(b[j1:j2])))
    return out


def changed_share(before: str, after: str) -> float:
    """Return the share of `after`'s words (whitespace aside) that `word_diff` marks as added (0 when it is empty)."""
    pieces = word_diff(before, after)
    added = sum(len(_words(text)) for kind, text in pieces if kind == "added")
    total = len(_words(after))
    return added / total if total else 0.0


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text) if not w.isspace()]


class _Steering:
    """One steering request: the prompt, its model, and the unsteered continuation, generated with the steered ones."""

    def __init__(self, pair, crosscoder, latent, prompt, max_new_tokens, model, chat, greedy, seed):
        self.block = blocks.check_latent(crosscoder, latent)
        check_models(crosscoder, *pair)
        self.crosscoder, self.latent = crosscoder, latent
        self.side, self.note = _choose_side(crosscoder, latent, self.block, model)
        self.loaded = pair[0] if self.side == "a" else pair[1]
        self.prompt = prompt if isinstance(prompt, str) else list(prompt)
        self.ids_1T = prompt_ids(self.loaded, self.prompt, chat=chat)
        self.max_new_tokens, self.greedy, self.seed = max_new_tokens, greedy, seed

    def trials(self, mode: str, strengths: list[float], unit: float | None) -> list[StrengthTrial]:
        """Generate the unsteered text and one steered text per strength (greedy: in one batch); score them."""
        rows = [0.0, *strengths]
        if self.greedy:
            new_ids, before, after = self._generate(mode, rows)
        else:  # sampled: each text on its own from the same seed, so that they differ by the steering alone
            new_ids, before, after = [], [], []
            for strength in rows:
                ids, b, a = self._generate(mode, [strength])
                new_ids, before, after = new_ids + ids, before + b, after + a
        perplexities = continuation_perplexities(self.loaded, self.ids_1T, new_ids)
        repeats = [longest_repeat(ids.tolist()) for ids in new_ids]
        texts = [self.loaded.tokenizer.decode(ids, skip_special_tokens=True) for ids in new_ids]
        self.baseline, self.baseline_perplexity, self.baseline_repeat = texts[0], perplexities[0], repeats[0]
        self.before = before[0]
        out = []
        for row, strength in enumerate(strengths, start=1):
            ratio = perplexities[row] / perplexities[0] if perplexities[0] > 0 else float("nan")
            out.append(
                StrengthTrial(
                    strength=strength,
                    multiple=strength / unit if unit else float("nan"),
                    steered=texts[row],
                    perplexity=perplexities[row],
                    perplexity_ratio=ratio,
                    longest_repeat=repeats[row],
                    coherent=is_coherent(ratio, repeats[row], repeats[0]),
                    changed_words=changed_share(texts[0], texts[row]),
                    activation_after=after[row],
                )
            )
        return out

    def _generate(self, mode: str, strengths: list[float]) -> tuple[list[torch.Tensor], list[float], list[float]]:
        """Return the new ids of one batch, one row per strength, and each row's activation before and after."""
        edit = _LatentEdit(self.crosscoder, self.latent, self.side, mode, strengths)
        ids_BT = self.ids_1T.expand(len(strengths), -1)
        handle = self.loaded.decoder_layers()[self.loaded.layer].register_forward_hook(edit.hook)
        try:
            new_ids = generate_ids(self.loaded, ids_BT, self.max_new_tokens, self.greedy, self.seed)
        finally:
            handle.remove()
        return new_ids, edit.before, edit.after

    def result(self, mode: str, trial: StrengthTrial, chosen_by: str, trials: list[StrengthTrial]) -> SteerResult:
        """Return the request's result with `trial` as the steered text."""
        note = self.note
        if mode == "suppress" and self.block == blocks.BLOCK_SHARED:
            note += "; its activation is estimated from this model's side only"
        return SteerResult(
            latent=self.latent, block=self.block, side=self.side, model=self.loaded.model_id, mode=mode,
            strength=trial.strength if mode == "amplify" else -abs(trial.strength), prompt=self.prompt,
            baseline=self.baseline, steered=trial.steered, activation_before=self.before,
            activation_after=trial.activation_after, note=note, multiple=trial.multiple,
            baseline_perplexity=self.baseline_perplexity, steered_perplexity=trial.perplexity,
            longest_repeat=trial.longest_repeat, baseline_repeat=self.baseline_repeat, coherent=trial.coherent,
            changed_words=trial.changed_words, chosen_by=chosen_by, trials=trials,
        )  # fmt: skip


def _choose_side(crosscoder: CrossCoder, latent: int, block: str, model: str | None) -> tuple[str, str]:
    """Return `(side, note)`: the model to steer and a sentence saying what is steered."""
    if block == blocks.BLOCK_SHARED:
        side = blocks.check_side(model or "a")
        return side, (
            f"latent {latent} is shared by both models; steering it in model {side.upper()} "
            f"(pass model='{'b' if side == 'a' else 'a'}' to steer the other one)"
        )
    owner = "a" if block == blocks.BLOCK_A_EXCLUSIVE else "b"
    if model is not None and blocks.check_side(model) != owner:
        raise CrossDiffError(
            f"latent {latent} is {block}: it has no decoder direction in model {blocks.check_side(model).upper()}; "
            f"steer it in model {owner.upper()}"
        )
    return owner, f"latent {latent} is {block}; steering it in model {owner.upper()}"


class _LatentEdit:
    """The forward hook that adds or removes a latent's direction, recording the closed-loop activations.

    `strengths` has one entry per row of the batch the model runs on (0 leaves that row as it is).
    """

    def __init__(self, crosscoder: CrossCoder, latent: int, side: str, mode: str, strengths: Sequence[float]):
        self.crosscoder = crosscoder
        self.latent = latent
        self.side = side
        self.mode = mode
        self.strengths_B = torch.tensor([float(x) for x in strengths], dtype=torch.float32)
        own = blocks.model_slice(crosscoder, side)
        scale = crosscoder.scale_a if side == "a" else crosscoder.scale_b
        self.direction_D = (blocks.decoder_rows(crosscoder, side)[latent - own.start] / scale).float()
        self.recorded = False
        self.before = [float("nan")] * len(strengths)
        self.after = [float("nan")] * len(strengths)

    def activation(self, h_BTD: torch.Tensor) -> torch.Tensor:
        """Return the latent's activation `[B, T]` from this model's raw activations alone."""
        cc = self.crosscoder
        device = blocks.crosscoder_device(cc)
        x_ND = h_BTD.reshape(-1, h_BTD.shape[-1]).to(device=device, dtype=cc.W_dec_a.dtype)
        zeros_a = torch.zeros(len(x_ND), cc.config.d_a, device=device, dtype=x_ND.dtype)
        zeros_b = torch.zeros(len(x_ND), cc.config.d_b, device=device, dtype=x_ND.dtype)
        x_a_ND, x_b_ND = (x_ND, zeros_b) if self.side == "a" else (zeros_a, x_ND)
        f_NF = cc.activate(cc.pre_activations(*cc.normalize(x_a_ND, x_b_ND)))
        return f_NF[:, self.latent].reshape(h_BTD.shape[:-1]).to(h_BTD.device)

    @torch.no_grad()
    def hook(self, _module, _inputs, output):
        """Return the block output with the latent's direction added or removed at every position."""
        h_BTD = output[0] if isinstance(output, tuple) else output
        direction_D = self.direction_D.to(device=h_BTD.device)
        h32_BTD = h_BTD.float()
        f_BT = self.activation(h32_BTD)
        strengths_B11 = self.strengths_B.to(h_BTD.device)[:, None, None]
        if self.mode == "amplify":
            edited_BTD = h32_BTD + strengths_B11 * direction_D
        else:
            edited_BTD = h32_BTD - strengths_B11.abs() * f_BT[..., None] * direction_D
        if not self.recorded and h_BTD.shape[1] > 1:  # the prompt pass (later passes see one new token)
            self.before = f_BT[:, 1:].mean(dim=1).tolist()
            self.after = self.activation(edited_BTD)[:, 1:].mean(dim=1).tolist()
            self.recorded = True
        edited_BTD = edited_BTD.to(h_BTD.dtype)
        return (edited_BTD, *output[1:]) if isinstance(output, tuple) else edited_BTD
