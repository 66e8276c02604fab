"""Synthetic paired activations with a known answer, and how well a crosscoder recovers it.

Two "models" of widths `d_a ≠ d_b` write sparse true features into their activations. True
features are ordered like crosscoder latents, `[A-only | shared | B-only]`: a shared feature has
one (independent, random) direction in each model and fires in both with the same coefficient; an
A-only feature exists only in model A, a B-only one only in B. Statistics follow what
sparse-dictionary work sees in real activations: power-law firing frequencies spread over the
feature kinds, a few active features per token, log-normal magnitudes, per-model feature norms,
and isotropic Gaussian noise.

`SyntheticPair` is a streaming `BatchSource`: every batch is generated on demand from a seed
derived from `(config.seed, seed, batch index)`, so streams are deterministic, resumable and
unlimited, and a held-out stream never overlaps training. `recovery_report` scores a trained
crosscoder against the true directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch

from crossdiff_core.analysis.blocks import relative_norm
from crossdiff_core.crosscoder.model import CrossCoder

RECOVERY_COSINE = 0.9
"""A true feature counts as recovered when a decoder direction has at least this cosine with it."""

RELATIVE_NORM_EXCLUSIVE = 0.9
"""A standard-crosscoder latent looks A-exclusive when ‖d_a‖/(‖d_a‖+‖d_b‖) > this, B-exclusive when < 1 − this."""

_DICTIONARY_STREAM = 0
_TRAIN_STREAM = 1
_HELD_OUT_STREAM = 2
_NORM_SAMPLE_TOKENS = 32_768
_SEED_MODULUS = 2**61 - 1
_SEED_SALT = 0x5EED_CA11_AB


@dataclass
class SyntheticConfig:
    """The shape and statistics of a synthetic model pair."""

    d_a: int = 96
    """Width of model A's activations."""

    d_b: int = 128
    """Width of model B's activations."""

    n_features: int = 256
    """Number of true features over all three kinds."""

    a_only: float = 0.03
    """Fraction of the true features that exist only in model A."""

    b_only: float = 0.03
    """Fraction of the true features that exist only in model B."""

    features_per_token: float = 4.0
    """Mean number of true features active on a token (the sum of all firing probabilities)."""

    frequency_exponent: float = 1.0
    """Firing probability of the feature of frequency rank r is ∝ r^(−exponent) (Zipf-like)."""

    frequency_range: float = 20.0
    """Ratio of the most to the least frequent feature's firing probability."""

    magnitude_sigma: float = 0.4
    """Log-normal spread of a firing feature's coefficient (median 1)."""

    norm_sigma: float = 0.3
    """Log-normal spread of a true direction's norm, drawn independently per model."""

    shared_jitter: float = 0.05
    """Log-normal spread of model B's coefficient of a shared feature around model A's (0 = identical)."""

    noise: float = 0.05
    """Variance of the isotropic Gaussian noise, as a fraction of the mean squared signal norm (per model)."""

    seed: int = 0
    """Seeds the true directions, frequencies and norms; batch streams also depend on it."""

    @property
    def n_a_only(self) -> int:
        """Return the number of A-only true features."""
        return round(self.a_only * self.n_features)

    @property
    def n_b_only(self) -> int:
        """Return the number of B-only true features."""
        return round(self.b_only * self.n_features)

    @property
    def n_shared(self) -> int:
        """Return the number of shared true features."""
        return self.n_features - self.n_a_only - self.n_b_only


@dataclass
class GroundTruth:
    """The true features of a synthetic pair, ordered `[A-only | shared | B-only]`."""

    dirs_a_GD: torch.Tensor
    """Model A's unit direction of each feature it has: A-only then shared, [n_a_only + n_shared, d_a]."""

    dirs_b_GD: torch.Tensor
    """Model B's unit direction of each feature it has: shared then B-only, [n_shared + n_b_only, d_b]."""

    norm_a_G: torch.Tensor
    """Norm of each of model A's feature vectors (its direction × norm is what is written)."""

    norm_b_G: torch.Tensor
    """Norm of each of model B's feature vectors."""

    frequency_G: torch.Tensor
    """Firing probability per token of every feature, [n_features]."""

    n_a_only: int
    """Number of A-only features (the first rows of `dirs_a_GD`)."""

    n_shared: int
    """Number of shared features."""

    n_b_only: int
    """Number of B-only features (the last rows of `dirs_b_GD`)."""


class SyntheticPair:
    """A streaming `BatchSource` of paired activations drawn from a known dictionary (see module docstring)."""

    def __init__(self, config: SyntheticConfig):
        """Draw the true features of `config`; batches are generated lazily."""
        if config.n_shared < 1 or min(config.n_a_only, config.n_b_only) < 0:
            raise ValueError(f"a_only={config.a_only} and b_only={config.b_only} must leave shared features")
        self.config = config
        self.d_a, self.d_b = config.d_a, config.d_b
        self.truth = _draw_truth(config)
        self._vectors_a_GD = self.truth.dirs_a_GD * self.truth.norm_a_G[:, None]
        self._vectors_b_GD = self.truth.dirs_b_GD * self.truth.norm_b_G[:, None]
        self._noise_std_a, self._noise_std_b = self._noise_stds()
        self._mean_sq_norms: tuple[float, float] | None = None

    def mean_sq_norms(self) -> tuple[float, float]:
        """Return the mean squared norm of each model's activations, estimated once on a fixed held-out sample."""
        if self._mean_sq_norms is None:
            x_a_ND, x_b_ND = self.held_out(_NORM_SAMPLE_TOKENS, seed=-1)
            self._mean_sq_norms = float(x_a_ND.pow(2).sum(1).mean()), float(x_b_ND.pow(2).sum(1).mean())
        return self._mean_sq_norms

    def pair_info(self) -> dict:
        """Return pair metadata naming the synthetic models (so a crosscoder records what it was trained on)."""
        return {"model_a": f"synthetic-a-{self.config.seed}", "model_b": f"synthetic-b-{self.config.seed}"}

    def iter_batches(self, batch_size: int, seed: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield an endless deterministic stream of fresh `(x_a_BD, x_b_BD)` training batches from `start_batch` on."""
        index = start_batch
        while True:
            yield self.sample(batch_size, _generator(self.config.seed, _TRAIN_STREAM, seed, index))
            index += 1

    def held_out(self, n_tokens: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Return `(x_a_ND, x_b_ND)`: `n_tokens` pairs from a stream training never draws from."""
        return self.sample(n_tokens, _generator(self.config.seed, _HELD_OUT_STREAM, seed, 0))

    def sample(self, n_tokens: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Return `(x_a_ND, x_b_ND)`: `n_tokens` fresh pairs drawn with `generator`."""
        truth, config = self.truth, self.config
        active_NG = torch.rand(n_tokens, config.n_features, generator=generator) < truth.frequency_G
        rows_M, features_M = active_NG.nonzero(as_tuple=True)
        coefficient_M = torch.exp(config.magnitude_sigma * torch.randn(rows_M.shape[0], generator=generator))
        jitter_M = torch.exp(config.shared_jitter * torch.randn(rows_M.shape[0], generator=generator))
        noise_a_ND = torch.randn(n_tokens, config.d_a, generator=generator) * self._noise_std_a
        noise_b_ND = torch.randn(n_tokens, config.d_b, generator=generator) * self._noise_std_b
        in_a = features_M < truth.n_a_only + truth.n_shared
        in_b = features_M >= truth.n_a_only
        is_shared = in_a & in_b
        coefficient_b_M = torch.where(is_shared, coefficient_M * jitter_M, coefficient_M)
        x_a_ND = _sparse_rows(rows_M[in_a], features_M[in_a], coefficient_M[in_a], self._vectors_a_GD, n_tokens)
        x_b_ND = _sparse_rows(
            rows_M[in_b], features_M[in_b] - truth.n_a_only, coefficient_b_M[in_b], self._vectors_b_GD, n_tokens
        )
        return x_a_ND + noise_a_ND, x_b_ND + noise_b_ND

    def _noise_stds(self) -> tuple[float, float]:
        """Return the per-dimension noise std of each model: `noise` × its expected squared signal norm, spread over d."""
        truth, config = self.truth, self.config
        mean_sq_coefficient = math.exp(2 * config.magnitude_sigma**2)
        frequency_a_G = truth.frequency_G[: truth.n_a_only + truth.n_shared]
        frequency_b_G = truth.frequency_G[truth.n_a_only :]
        signal_a = float((frequency_a_G * truth.norm_a_G.pow(2)).sum()) * mean_sq_coefficient
        signal_b = float((frequency_b_G * truth.norm_b_G.pow(2)).sum()) * mean_sq_coefficient
        return math.sqrt(config.noise * signal_a / config.d_a), math.sqrt(config.noise * signal_b / config.d_b)


def _draw_truth(config: SyntheticConfig) -> GroundTruth:
    """Return random true features for `config`: directions, per-model norms and power-law frequencies."""
    # A mixed seed, not `config.seed` itself: a crosscoder initialized with torch's generator at the
    # same seed would otherwise start with its decoder rows exactly on the true directions.
    generator = _generator(config.seed, _DICTIONARY_STREAM, 0, 0)
    n_a, n_s, n_b = config.n_a_only, config.n_shared, config.n_b_only
    dirs_a_GD = torch.randn(n_a + n_s, config.d_a, generator=generator)
    dirs_b_GD = torch.randn(n_s + n_b, config.d_b, generator=generator)
    norm_a_G = torch.exp(config.norm_sigma * torch.randn(n_a + n_s, generator=generator))
    norm_b_G = torch.exp(config.norm_sigma * torch.randn(n_s + n_b, generator=generator))
    top_rank = config.frequency_range ** (1 / config.frequency_exponent)
    rank_G = torch.linspace(1.0, top_rank, config.n_features, dtype=torch.float64)
    frequency_G = rank_G.pow(-config.frequency_exponent)
    frequency_G = (frequency_G * config.features_per_token / frequency_G.sum()).clamp(max=1.0).float()
    frequency_G = frequency_G[torch.randperm(config.n_features, generator=generator)]
    return GroundTruth(
        dirs_a_GD=dirs_a_GD / dirs_a_GD.norm(dim=1, keepdim=True),
        dirs_b_GD=dirs_b_GD / dirs_b_GD.norm(dim=1, keepdim=True),
        norm_a_G=norm_a_G,
        norm_b_G=norm_b_G,
        frequency_G=frequency_G,
        n_a_only=n_a,
        n_shared=n_s,
        n_b_only=n_b,
    )


def _generator(config_seed: int, stream: int, seed: int, index: int) -> torch.Generator:
    """Return a generator seeded uniquely by (dictionary seed, stream, stream seed, batch index)."""
    mixed = _SEED_SALT
    for part in (config_seed, stream, seed, index):
        mixed = (mixed * 1_000_003 + part) % _SEED_MODULUS
    return torch.Generator().manual_seed(mixed)


def _sparse_rows(
    rows_M: torch.Tensor, features_M: torch.Tensor, coefficient_M: torch.Tensor, vectors_GD: torch.Tensor, n: int
) -> torch.Tensor:
    """Return the dense [n, D] sum of `coefficient × vectors[feature]` into each row."""
    coefficients = torch.sparse_coo_tensor(
        torch.stack([rows_M, features_M]), coefficient_M, (n, vectors_GD.shape[0]), check_invariants=False
    )
    return torch.sparse.mm(coefficients, vectors_GD)


# ---------------------------------------------------------------------------- evaluation

JUDGE_PARTITION = "partition"
JUDGE_RELATIVE_NORM = "relative_norm"


@dataclass
class RecoveryReport:
    """How many true features a crosscoder found, and whether it put the exclusive ones on the right side."""

    judged_by: str
    """How latents were called exclusive: "partition" (DFC block) or "relative_norm" (‖d_a‖/(‖d_a‖+‖d_b‖))."""

    shared_recovery: float
    """Fraction of shared features matched (cosine ≥ 0.9) by one latent in BOTH models."""

    a_only_recovery: float
    """Fraction of A-only features matched by some latent's model-A decoder direction."""

    b_only_recovery: float
    """Fraction of B-only features matched by some latent's model-B decoder direction."""

    a_only_correct_block: float
    """Fraction of A-only features matched by an A-exclusive (or A-looking) latent."""

    b_only_correct_block: float
    """Fraction of B-only features matched by a B-exclusive (or B-looking) latent."""

    exclusive_correct_block: float
    """Fraction of all exclusive features (A-only and B-only pooled) matched by a latent of their own side."""

    n_exclusive_latents: int
    """Alive latents called exclusive (either side)."""

    false_exclusives: int
    """Alive latents called exclusive whose decoder direction matches a SHARED feature in their model."""

    def to_dict(self) -> dict:
        """Return the report as a JSON-serializable dict."""
        return dict(self.__dict__)


def exclusive_latents(crosscoder: CrossCoder, judged_by: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Return boolean [F] masks (looks A-exclusive, looks B-exclusive) of a crosscoder's latents.

    "partition" uses the DFC blocks; "relative_norm" calls a latent A-exclusive when
    ‖d_a‖/(‖d_a‖+‖d_b‖) > `RELATIVE_NORM_EXCLUSIVE` and B-exclusive when below 1 − that.
    """
    if judged_by == JUDGE_PARTITION:
        is_a_F = torch.zeros(crosscoder.dict_size, dtype=torch.bool)
        is_b_F = torch.zeros(crosscoder.dict_size, dtype=torch.bool)
        is_a_F[crosscoder.slice_a_exclusive] = True
        is_b_F[crosscoder.slice_b_exclusive] = True
        return is_a_F, is_b_F
    if judged_by == JUDGE_RELATIVE_NORM:
        relative_F = relative_decoder_norms(crosscoder)
        return relative_F > RELATIVE_NORM_EXCLUSIVE, relative_F < 1 - RELATIVE_NORM_EXCLUSIVE
    raise ValueError(f"judged_by={judged_by!r}: use {JUDGE_PARTITION!r} or {JUDGE_RELATIVE_NORM!r}")


def relative_decoder_norms(crosscoder: CrossCoder) -> torch.Tensor:
    """Return ‖d_a‖/(‖d_a‖+‖d_b‖) per latent, [F] (1 = only model A, 0 = only model B, 0.5 if both are 0)."""
    with torch.no_grad():
        return 1 - relative_norm(crosscoder).cpu()


def recovery_report(
    crosscoder: CrossCoder, truth: GroundTruth, alive_F: torch.Tensor | None = None, judged_by: str | None = None
) -> RecoveryReport:
    """Return the `RecoveryReport` of `crosscoder` against `truth` (cosine threshold `RECOVERY_COSINE`).

    Only latents marked in `alive_F` (default: all) can recover a feature or count as exclusive: a
    latent that never fires shows nothing to a user. `judged_by` defaults to "partition" for a DFC
    and "relative_norm" for a standard crosscoder.
    """
    if judged_by is None:
        is_dfc = crosscoder.n_a + crosscoder.n_b > 0
        judged_by = JUDGE_PARTITION if is_dfc else JUDGE_RELATIVE_NORM
    if alive_F is None:
        alive_F = torch.ones(crosscoder.dict_size, dtype=torch.bool)
    is_a_F, is_b_F = exclusive_latents(crosscoder, judged_by)
    is_a_F, is_b_F = is_a_F & alive_F, is_b_F & alive_F
    match_a_FG = _matches(crosscoder.W_dec_a, crosscoder.slice_a, truth.dirs_a_GD, crosscoder.dict_size) & alive_F[:, None]
    match_b_FG = _matches(crosscoder.W_dec_b, crosscoder.slice_b, truth.dirs_b_GD, crosscoder.dict_size) & alive_F[:, None]
    n_a, n_s = truth.n_a_only, truth.n_shared
    a_only_FG, shared_a_FG = match_a_FG[:, :n_a], match_a_FG[:, n_a:]
    shared_b_FG, b_only_FG = match_b_FG[:, :n_s], match_b_FG[:, n_s:]
    a_correct_G = a_only_FG[is_a_F].any(0)
    b_correct_G = b_only_FG[is_b_F].any(0)
    false_F = (is_a_F & shared_a_FG.any(1)) | (is_b_F & shared_b_FG.any(1))
    return RecoveryReport(
        judged_by=judged_by,
        shared_recovery=_mean((shared_a_FG & shared_b_FG).any(0)),
        a_only_recovery=_mean(a_only_FG.any(0)),
        b_only_recovery=_mean(b_only_FG.any(0)),
        a_only_correct_block=_mean(a_correct_G),
        b_only_correct_block=_mean(b_correct_G),
        exclusive_correct_block=_mean(torch.cat([a_correct_G, b_correct_G])),
        n_exclusive_latents=int((is_a_F | is_b_F).sum()),
        false_exclusives=int(false_F.sum()),
    )


def _matches(W_dec_LD: torch.Tensor, rows: slice, dirs_GD: torch.Tensor, dict_size: int) -> torch.Tensor:
    """Return a boolean [F, G]: latent j's decoder row (in this model) has cosine ≥ threshold with true feature g."""
    with torch.no_grad():
        unit_LD = W_dec_LD.detach().float().cpu()
        unit_LD = unit_LD / unit_LD.norm(dim=1, keepdim=True).clamp_min(1e-12)
        match_FG = torch.zeros(dict_size, dirs_GD.shape[0], dtype=torch.bool)
        match_FG[rows] = unit_LD @ dirs_GD.T >= RECOVERY_COSINE
        return match_FG


def _mean(flags: torch.Tensor) -> float:
    """Return the fraction of True in `flags` (1.0 for an empty tensor: nothing to recover)."""
    return float(flags.float().mean()) if flags.numel() else 1.0


@dataclass
class ReconstructionReport:
    """How well a crosscoder reconstructs held-out activations, and how sparse and alive it is there."""

    fvu_a: float
    """Fraction of model A's variance left unexplained."""

    fvu_b: float
    """Fraction of model B's variance left unexplained."""

    l0: float
    """Mean number of active latents per token."""

    dead_fraction: float
    """Fraction of latents that never fire on the held-out tokens."""

    def to_dict(self) -> dict:
        """Return the report as a JSON-serializable dict."""
        return dict(self.__dict__)


def reconstruction_report(
    crosscoder: CrossCoder, x_a_ND: torch.Tensor, x_b_ND: torch.Tensor
) -> tuple[ReconstructionReport, torch.Tensor]:
    """Return the `ReconstructionReport` of `crosscoder` (inference mode) on raw held-out activations, and alive_F.

    alive_F is a boolean [F] marking the latents that fire at least once on these tokens.
    """
    with torch.no_grad():
        x_hat_a_ND, x_hat_b_ND, f_NF = crosscoder(x_a_ND, x_b_ND)
        alive_F = (f_NF > 0).any(0).cpu()
        report = ReconstructionReport(
            fvu_a=_fvu(x_a_ND, x_hat_a_ND),
            fvu_b=_fvu(x_b_ND, x_hat_b_ND),
            l0=float((f_NF > 0).sum(1).float().mean()),
            dead_fraction=float(alive_F.logical_not().float().mean()),
        )
        return report, alive_F


def _fvu(x_ND: torch.Tensor, x_hat_ND: torch.Tensor) -> float:
    """Return Σ‖x − x̂‖² / Σ‖x − mean(x)‖²."""
    return float((x_ND - x_hat_ND).pow(2).sum() / (x_ND - x_ND.mean(0)).pow(2).sum().clamp_min(1e-12))
