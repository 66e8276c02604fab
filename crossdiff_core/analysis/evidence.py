"""Per-latent evidence from paired activations: statistics, transfer R², Latent Scaling, tokenizer split.

`Evidence` is fed batches of paired (raw) activations with the window each row comes from, encodes
them with the crosscoder, and accumulates everything the feature index, the ranking and the verdicts
read. The feature index feeds it windows it runs the models over; the organism benchmark feeds it
stored activations. `arrays()` returns the per-latent arrays (see SCORES.md), including:

- `split_share`: the share of a latent's activation mass on rows where the two tokenizers cut the
  text since the previous pair into different numbers of tokens (a multi-token word in one model,
  one token in the other); `Evidence.split_base_rate` is that share over all rows. A latent
  that lives on such rows, far above the base rate, is more likely a tokenizer effect than a belief.
- `context_shift` (only for two models that share a residual basis, `blocks.same_basis`: a model and
  its fine-tune): where a latent fires, how far the two models' activations move apart, consistently.
  With `D = x_b − x_a` (raw activations, centred by the mean difference over all rows), it is
  `‖E_f[D]‖² / E[‖D‖²]`: the squared length of the activation-weighted mean difference in the
  latent's contexts over the mean squared difference per row. It is exactly 0 for two identical
  models, about `1/n_eff` (the latent's effective number of firing rows) for differences that are
  noise in its contexts, and well above 1 when the models differ in the same way wherever it fires:
  a fine-tune that changes how a concept both models hold is written. A crosscoder learns such a
  change inside a shared latent, so the decoder-based one-model component (`components`) is what
  cross-architecture pairs use instead; this measure reads it from the activations directly, where
  the basis is shared and no map between the models needs fitting.
"""

from __future__ import annotations

import numpy as np
import torch

from crossdiff_core.analysis import blocks
from crossdiff_core.analysis.histogram import HISTOGRAM_BINS
from crossdiff_core.analysis.scores import other_over_own, owner_of
from crossdiff_core.analysis.stats import ActivationStats, LatentScaling, TransferRidge
from crossdiff_core.crosscoder import CrossCoder


class Evidence:
    """Accumulates per-latent evidence over batches of paired activations."""

    def __init__(self, crosscoder: CrossCoder, top_contexts: int, test_every: int, ridge_alpha: float):
        F = crosscoder.dict_size
        self.crosscoder = crosscoder.eval()
        self.test_every = test_every
        self.ridge_alpha = ridge_alpha
        self.stats = ActivationStats(F, top_contexts)
        self.ridges = {"a": TransferRidge(crosscoder.config.d_a, F), "b": TransferRidge(crosscoder.config.d_b, F)}
        self.scalings = {
            "a": LatentScaling(crosscoder.W_dec_a, crosscoder.slice_a, F),
            "b": LatentScaling(crosscoder.W_dec_b, crosscoder.slice_b, F),
        }
        self.split_mass_F = torch.zeros(F, dtype=torch.float64)
        self.mass_F = torch.zeros(F, dtype=torch.float64)
        self.n_split = 0
        self.shift = ContextShift(F, crosscoder.config.d_a) if blocks.same_basis(crosscoder) else None

    @torch.no_grad()
    def add(
        self, x_a_ND: torch.Tensor, x_b_ND: torch.Tensor, window_N: torch.Tensor, split_N: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Add paired raw activations from windows `window_N` (non-decreasing); return the latents `[N, F]`."""
        crosscoder = self.crosscoder
        device = blocks.crosscoder_device(crosscoder)
        raw_diff_ND = x_b_ND - x_a_ND if self.shift is not None else None
        x_a_ND, x_b_ND = crosscoder.normalize(x_a_ND.to(device), x_b_ND.to(device))
        f_NF = crosscoder.activate(crosscoder.pre_activations(x_a_ND, x_b_ND))
        x_hat_a_ND, x_hat_b_ND = crosscoder.decode_normalized(f_NF)
        test_N = (window_N % self.test_every) == self.test_every - 1
        self.stats.add(f_NF, window_N)
        self.ridges["a"].add(x_a_ND, f_NF, test_N)
        self.ridges["b"].add(x_b_ND, f_NF, test_N)
        self.scalings["a"].add(x_a_ND, x_hat_a_ND, crosscoder.b_dec_a.detach(), f_NF)
        self.scalings["b"].add(x_b_ND, x_hat_b_ND, crosscoder.b_dec_b.detach(), f_NF)
        f_cpu = f_NF.double().cpu()
        if self.shift is not None:
            self.shift.add(f_NF, raw_diff_ND)
        self.mass_F += f_cpu.sum(0)
        if split_N is not None and split_N.any():
            self.split_mass_F += f_cpu[split_N.cpu()].sum(0)
            self.n_split += int(split_N.sum())
        return f_NF

    @property
    def split_base_rate(self) -> float:
        """Return the fraction of all rows where the two tokenizers cut the text differently."""
        return self.n_split / max(self.stats.n_rows, 1)

    def arrays(self) -> dict[str, np.ndarray]:
        """Return the per-latent statistics, decoder norms, transfer R², Latent Scaling and split arrays."""
        crosscoder, stats = self.crosscoder, self.stats
        norm_a_F, norm_b_F = (n.detach().float().cpu().numpy() for n in crosscoder.decoder_norms())
        exclusive = {side: np.zeros(crosscoder.dict_size, dtype=np.uint8) for side in blocks.SIDES}
        for side in blocks.SIDES:
            exclusive[side][blocks.exclusive_latents(crosscoder, side).numpy()] = 1
        owner = owner_of(exclusive["a"], exclusive["b"], norm_a_F, norm_b_F)
        r2_a = self.ridges["a"].r2(self.ridge_alpha).numpy()
        r2_b = self.ridges["b"].r2(self.ridge_alpha).numpy()
        (err_a, rec_a), (err_b, rec_b) = ((s.numpy() for s in self.scalings[side].scales()) for side in blocks.SIDES)
        with np.errstate(divide="ignore", invalid="ignore"):
            split_share = np.where(self.mass_F.numpy() > 0, self.split_mass_F.numpy() / self.mass_F.numpy(), np.nan)
        return {
            "block": blocks.block_codes(crosscoder).numpy(),
            "exclusive_a": exclusive["a"],
            "exclusive_b": exclusive["b"],
            "owner": owner,
            "frequency": stats.frequency().float().numpy(),
            "n_fires": stats.count_F.numpy(),
            "n_contexts": stats.window_count_F.numpy(),
            "mean_activation": stats.mean_when_active().float().numpy(),
            "max_activation": stats.max_F.numpy(),
            "act_hist": stats.histogram(HISTOGRAM_BINS).numpy().astype(np.int32),
            "dec_norm_a": norm_a_F,
            "dec_norm_b": norm_b_F,
            "relative_norm": blocks.relative_norm(crosscoder).cpu().numpy(),
            "transfer_r2_from_a": r2_a,
            "transfer_r2_from_b": r2_b,
            "transfer_r2": np.where(owner == 0, r2_b, r2_a).astype(np.float32),
            "ls_error_a": err_a,
            "ls_error_b": err_b,
            "ls_recon_a": rec_a,
            "ls_recon_b": rec_b,
            "nu_error": other_over_own(err_a, err_b, owner),
            "nu_recon": other_over_own(rec_a, rec_b, owner),
            "split_share": split_share.astype(np.float32),
            "context_shift": (
                self.shift.values()
                if self.shift is not None
                else np.full(crosscoder.dict_size, np.nan, dtype=np.float32)
            ),
            "top_act": stats.top_act_NF.T.numpy().copy(),
        }


class ContextShift:
    """Accumulates `context_shift` (module docstring): per latent, the activation-weighted sum of `x_b − x_a`."""

    def __init__(self, F: int, d: int):
        self.sum_FD = torch.zeros(F, d, dtype=torch.float32)
        self.mass_F = torch.zeros(F, dtype=torch.float64)
        self.sum_D = torch.zeros(d, dtype=torch.float64)
        self.sum_sq = 0.0
        self.n = 0

    def add(self, f_NF: torch.Tensor, diff_ND: torch.Tensor) -> None:
        """Add the latents `[N, F]` and the raw activation differences `x_b − x_a` `[N, d]` of a batch."""
        f_NF, diff_ND = f_NF.float().cpu(), diff_ND.float().cpu()
        self.sum_FD += f_NF.T @ diff_ND
        self.mass_F += f_NF.double().sum(0)
        self.sum_D += diff_ND.double().sum(0)
        self.sum_sq += float(diff_ND.double().pow(2).sum())
        self.n += len(diff_ND)

    def values(self) -> np.ndarray:
        """Return `context_shift` `[F]` (float32; NaN for latents that never fired)."""
        mean_D = self.sum_D / max(self.n, 1)
        energy = self.sum_sq / max(self.n, 1) - float(mean_D.pow(2).sum())
        fired = self.mass_F > 0
        mean_FD = self.sum_FD.double() / self.mass_F.clamp_min(1e-30)[:, None] - mean_D
        if energy > 1e-9 * self.sum_sq / max(self.n, 1) and energy > 0:
            shift = mean_FD.pow(2).sum(1) / energy
        else:  # the two models' activations are the same (up to rounding): nothing moved anywhere
            shift = torch.zeros_like(self.mass_F)
        return torch.where(fired, shift, torch.nan).float().numpy()


def split_flags(pos_a: np.ndarray, pos_b: np.ndarray, first_a: int, first_b: int) -> np.ndarray:
    """Return bool `[P]`: True where the tokenizers cut the text since the previous pair into different token counts.

    `first_a`/`first_b` are the positions of each model's first content token (after BOS).
    """
    step_a = np.diff(np.asarray(pos_a), prepend=first_a - 1)
    step_b = np.diff(np.asarray(pos_b), prepend=first_b - 1)
    return step_a != step_b


def first_content(tok) -> int:
    """Return the position of the first non-special token of a `TokenizedText` (its length if none)."""
    return next((position for position, special in enumerate(tok.special) if not special), len(tok.special))
