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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from crossdiff_core.activations.paired import ModelPair
from crossdiff_core.analysis import blocks
from crossdiff_core.analysis.generation import generate_text, prompt_ids
from crossdiff_core.analysis.serialize import json_ready
from crossdiff_core.crosscoder import CrossCoder, check_models
from crossdiff_core.errors import CrossDiffError

MODES = ("amplify", "suppress")


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

    def to_dict(self) -> dict:
        """Return the result as a JSON-serializable dict."""
        return json_ready(self)


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
    block = blocks.check_latent(crosscoder, latent)
    mode = mode or ("amplify" if strength >= 0 else "suppress")
    if mode not in MODES:
        raise CrossDiffError(f"unknown steering mode {mode!r}: use amplify or suppress")
    check_models(crosscoder, *pair)
    side, note = _choose_side(crosscoder, latent, block, model)
    loaded = pair[0] if side == "a" else pair[1]
    ids_1T = prompt_ids(loaded, prompt if isinstance(prompt, str) else list(prompt), chat=chat)
    edit = _LatentEdit(crosscoder, latent, side, mode, float(strength))
    baseline = generate_text(loaded, ids_1T, max_new_tokens, greedy, seed)
    handle = loaded.decoder_layers()[loaded.layer].register_forward_hook(edit.hook)
    try:
        steered = generate_text(loaded, ids_1T, max_new_tokens, greedy, seed)
    finally:
        handle.remove()
    if mode == "suppress" and block == blocks.BLOCK_SHARED:
        note += "; its activation is estimated from this model's side only"
    return SteerResult(
        latent=latent, block=block, side=side, model=loaded.model_id, mode=mode, strength=float(strength),
        prompt=prompt if isinstance(prompt, str) else list(prompt), baseline=baseline, steered=steered,
        activation_before=edit.before, activation_after=edit.after, note=note,
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
    """The forward hook that adds or removes a latent's direction, recording the closed-loop activations."""

    def __init__(self, crosscoder: CrossCoder, latent: int, side: str, mode: str, strength: float):
        self.crosscoder = crosscoder
        self.latent = latent
        self.side = side
        self.mode = mode
        self.strength = strength
        own = blocks.model_slice(crosscoder, side)
        scale = crosscoder.scale_a if side == "a" else crosscoder.scale_b
        self.direction_D = (blocks.decoder_rows(crosscoder, side)[latent - own.start] / scale).float()
        self.recorded = False
        self.before = float("nan")
        self.after = float("nan")

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
        if self.mode == "amplify":
            edited_BTD = h32_BTD + self.strength * direction_D
        else:
            edited_BTD = h32_BTD - abs(self.strength) * f_BT[..., None] * direction_D
        if not self.recorded and h_BTD.shape[1] > 1:  # the prompt pass (later passes see one new token)
            self.before = float(f_BT[:, 1:].mean())
            self.after = float(self.activation(edited_BTD)[:, 1:].mean())
            self.recorded = True
        edited_BTD = edited_BTD.to(h_BTD.dtype)
        return (edited_BTD, *output[1:]) if isinstance(output, tuple) else edited_BTD
