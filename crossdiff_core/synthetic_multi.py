"""Synthetic activations of N ≥ 2 models with a known answer, and how well an N-model crosscoder recovers it.

N "models" of widths `d[m]` write sparse true features into their activations, with the statistics
of `crossdiff_core.synthetic` (power-law firing frequencies, log-normal magnitudes, per-model feature
norms, isotropic Gaussian noise). A feature lives in a set of models, its *members*, and has one
independent random direction in each: true features are ordered
`[shared by all | exclusive to model 0 | … | exclusive to model N−1 | shared by pair (0, 1) | (0, 2) | …]`.
A feature fires in all its members at once, with model 0's coefficient (or its first member's)
jittered log-normally in each other member (`shared_jitter`).

`SyntheticModels` streams deterministic batches (a tuple of N tensors), seeded by
`(config.seed, seed, batch index)` as `synthetic.SyntheticPair` does, and is the source
`training.multi.train_multi` reads. `multi_recovery_report` scores a `MultiCrossCoder` against the
true directions: each model's exclusive features in that model's own exclusive block (DFC) or on a
latent whose decoder norm for that model is above 0.9 of its sum over models (standard crosscoder),
the features shared by all, and the pair-shared features and where they land.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from crossdiff_core.crosscoder.multi import MultiCrossCoder
from crossdiff_core.errors import CrossDiffError
from crossdiff_core.synthetic import (
    JUDGE_PARTITION,
    JUDGE_RELATIVE_NORM,
    RECOVERY_COSINE,
    RELATIVE_NORM_EXCLUSIVE,
    FeatureStatistics,
    _fvu,
    _generator,
    _mean,
    _sparse_rows,
    _unit,
    power_law_frequencies,
)

_DICTIONARY_STREAM = 10
_TRAIN_STREAM = 11
_HELD_OUT_STREAM = 12
_NORM_SAMPLE_TOKENS = 32_768


@dataclass
class SyntheticMultiConfig(FeatureStatistics):
    """The shape and statistics of N synthetic models (defaults: three models; statistics as in `FeatureStatistics`)."""

    d: tuple[int, ...] = (96, 128, 160)
    """Width of each model's activations."""

    n_features: int = 384
    """Number of true features of all kinds."""

    exclusive: float = 0.03
    """Fraction of the true features that exist only in model m, for EACH model."""

    pair_shared: float = 0.02
    """Fraction of the true features shared by exactly two models, for EACH pair of models."""

    shared_jitter: float = 0.05
    """Log-normal spread of a multi-model feature's coefficient in its other members around its first member's."""

    seed: int = 0
    """Seeds the true directions, frequencies and norms; batch streams also depend on it."""

    @property
    def n_models(self) -> int:
        """Return the number of models N."""
        return len(self.d)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """Return the pairs of models (i < j), in the order their pair-shared features are listed."""
        return list(itertools.combinations(range(self.n_models), 2))

    @property
    def n_exclusive(self) -> int:
        """Return the number of features exclusive to each model."""
        return round(self.exclusive * self.n_features)

    @property
    def n_pair(self) -> int:
        """Return the number of features shared by each pair of models (and no other)."""
        return round(self.pair_shared * self.n_features)

    @property
    def n_all_shared(self) -> int:
        """Return the number of features shared by all models."""
        return self.n_features - self.n_models * self.n_exclusive - len(self.pairs) * self.n_pair


@dataclass
class MultiGroundTruth:
    """The true features of N synthetic models (order: see the module docstring)."""

    members_GN: torch.Tensor
    """Boolean [G, N]: which models each feature lives in."""

    dirs: list[torch.Tensor]
    """Per model m, the unit direction of every feature, [G, d_m] (a zero row where m is not a member)."""

    norms_NG: torch.Tensor
    """Norm of each feature's vector in each model, [N, G] (0 where m is not a member)."""

    frequency_G: torch.Tensor
    """Firing probability per token of every feature, [G]."""

    def exclusive_to(self, m: int) -> torch.Tensor:
        """Return a boolean [G]: the features that live in model m only."""
        return self.members_GN[:, m] & (self.members_GN.sum(1) == 1)

    def shared_by_all(self) -> torch.Tensor:
        """Return a boolean [G]: the features every model has."""
        return self.members_GN.all(1)

    def shared_by_some(self) -> torch.Tensor:
        """Return a boolean [G]: the features of more than one model but not all (the pair-shared ones)."""
        count_G = self.members_GN.sum(1)
        return (count_G > 1) & (count_G < self.members_GN.shape[1])


class SyntheticModels:
    """A streaming source of N models' activations drawn from a known dictionary (see module docstring)."""

    def __init__(self, config: SyntheticMultiConfig):
        """Draw the true features of `config`; batches are generated lazily."""
        if config.n_models < 2:
            raise CrossDiffError(f"d={config.d} must list at least two model widths")
        if config.n_all_shared < 1 or min(config.n_exclusive, config.n_pair) < 0:
            raise CrossDiffError(
                f"exclusive={config.exclusive} per model and pair_shared={config.pair_shared} per pair must be "
                f"≥ 0 and leave features shared by all {config.n_models} models: lower them"
            )
        self.config = config
        self.d = list(config.d)
        self.truth = _draw_truth(config)
        self._vectors = [dirs_GD * self.truth.norms_NG[m][:, None] for m, dirs_GD in enumerate(self.truth.dirs)]
        mean_sq_coefficient = math.exp(2 * config.magnitude_sigma**2)
        signal_N = (self.truth.frequency_G * self.truth.norms_NG.pow(2)).sum(1) * mean_sq_coefficient
        self._noise_std = [math.sqrt(config.noise * float(signal_N[m]) / d) for m, d in enumerate(self.d)]
        self._mean_sq_norms: list[float] | None = None

    def mean_sq_norms(self) -> list[float]:
        """Return the mean squared norm of each model's activations, estimated once on a fixed held-out sample."""
        if self._mean_sq_norms is None:
            self._mean_sq_norms = [float(x_ND.pow(2).sum(1).mean()) for x_ND in self.held_out(_NORM_SAMPLE_TOKENS, -1)]
        return self._mean_sq_norms

    def iter_batches(self, batch_size: int, seed: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        """Yield an endless deterministic stream of fresh training batches (one [B, d_m] tensor per model)."""
        index = start_batch
        while True:
            yield self.sample(batch_size, _generator(self.config.seed, _TRAIN_STREAM, seed, index))
            index += 1

    def held_out(self, n_tokens: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Return `n_tokens` tokens (one [n, d_m] tensor per model) from a stream training never draws from."""
        return self.sample(n_tokens, _generator(self.config.seed, _HELD_OUT_STREAM, seed, 0))

    def sample(self, n_tokens: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Return `n_tokens` fresh tokens drawn with `generator`, one [n, d_m] tensor per model."""
        truth, config = self.truth, self.config
        active_NG = torch.rand(n_tokens, config.n_features, generator=generator) < truth.frequency_G
        rows_M, features_M = active_NG.nonzero(as_tuple=True)
        coefficient_M = torch.exp(config.magnitude_sigma * torch.randn(rows_M.shape[0], generator=generator))
        members_MN = truth.members_GN[features_M]
        first_member_M = members_MN.int().argmax(1)
        out = []
        for m, vectors_GD in enumerate(self._vectors):
            jitter_M = torch.exp(config.shared_jitter * torch.randn(rows_M.shape[0], generator=generator))
            coefficient_m_M = torch.where(first_member_M == m, coefficient_M, coefficient_M * jitter_M)
            in_m = members_MN[:, m]
            x_ND = _sparse_rows(rows_M[in_m], features_M[in_m], coefficient_m_M[in_m], vectors_GD, n_tokens)
            out.append(x_ND + torch.randn(n_tokens, self.d[m], generator=generator) * self._noise_std[m])
        return tuple(out)


def _draw_truth(config: SyntheticMultiConfig) -> MultiGroundTruth:
    """Return random true features for `config`: memberships, directions, per-model norms and frequencies."""
    generator = _generator(config.seed, _DICTIONARY_STREAM, 0, 0)
    n_models = config.n_models
    members_GN = torch.zeros(config.n_features, n_models, dtype=torch.bool)
    members_GN[: config.n_all_shared] = True
    start = config.n_all_shared
    for m in range(n_models):
        members_GN[start : start + config.n_exclusive, m] = True
        start += config.n_exclusive
    for i, j in config.pairs:
        members_GN[start : start + config.n_pair, [i, j]] = True
        start += config.n_pair
    dirs = []
    for m, d in enumerate(config.d):
        dirs_GD = torch.randn(config.n_features, d, generator=generator)
        dirs.append(_unit(dirs_GD) * members_GN[:, m, None])
    norms_NG = torch.exp(config.norm_sigma * torch.randn(n_models, config.n_features, generator=generator))
    return MultiGroundTruth(
        members_GN=members_GN,
        dirs=dirs,
        norms_NG=norms_NG * members_GN.T,
        frequency_G=power_law_frequencies(config, generator),
    )


# ---------------------------------------------------------------------------- evaluation


@dataclass
class MultiRecoveryReport:
    """How many true features an N-model crosscoder found, and whether it put the exclusive ones in the right block."""

    judged_by: str
    """How latents were called exclusive: "partition" (DFC block) or "relative_norm" (‖d_m‖ / Σ_n ‖d_n‖ > 0.9)."""

    shared_recovery: float
    """Fraction of the features shared by all models matched (cosine ≥ 0.9) by one latent in EVERY model."""

    exclusive_recovery: list[float]
    """Per model m: fraction of its exclusive features matched by some alive latent's model-m decoder direction."""

    exclusive_correct_block: list[float]
    """Per model m: fraction of its exclusive features matched by an alive latent of ITS exclusive block (or looking
    exclusive to it)."""

    exclusive_recovery_correct_block: float
    """`exclusive_correct_block` of all models' exclusive features pooled."""

    pair_recovery: float
    """Fraction of the pair-shared features matched by one latent in both of their models."""

    pair_as_exclusive: float
    """Fraction of the pair-shared features whose direction in one of their models is matched by a latent
    exclusive to that model (split into one-model latents instead of one two-model latent)."""

    pair_norm_elsewhere: float | None
    """Over recovered pair-shared features, the mean share of the best matching latent's decoder norm that goes
    to the models the feature is NOT in (0 = it writes to its pair only); None when none is recovered."""

    n_exclusive_latents: int
    """Alive latents called exclusive (any model)."""

    false_exclusives: int
    """Alive latents called exclusive to model m whose model-m decoder matches a feature of more than one model."""

    def to_dict(self) -> dict:
        """Return the report as a JSON-serializable dict."""
        return dict(self.__dict__)


def exclusive_masks(crosscoder: MultiCrossCoder, judged_by: str) -> torch.Tensor:
    """Return a boolean [N, F]: which latents are (or look) exclusive to each model.

    "partition" uses the DFC blocks; "relative_norm" calls a latent exclusive to model m when its
    decoder norm for m is above `RELATIVE_NORM_EXCLUSIVE` of the sum of its norms over models.
    """
    if judged_by == JUDGE_PARTITION:
        mask_NF = torch.zeros(crosscoder.n_models, crosscoder.dict_size, dtype=torch.bool)
        for m in range(crosscoder.n_models):
            mask_NF[m, crosscoder.slice_exclusive(m)] = True
        return mask_NF
    if judged_by == JUDGE_RELATIVE_NORM:
        with torch.no_grad():
            norms_NF = crosscoder.decoder_norms().float().cpu()
        return norms_NF / norms_NF.sum(0).clamp_min(1e-12) > RELATIVE_NORM_EXCLUSIVE
    raise ValueError(f"judged_by={judged_by!r}: use {JUDGE_PARTITION!r} or {JUDGE_RELATIVE_NORM!r}")


def decoder_cosines(crosscoder: MultiCrossCoder, truth: MultiGroundTruth) -> torch.Tensor:
    """Return [N, F, G]: cosine of each latent's model-m decoder row with each feature's model-m direction.

    0 where the latent has no weights for model m or the feature is not in model m.
    """
    out = torch.zeros(crosscoder.n_models, crosscoder.dict_size, truth.members_GN.shape[0])
    with torch.no_grad():
        for m, W_dec in enumerate(crosscoder.W_dec):
            out[m, crosscoder.latents_of(m)] = _unit(W_dec.detach().float().cpu()) @ truth.dirs[m].T
    return out


def multi_recovery_report(
    crosscoder: MultiCrossCoder,
    truth: MultiGroundTruth,
    alive_F: torch.Tensor | None = None,
    judged_by: str | None = None,
) -> MultiRecoveryReport:
    """Return the `MultiRecoveryReport` of `crosscoder` against `truth` (cosine threshold `RECOVERY_COSINE`).

    Only latents marked in `alive_F` (default: all) can recover a feature or count as exclusive.
    `judged_by` defaults to "partition" for a DFC and "relative_norm" for a standard crosscoder.
    """
    if judged_by is None:
        judged_by = JUDGE_PARTITION if sum(crosscoder.n_exclusive) else JUDGE_RELATIVE_NORM
    if alive_F is None:
        alive_F = torch.ones(crosscoder.dict_size, dtype=torch.bool)
    exclusive_NF = exclusive_masks(crosscoder, judged_by) & alive_F
    cosine_NFG = decoder_cosines(crosscoder, truth)
    match_NFG = (cosine_NFG >= RECOVERY_COSINE) & alive_F[None, :, None]
    members_NG = truth.members_GN.T
    joint_FG = (match_NFG | ~members_NG[:, None, :]).all(0) & match_NFG.any(0)
    correct, recovery = [], []
    for m in range(crosscoder.n_models):
        own_G = truth.exclusive_to(m)
        recovery.append(_mean(match_NFG[m][:, own_G].any(0)))
        correct.append(match_NFG[m][exclusive_NF[m]][:, own_G].any(0))
    pair_G = truth.shared_by_some()
    split_G = (match_NFG & exclusive_NF[:, :, None]).any(1).any(0)
    multi_G = truth.members_GN.sum(1) > 1
    false_F = (match_NFG[:, :, multi_G].any(2) & exclusive_NF).any(0)
    return MultiRecoveryReport(
        judged_by=judged_by,
        shared_recovery=_mean(joint_FG[:, truth.shared_by_all()].any(0)),
        exclusive_recovery=recovery,
        exclusive_correct_block=[_mean(flags) for flags in correct],
        exclusive_recovery_correct_block=_mean(torch.cat(correct)),
        pair_recovery=_mean(joint_FG[:, pair_G].any(0)),
        pair_as_exclusive=_mean(split_G[pair_G]),
        pair_norm_elsewhere=_norm_elsewhere(crosscoder, truth, cosine_NFG, joint_FG, pair_G),
        n_exclusive_latents=int(exclusive_NF.any(0).sum()),
        false_exclusives=int(false_F.sum()),
    )


def _norm_elsewhere(crosscoder, truth, cosine_NFG, joint_FG, pair_G) -> float | None:
    """Return the mean decoder-norm share off the feature's models of each recovered pair feature's best latent."""
    with torch.no_grad():
        norms_NF = crosscoder.decoder_norms().float().cpu()
    share_NF = norms_NF / norms_NF.sum(0).clamp_min(1e-12)
    shares = []
    for g in pair_G.nonzero().squeeze(1).tolist():
        latents = joint_FG[:, g].nonzero().squeeze(1)
        if latents.numel():
            best = latents[cosine_NFG[:, latents, g].sum(0).argmax()]
            shares.append(float(share_NF[~truth.members_GN[g], best].sum()))
    return sum(shares) / len(shares) if shares else None


@dataclass
class MultiReconstructionReport:
    """How well an N-model crosscoder reconstructs held-out activations, and how sparse and alive it is there."""

    fvu: list[float]
    """Per model, the fraction of its variance left unexplained."""

    l0: float
    """Mean number of active latents per token."""

    dead_fraction: float
    """Fraction of latents that never fire on the held-out tokens."""

    def to_dict(self) -> dict:
        """Return the report as a JSON-serializable dict."""
        return dict(self.__dict__)


def multi_reconstruction_report(
    crosscoder: MultiCrossCoder, xs: tuple[torch.Tensor, ...]
) -> tuple[MultiReconstructionReport, torch.Tensor]:
    """Return the `MultiReconstructionReport` of `crosscoder` (inference mode) on raw held-out activations, and alive_F.

    alive_F is a boolean [F] marking the latents that fire at least once on these tokens.
    """
    with torch.no_grad():
        x_hats, f_NF = crosscoder(list(xs))
        alive_F = (f_NF > 0).any(0).cpu()
        report = MultiReconstructionReport(
            fvu=[_fvu(x_ND, x_hat_ND) for x_ND, x_hat_ND in zip(xs, x_hats, strict=True)],
            l0=float((f_NF > 0).sum(1).float().mean()),
            dead_fraction=float(alive_F.logical_not().float().mean()),
        )
        return report, alive_F
