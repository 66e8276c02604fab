"""Synthetic paired activations with a known answer, and how well a crosscoder recovers it.

Two "models" of widths `d_a ≠ d_b` write sparse true features into their activations. True
features are ordered like crosscoder latents, `[A-only | shared | B-only]`: a shared feature has
one (independent, random) direction in each model and fires in both with the same coefficient; an
A-only feature exists only in model A, a B-only one only in B. Statistics follow what
sparse-dictionary work sees in real activations: power-law firing frequencies spread over the
feature kinds, a few active features per token, log-normal magnitudes, per-model feature norms,
and isotropic Gaussian noise.

Two options (off by default) make the pair look more like a base model and its fine-tune.
`shared_map` makes model B's direction of a shared feature (partly) a fixed linear image of its
direction in A, as when two models hold the same concepts in a linearly related basis.
`a_conditional` / `b_conditional` give a fraction of the shared features an extra direction that
only one model writes, co-firing exactly with its shared parent (the B-only part of a concept both
models hold): a *conditional* feature. Its direction is random and independent of everything else,
so no linear map from the other model predicts it, although the parent's activation predicts when
it fires. Both options draw from their own generator streams: with them off, every draw (truth and
batches) is the same as without them.

`SyntheticPair` is a streaming `BatchSource`: every batch is generated on demand from a seed
derived from `(config.seed, seed, batch index)`, so streams are deterministic, resumable and
unlimited, and a held-out stream never overlaps training. `recovery_report` scores a trained
crosscoder against the true directions, conditional features included (as an exclusive latent, and
as a one-model component of a shared latent, `crossdiff_core.analysis.components`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from crossdiff_core.analysis.blocks import relative_norm
from crossdiff_core.analysis.components import component_residuals, one_model_components, rank_components
from crossdiff_core.crosscoder.model import CrossCoder
from crossdiff_core.errors import CrossDiffError

RECOVERY_COSINE = 0.9
"""A true feature counts as recovered when a decoder direction has at least this cosine with it."""

RELATIVE_NORM_EXCLUSIVE = 0.9
"""A standard-crosscoder latent looks A-exclusive when ‖d_a‖/(‖d_a‖+‖d_b‖) > this, B-exclusive when < 1 − this."""

COMPONENT_COSINE = RECOVERY_COSINE
"""A conditional feature counts as found as a component when a top-ranked residual has at least this cosine with it."""

COMPONENT_MIN_FRACTION = 0.5
"""A latent surfaces a one-model component when its component fraction ‖r‖/‖d‖ is at least this."""

COMPONENT_TOP_PER_FEATURE = 2
"""Components looked at per model: this many per true conditional feature of that model, ..."""

COMPONENT_TOP_MIN = 10
"""... and at least this many (so a pair without conditional features still shows its false components)."""

_DICTIONARY_STREAM = 0
_TRAIN_STREAM = 1
_HELD_OUT_STREAM = 2
_CONDITIONAL_STREAM = 3
_SHARED_MAP_STREAM = 4
_NORM_SAMPLE_TOKENS = 32_768
_SEED_MODULUS = 2**61 - 1
_SEED_SALT = 0x5EED_CA11_AB


@dataclass
class FeatureStatistics:
    """How often and how strongly true features fire, and the noise: what synthetic pairs and N-model sets share."""

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

    noise: float = 0.05
    """Variance of the isotropic Gaussian noise, as a fraction of the mean squared signal norm (per model)."""


@dataclass
class SyntheticConfig(FeatureStatistics):
    """The shape and statistics of a synthetic model pair (the statistics fields are `FeatureStatistics`')."""

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

    shared_jitter: float = 0.05
    """Log-normal spread of model B's coefficient of a shared feature around model A's (0 = identical)."""

    shared_map: float = 0.0
    """How much of model B's direction of a shared feature is a fixed random linear image of its direction in A.

    B's unit direction is `√s · R u + √(1 − s) · z`, renormalized: `u` the feature's direction in A,
    `R` one random d_a → d_b map (its images renormalized), `z` an independent random direction.
    0 (default): independent directions; 1: exactly linear up to each feature's norm."""

    a_conditional: float = 0.0
    """Fraction of the shared features that carry an extra direction written by model A only (a conditional feature)."""

    b_conditional: float = 0.0
    """Fraction of the shared features that carry an extra direction written by model B only.

    A and B conditional features hang on different shared features (their fractions may sum to at most 1)."""

    conditional_scale: float = 1.0
    """Norm of a conditional feature's vector relative to its parent's vector in that model.

    It fires exactly when its parent does, with the parent's coefficient in that model times its own
    log-normal jitter (`shared_jitter`)."""

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

    @property
    def n_a_conditional(self) -> int:
        """Return the number of shared features with an extra model-A-only direction."""
        return round(self.a_conditional * self.n_shared)

    @property
    def n_b_conditional(self) -> int:
        """Return the number of shared features with an extra model-B-only direction."""
        return round(self.b_conditional * self.n_shared)


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

    cond_dirs_a_CD: torch.Tensor
    """Unit direction of each A-conditional feature (written by model A only), [n_a_conditional, d_a]."""

    cond_parent_a_C: torch.Tensor
    """Shared feature (index among the shared ones, 0..n_shared−1) each A-conditional feature co-fires with, int64."""

    cond_norm_a_C: torch.Tensor
    """Norm of each A-conditional feature's vector (`conditional_scale` × its parent's norm in A)."""

    cond_dirs_b_CD: torch.Tensor
    """Unit direction of each B-conditional feature (written by model B only), [n_b_conditional, d_b]."""

    cond_parent_b_C: torch.Tensor
    """Shared feature each B-conditional feature co-fires with, int64."""

    cond_norm_b_C: torch.Tensor
    """Norm of each B-conditional feature's vector (`conditional_scale` × its parent's norm in B)."""


class SyntheticPair:
    """A streaming `BatchSource` of paired activations drawn from a known dictionary (see module docstring)."""

    def __init__(self, config: SyntheticConfig):
        """Draw the true features of `config`; batches are generated lazily."""
        if config.n_shared < 1 or min(config.n_a_only, config.n_b_only) < 0:
            raise CrossDiffError(
                f"a_only={config.a_only} and b_only={config.b_only} must leave shared features: lower them"
            )
        if min(config.n_a_conditional, config.n_b_conditional) < 0 or (
            config.n_a_conditional + config.n_b_conditional > config.n_shared
        ):
            raise CrossDiffError(
                f"a_conditional={config.a_conditional} and b_conditional={config.b_conditional} must be ≥ 0 "
                "and sum to at most 1 (each conditional feature hangs on its own shared feature)"
            )
        if not 0 <= config.shared_map <= 1:
            raise CrossDiffError(f"shared_map={config.shared_map} must be in [0, 1]")
        self.config = config
        self.d_a, self.d_b = config.d_a, config.d_b
        self.truth = _draw_truth(config)
        self._vectors_a_GD = self.truth.dirs_a_GD * self.truth.norm_a_G[:, None]
        self._vectors_b_GD = self.truth.dirs_b_GD * self.truth.norm_b_G[:, None]
        self._cond_vectors_a_CD = self.truth.cond_dirs_a_CD * self.truth.cond_norm_a_C[:, None]
        self._cond_vectors_b_CD = self.truth.cond_dirs_b_CD * self.truth.cond_norm_b_C[:, None]
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

    def iter_batches(
        self, batch_size: int, seed: int, start_batch: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
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
        # Conditional features draw last, and only when there are some: without them the stream is unchanged.
        shared_M = torch.where(is_shared, features_M - truth.n_a_only, 0)
        for parent_C, vectors_CD, coefficient, x_ND in (
            (truth.cond_parent_a_C, self._cond_vectors_a_CD, coefficient_M, x_a_ND),
            (truth.cond_parent_b_C, self._cond_vectors_b_CD, coefficient_b_M, x_b_ND),
        ):
            if parent_C.numel():
                conditional_S = torch.full((truth.n_shared,), -1, dtype=torch.long)
                conditional_S[parent_C] = torch.arange(parent_C.numel())
                conditional_M = torch.where(is_shared, conditional_S[shared_M], -1)
                fires = conditional_M >= 0
                jitter = torch.exp(config.shared_jitter * torch.randn(int(fires.sum()), generator=generator))
                x_ND += _sparse_rows(
                    rows_M[fires], conditional_M[fires], coefficient[fires] * jitter, vectors_CD, n_tokens
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
        # A conditional feature fires with its parent, its coefficient jittered once more.
        frequency_shared_S = truth.frequency_G[truth.n_a_only : truth.n_a_only + truth.n_shared]
        factor = mean_sq_coefficient * math.exp(2 * config.shared_jitter**2)
        signal_a += float((frequency_shared_S[truth.cond_parent_a_C] * truth.cond_norm_a_C.pow(2)).sum()) * factor
        signal_b += float((frequency_shared_S[truth.cond_parent_b_C] * truth.cond_norm_b_C.pow(2)).sum()) * factor
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
    frequency_G = power_law_frequencies(config, generator)
    dirs_a_GD = dirs_a_GD / dirs_a_GD.norm(dim=1, keepdim=True)
    dirs_b_GD = dirs_b_GD / dirs_b_GD.norm(dim=1, keepdim=True)
    if config.shared_map > 0:
        dirs_b_GD[:n_s] = _linearly_related(dirs_a_GD[n_a:], dirs_b_GD[:n_s], config)
    parents_S = torch.randperm(n_s, generator=_generator(config.seed, _CONDITIONAL_STREAM, 0))
    parent_a_C = parents_S[: config.n_a_conditional]
    parent_b_C = parents_S[n_s - config.n_b_conditional :]
    cond_dirs_a_CD = torch.randn(len(parent_a_C), config.d_a, generator=_generator(config.seed, _CONDITIONAL_STREAM, 1))
    cond_dirs_b_CD = torch.randn(len(parent_b_C), config.d_b, generator=_generator(config.seed, _CONDITIONAL_STREAM, 2))
    return GroundTruth(
        dirs_a_GD=dirs_a_GD,
        dirs_b_GD=dirs_b_GD,
        norm_a_G=norm_a_G,
        norm_b_G=norm_b_G,
        frequency_G=frequency_G,
        n_a_only=n_a,
        n_shared=n_s,
        n_b_only=n_b,
        cond_dirs_a_CD=cond_dirs_a_CD / cond_dirs_a_CD.norm(dim=1, keepdim=True).clamp_min(1e-12),
        cond_parent_a_C=parent_a_C,
        cond_norm_a_C=config.conditional_scale * norm_a_G[n_a + parent_a_C],
        cond_dirs_b_CD=cond_dirs_b_CD / cond_dirs_b_CD.norm(dim=1, keepdim=True).clamp_min(1e-12),
        cond_parent_b_C=parent_b_C,
        cond_norm_b_C=config.conditional_scale * norm_b_G[parent_b_C],
    )


def power_law_frequencies(config, generator: torch.Generator) -> torch.Tensor:
    """Return the firing probability of each of `config.n_features` features, [n_features], in random order.

    The feature of frequency rank r fires with probability ∝ r^(−frequency_exponent), ranks spread so that
    the most frequent fires `frequency_range` times as often as the least; they sum to `features_per_token`
    (each capped at 1). `config` is any `FeatureStatistics` with `n_features`.
    """
    top_rank = config.frequency_range ** (1 / config.frequency_exponent)
    rank_G = torch.linspace(1.0, top_rank, config.n_features, dtype=torch.float64)
    frequency_G = rank_G.pow(-config.frequency_exponent)
    frequency_G = (frequency_G * config.features_per_token / frequency_G.sum()).clamp(max=1.0).float()
    return frequency_G[torch.randperm(config.n_features, generator=generator)]


def _linearly_related(dirs_a_SD: torch.Tensor, independent_SE: torch.Tensor, config: SyntheticConfig) -> torch.Tensor:
    """Return model B's unit directions of the shared features, partly a linear image of A's (see `shared_map`)."""
    generator = _generator(config.seed, _SHARED_MAP_STREAM, 0)
    map_DE = torch.randn(config.d_a, config.d_b, generator=generator)
    image_SE = dirs_a_SD @ map_DE
    image_SE = image_SE / image_SE.norm(dim=1, keepdim=True)
    mixed_SE = math.sqrt(config.shared_map) * image_SE + math.sqrt(1 - config.shared_map) * independent_SE
    return mixed_SE / mixed_SE.norm(dim=1, keepdim=True)


def _generator(config_seed: int, stream: int, seed: int, index: int = 0) -> torch.Generator:
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

    conditional_a_as_exclusive: float | None = None
    """Fraction of A-conditional features matched (cosine ≥ 0.9) by an alive A-exclusive (or A-looking) latent.

    None when the pair has none. A conditional feature is an extra direction only one model writes,
    firing exactly with a shared feature (see `SyntheticConfig.a_conditional`)."""

    conditional_b_as_exclusive: float | None = None
    """Fraction of B-conditional features matched by an alive B-exclusive (or B-looking) latent."""

    conditional_as_exclusive: float | None = None
    """Fraction of all conditional features (both models pooled) matched by an exclusive latent of their model."""

    conditional_a_as_component: float | None = None
    """Fraction of A-conditional features found as a one-model component of a two-sided latent.

    Found: the `one_model_components` residual r_A of some latent has cosine ≥ `COMPONENT_COSINE`
    with it, that latent is among the top max(`COMPONENT_TOP_MIN`, `COMPONENT_TOP_PER_FEATURE` ×
    n_a_conditional) of `rank_components(…, "a")` (alive two-sided latents whose component is
    attributed to model A, by component_fraction_a), and its fraction is ≥ `COMPONENT_MIN_FRACTION`.
    The threshold is the same 0.9 as for decoder directions, not lowered for residuals: on the
    synthetic benchmark most residuals of a converged crosscoder reach it (mean best cosine 0.88)."""

    conditional_b_as_component: float | None = None
    """Fraction of B-conditional features found as a one-model component of a two-sided latent."""

    conditional_as_component: float | None = None
    """Fraction of all conditional features (both models pooled) found as a component."""

    conditional_component_cosine: float | None = None
    """Mean over conditional features of the best residual cosine of any latent ranked in its model (any rank)."""

    n_components: int = 0
    """Top-ranked latents that surface a component (fraction ≥ `COMPONENT_MIN_FRACTION`), both models."""

    false_components: int = 0
    """Of those, how many match no conditional feature of their model (a false positive of the component reading).

    A residual that matches one of the model's exclusive features (a one-model feature a shared latent
    holds) is not counted: it is a real difference too."""

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
    match_a_FG = (
        _matches(crosscoder.W_dec_a, crosscoder.slice_a, truth.dirs_a_GD, crosscoder.dict_size) & alive_F[:, None]
    )
    match_b_FG = (
        _matches(crosscoder.W_dec_b, crosscoder.slice_b, truth.dirs_b_GD, crosscoder.dict_size) & alive_F[:, None]
    )
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
        **_conditional_recovery(crosscoder, truth, alive_F, is_a_F, is_b_F),
    )


def _conditional_recovery(
    crosscoder: CrossCoder, truth: GroundTruth, alive_F: torch.Tensor, is_a_F: torch.Tensor, is_b_F: torch.Tensor
) -> dict:
    """Return the conditional-feature fields of `RecoveryReport` (see their docstrings)."""
    components = one_model_components(crosscoder, alive_F)
    fields = {"n_components": 0, "false_components": 0}
    as_exclusive, as_component, best_cosine = [], [], []
    exclusive_a_GD, exclusive_b_GD = truth.dirs_a_GD[: truth.n_a_only], truth.dirs_b_GD[truth.n_shared :]
    for side, dirs_CD, exclusive_GD, is_side_F in (
        ("a", truth.cond_dirs_a_CD, exclusive_a_GD, is_a_F),
        ("b", truth.cond_dirs_b_CD, exclusive_b_GD, is_b_F),
    ):
        W_dec = crosscoder.W_dec_a if side == "a" else crosscoder.W_dec_b
        rows = crosscoder.slice_a if side == "a" else crosscoder.slice_b
        exclusive_C = (_matches(W_dec, rows, dirs_CD, crosscoder.dict_size) & alive_F[:, None])[is_side_F].any(0)
        ranked_K, fraction_K = rank_components(components, side)
        unit_residual_KD = _unit(component_residuals(components, side, ranked_K))
        cosine_KC = unit_residual_KD @ dirs_CD.T
        exclusive_K = (unit_residual_KD @ exclusive_GD.T >= COMPONENT_COSINE).any(1)
        n_top = max(COMPONENT_TOP_MIN, COMPONENT_TOP_PER_FEATURE * dirs_CD.shape[0])
        surfaced_K = (torch.arange(len(ranked_K)) < n_top) & (fraction_K >= COMPONENT_MIN_FRACTION)
        match_KC = (cosine_KC >= COMPONENT_COSINE) & surfaced_K[:, None]
        fields["n_components"] += int(surfaced_K.sum())
        fields["false_components"] += int((surfaced_K & ~match_KC.any(1) & ~exclusive_K).sum())
        as_exclusive.append(exclusive_C)
        as_component.append(match_KC.any(0))
        if dirs_CD.shape[0]:
            best_cosine.append(cosine_KC.max(0).values if len(ranked_K) else torch.zeros(dirs_CD.shape[0]))
            fields[f"conditional_{side}_as_exclusive"] = _mean(exclusive_C)
            fields[f"conditional_{side}_as_component"] = _mean(match_KC.any(0))
    if truth.cond_dirs_a_CD.shape[0] + truth.cond_dirs_b_CD.shape[0]:
        fields["conditional_as_exclusive"] = _mean(torch.cat(as_exclusive))
        fields["conditional_as_component"] = _mean(torch.cat(as_component))
        fields["conditional_component_cosine"] = float(torch.cat(best_cosine).mean())
    return fields


def _unit(rows_ND: torch.Tensor) -> torch.Tensor:
    """Return `rows_ND` scaled to unit norm (zero rows stay zero)."""
    return rows_ND / rows_ND.norm(dim=1, keepdim=True).clamp_min(1e-12)


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
